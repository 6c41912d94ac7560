"""Motion generators: audio feature rows in, motion rows (engine.motion) out, streaming.

:class:`MotionGenerator` is the interface every generator implements (the baseline here; the
diffusion backbone later). It is push/pull like the rest of the pipeline: ``push`` feature rows
from :class:`engine.audio.FeatureStream` in any batches, ``pull`` the motion rows that are ready,
``finish`` at the end of the stream. A generator needs ``lookahead_frames`` rows beyond a frame
before it emits that frame's motion, and emits exactly one motion row per feature row in total.

:class:`BaselineGenerator` is a hand-made, deterministic signal-processing model:

* mouth: ``jawOpen`` follows the loudness of speech relative to the speaker's running level
  (fast attack, slower release, a little anticipation from the lookahead), widened on open
  vowels (F1 proxy) and narrowed on fricatives; ``mouthClose`` presses the lips on energy dips
  between speech (p/b closures) and on nasal murmurs (m); rounding (funnel/pucker) from a low
  spectral centroid, spreading (stretch/smile) from a high F2 proxy, ``mouthRollLower`` on weak
  fricatives (f/v); upper/lower lip follow the jaw. In silence every mouth channel returns to
  exactly 0 (the reference photo's mouth).
* head: slow wander (sums of sinusoids with seeded frequencies and phases), bigger while
  speaking, nods on pitch accents, and breathing in silence. After ``reset`` head and gaze
  start exactly at the photo's pose and fade in over ``start_ease_ms`` (2 s).
* brows rise on pitch accents; blinks are stochastic (~15/min, 100-150 ms, more often at the
  start of pauses); the gaze makes small saccades and mostly returns to the camera.

Every random draw happens at a fixed point of the per-frame loop, so the output depends only on
the feature rows, the seed and the controls, never on how rows were batched in push/pull.
"""
from __future__ import annotations

import importlib

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from . import motion as M
from .audio import SCALAR_FEATURES
from .exceptions import ConfigError

__all__ = ["MotionGenerator", "BaselineSettings", "BaselineGenerator", "CONTROLS",
           "register_generator", "make_generator", "available_generators"]

#: Controls understood by set_controls: name -> (lo, hi, default).
CONTROLS: dict[str, tuple[float, float, float]] = {
    "expression_intensity": (0.0, 2.0, 1.0),   # brows, smile/stretch, rounding, nods (jaw partly)
    "head_motion_speed": (0.0, 2.0, 1.0),      # time scale of the head wander
    "head_motion_amplitude": (0.0, 2.0, 1.0),  # scale of every head movement
}


class MotionGenerator(ABC):
    """Streaming audio-features -> motion. Rows out, in order, total out == total in.

    Attributes: ``fps`` (video frame rate), ``lookahead_frames`` (feature rows needed beyond a
    frame before its motion is emitted; the added latency is lookahead_frames / fps).
    """

    fps: float
    lookahead_frames: int

    @abstractmethod
    def reset(self, seed: int | None = None) -> None:
        """Start a new stream with this seed (None: the generator's configured seed); controls
        keep their values."""

    @abstractmethod
    def push(self, features: np.ndarray) -> None:
        """Append (n, F) float32 feature rows (FeatureStream output); n may be 0."""

    @abstractmethod
    def pull(self) -> np.ndarray:
        """Motion rows that are ready, (m, motion.NUM_CHANNELS) float32, in frame order."""

    @abstractmethod
    def finish(self) -> np.ndarray:
        """End of stream: the remaining motion rows (the future past the end taken as silence)."""

    @abstractmethod
    def set_controls(self, **controls: float) -> None:
        """Set controls (see CONTROLS); they apply to every frame emitted after the call."""


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineSettings:
    """Baseline generator settings; times in ms, angles in degrees, levels in dB(FS)."""
    fps: float = 25.0
    seed: int = 0
    lookahead_frames: int = 2
    # mouth
    jaw_attack_ms: float = 20.0
    jaw_release_ms: float = 60.0
    jaw_max: float = 0.75               # jawOpen at the speaker's loudest open vowel
    speech_range_db: float = 28.0       # level range below the speaker's peak mapped to jaw 1..0
    silence_db: float = -60.0           # absolute level below which there is no speech
    close_attack_ms: float = 10.0
    close_release_ms: float = 50.0
    closure_dip_db: float = 9.0         # energy dip (vs. speech around it) that starts a lip closure
    shape_smoothing_ms: float = 60.0    # rounding / spreading / lip shapes
    # head
    head_yaw_amplitude_deg: float = 3.0
    head_pitch_amplitude_deg: float = 2.0
    head_roll_amplitude_deg: float = 1.5
    head_translation_per_deg: float = 0.003   # face widths of shift per degree of yaw / pitch
    head_idle_fraction: float = 0.3     # wander amplitude in silence relative to speech
    start_ease_ms: float = 2000.0       # head/gaze motion fades in from the photo's pose after reset
    nod_amplitude_deg: float = 2.0
    accent_semitones: float = 1.5       # f0 rise above the running baseline that makes an accent
    breathing_amplitude_deg: float = 0.3
    breathing_rate_hz: float = 0.25
    # brows, eyes
    brow_raise: float = 0.35            # browInnerUp / browOuterUp on a full accent
    blink_rate_per_min: float = 15.0
    blink_min_ms: float = 100.0
    blink_max_ms: float = 150.0
    blink_pause_boost: float = 4.0      # blink hazard multiplier during the first 600 ms of a pause
    blink_refractory_ms: float = 400.0
    saccade_rate_hz: float = 0.4
    gaze_amplitude_deg: float = 4.0

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"BaselineSettings.{name}={getattr(self, name)!r}: {why}")
        need(1.0 <= self.fps <= 240.0, "fps", "must be in 1..240")
        need(isinstance(self.seed, (int, np.integer)), "seed", "must be an integer")
        need(isinstance(self.lookahead_frames, (int, np.integer)) and 0 <= self.lookahead_frames <= 25,
             "lookahead_frames", "must be an integer in 0..25")
        for f in fields(self):
            if f.name.endswith("_ms"):
                need(0.0 < getattr(self, f.name) <= 10000.0, f.name, "must be in (0, 10000] ms")
            elif f.name.endswith("_deg"):
                need(0.0 <= getattr(self, f.name) <= 20.0, f.name, "must be in 0..20 degrees")
        need(0.0 < self.jaw_max <= 1.0, "jaw_max", "must be in (0, 1]")
        need(5.0 <= self.speech_range_db <= 60.0, "speech_range_db", "must be in 5..60 dB")
        need(-100.0 <= self.silence_db <= -10.0, "silence_db", "must be in -100..-10 dBFS")
        need(1.0 <= self.closure_dip_db <= 40.0, "closure_dip_db", "must be in 1..40 dB")
        need(0.0 <= self.head_translation_per_deg <= 0.01, "head_translation_per_deg", "must be in 0..0.01")
        need(0.0 <= self.head_idle_fraction <= 1.0, "head_idle_fraction", "must be in 0..1")
        need(0.0 < self.accent_semitones <= 12.0, "accent_semitones", "must be in (0, 12]")
        need(0.0 < self.breathing_rate_hz <= 2.0, "breathing_rate_hz", "must be in (0, 2]")
        need(0.0 <= self.brow_raise <= 1.0, "brow_raise", "must be in 0..1")
        need(0.0 <= self.blink_rate_per_min <= 120.0, "blink_rate_per_min", "must be in 0..120")
        need(self.blink_min_ms <= self.blink_max_ms <= 1000.0, "blink_max_ms", "must be in blink_min_ms..1000")
        need(1.0 <= self.blink_pause_boost <= 20.0, "blink_pause_boost", "must be in 1..20")
        need(0.0 <= self.saccade_rate_hz <= 5.0, "saccade_rate_hz", "must be in 0..5")


# --------------------------------------------------------------------------------------------
# baseline generator
# --------------------------------------------------------------------------------------------

_E, _EMIN, _EMAX, _F0, _VOI, _CEN, _FLAT, _BLOW, _BMID, _BHIGH, _F1, _F2 = (
    SCALAR_FEATURES.index(n) for n in ("energy_db", "energy_min_db", "energy_max_db", "f0_hz", "voicing",
                                       "centroid_hz", "flatness", "band_low", "band_mid", "band_high",
                                       "f1_hz", "f2_hz"))
_NS = len(SCALAR_FEATURES)
_SILENT_ROW = [-100.0, -100.0, -100.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
_PAST = 3                      # frames of history the closure detector looks back at
_C = M.INDEX                   # channel name -> column


def _alpha(tau_ms: float, dt_ms: float) -> float:
    """One-pole smoothing coefficient for time constant tau at step dt."""
    return 1.0 - math.exp(-dt_ms / tau_ms)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


class _Levels:
    """Running noise floor and speech peak level (dBFS) -> speech gate and relative loudness.

    The floor is the minimum of the frames' quietest sub-window over the last 2.5 s (speech
    always has gaps within that time, stationary noise has none); the peak follows the loudest
    speech at once and relaxes 3 dB/s while speaking, so any speaking level maps to the same jaw.
    """

    def __init__(self, s: BaselineSettings, dt_ms: float) -> None:
        self.s = s
        self.recent: deque[float] = deque(maxlen=max(1, int(round(2500.0 / dt_ms))))
        self.peak_down_db = 3.0 * dt_ms / 1000.0
        self.floor = -100.0
        self.peak: float | None = None

    @property
    def gate_db(self) -> float:
        return max(self.s.silence_db, self.floor + 10.0)

    def update(self, e: float, e_min: float) -> None:
        self.recent.append(e_min)
        self.floor = min(self.recent)
        if e > self.gate_db + 6.0:
            if self.peak is None or e > self.peak:
                self.peak = e
            else:
                self.peak = max(e, self.peak - self.peak_down_db)
        if self.peak is not None:
            self.peak = max(self.peak, self.gate_db + 6.0)

    @property
    def peak_db(self) -> float:
        return self.gate_db + 20.0 if self.peak is None else self.peak

    def speech(self, e: float) -> float:
        """Soft speech presence 0..1 (0 below the gate, 1 from 6 dB above it)."""
        return _clip01((e - self.gate_db) / 6.0)

    def loudness(self, e: float) -> float:
        """0..1: 1 at the speaker's peak level, 0 at speech_range_db below it."""
        return _clip01(1.0 + (e - self.peak_db) / self.s.speech_range_db)


class _Mouth:
    """Mouth channels from the current frame, its lookahead and a short history."""

    def __init__(self, s: BaselineSettings, dt_ms: float) -> None:
        self.s = s
        self.a_att, self.a_rel = _alpha(s.jaw_attack_ms, dt_ms), _alpha(s.jaw_release_ms, dt_ms)
        self.c_att, self.c_rel = _alpha(s.close_attack_ms, dt_ms), _alpha(s.close_release_ms, dt_ms)
        self.a_shape = _alpha(s.shape_smoothing_ms, dt_ms)
        self.jaw = self.close = 0.0
        self.shape = [0.0] * 4      # smoothed funnel, pucker, spread, roll-lower (0..1)

    def jaw_target(self, f: list[float], lv: _Levels) -> float:
        g = lv.speech(f[_E])
        if g <= 0.0:
            return 0.0
        f1 = f[_F1]
        f1_gain = 0.55 + 0.45 * _clip01((f1 - 250.0) / 450.0) if f1 > 0.0 else 0.55
        fric = f[_BHIGH] * (1.0 - f[_VOI])
        return self.s.jaw_max * g * lv.loudness(f[_E]) ** 1.2 * f1_gain * (1.0 - 0.7 * fric)

    def closure_target(self, past: list[list[float]], now: list[float], future: list[list[float]],
                       lv: _Levels) -> float:
        """Lip closure 0..1 for p/b/m.

        An energy dip with speech on both sides is a stop closure; it counts as bilabial when the
        dip (or, if the dip is silent, the release) has a low F2 proxy and the release burst is
        not a high-frequency one (t, s). A low, voiced murmur with a low F2 proxy is an m.
        """
        gate = lv.gate_db + 8.0
        before = max(r[_EMAX] for r in past)
        after = max((r[_EMAX] for r in future), default=-100.0)
        if before <= gate or after <= gate:
            return 0.0
        release = next((r for r in future if r[_EMAX] > now[_E] + 6.0), future[-1] if future else now)
        depth = min(before, after) - (0.75 * now[_E] + 0.25 * now[_EMIN])
        dip = _clip01((depth - 0.5 * self.s.closure_dip_db) / self.s.closure_dip_db)
        labial = 1.0
        if now[_E] > lv.gate_db and now[_VOI] > 0.5 and now[_F2] > 0.0:      # voiced closure: murmur F2
            labial = _clip01((1900.0 - now[_F2]) / 500.0)
        elif release[_CEN] > 0.0:                                            # silent closure: release
            labial = _clip01((2200.0 - release[_CEN]) / 800.0)
        bursts = [r[_CEN] for r in [past[-1], now] + future[:2] if r[_VOI] < 0.5 and r[_E] > lv.gate_db]
        if bursts:                                                           # t/k bursts are sharp
            labial *= _clip01((2200.0 - max(bursts)) / 800.0)
        noisy = max(now[_BHIGH] * (1.0 - now[_VOI]), release[_BHIGH] * (1.0 - 0.5 * release[_VOI]))
        stop = dip * labial * (1.0 - _clip01((noisy - 0.2) / 0.2))
        rel = now[_E] - lv.peak_db
        nasal = 0.0
        if now[_VOI] > 0.6 and -26.0 < rel < -5.0:
            nasal = (0.8 * _clip01((now[_BLOW] - 0.7) / 0.1) * _clip01((480.0 - now[_CEN]) / 120.0)
                     * _clip01((1500.0 - now[_F2]) / 300.0))
        return max(stop, nasal)

    def step(self, past: list[list[float]], now: list[float], future: list[list[float]], lv: _Levels,
             intensity: float) -> dict[str, float]:
        """Advance one frame; returns {mouth channel name: value}."""
        raw = self.jaw_target(now, lv)
        ahead = [self.jaw_target(r, lv) for r in future[:2]]
        target = max([raw] + [w * a for w, a in zip((0.6, 0.3), ahead)])
        close_t = self.closure_target(past, now, future, lv)
        target *= (1.0 - 0.8 * close_t) * min(1.0, 0.7 + 0.3 * intensity)
        self.jaw += (target - self.jaw) * (self.a_att if target > self.jaw else self.a_rel)
        self.close += (close_t - self.close) * (self.c_att if close_t > self.close else self.c_rel)
        if target == 0.0 and self.jaw < 0.01:
            self.jaw = 0.0
        if close_t == 0.0 and self.close < 0.01:
            self.close = 0.0
        self._shapes(now, lv)
        open_gate = min(1.0, self.jaw / 0.12)
        funnel, pucker, spread = (v * open_gate * (1.0 - self.close) for v in self.shape[:3])
        roll = self.shape[3]
        return {"jawOpen": self.jaw, "mouthClose": self.close,
                "mouthFunnel": 0.45 * funnel * intensity, "mouthPucker": 0.55 * pucker * intensity,
                "mouthStretchLeft": 0.22 * spread * intensity, "mouthStretchRight": 0.22 * spread * intensity,
                "mouthSmileLeft": 0.12 * spread * intensity, "mouthSmileRight": 0.12 * spread * intensity,
                "mouthUpperUpLeft": 0.3 * self.jaw, "mouthUpperUpRight": 0.3 * self.jaw,
                "mouthLowerDownLeft": 0.45 * self.jaw, "mouthLowerDownRight": 0.45 * self.jaw,
                "mouthRollLower": 0.35 * roll * (1.0 - self.close)}

    def _shapes(self, f: list[float], lv: _Levels) -> None:
        voiced = _clip01((f[_VOI] - 0.5) / 0.2) * lv.speech(f[_E]) * _clip01((lv.loudness(f[_E]) - 0.4) / 0.3)
        rounding = _clip01((950.0 - f[_CEN]) / 350.0) * _clip01((700.0 - f[_F1]) / 300.0) * voiced
        close_round = _clip01((480.0 - f[_F1]) / 180.0)
        spread = _clip01((f[_F2] - 1850.0) / 550.0) * voiced
        rel = f[_E] - lv.peak_db
        weak_fric = (_clip01((0.45 - f[_VOI]) / 0.2) * _clip01((f[_FLAT] - 0.15) / 0.2)
                     * _clip01((rel + 40.0) / 8.0) * _clip01((-14.0 - rel) / 6.0) * lv.speech(f[_E]))
        targets = (rounding * (1.0 - 0.5 * close_round), rounding * close_round, spread, weak_fric)
        a = self.a_shape
        new = [v + (t - v) * a for v, t in zip(self.shape, targets)]
        self.shape = [0.0 if t == 0.0 and v < 0.005 else v for v, t in zip(new, targets)]


class _Envelope:
    """Difference of two one-pole decays: a smooth bump (0 -> peak 1 -> 0) per unit kick."""

    def __init__(self, rise_ms: float, fall_ms: float, dt_ms: float) -> None:
        self.d_fast, self.d_slow = math.exp(-dt_ms / rise_ms), math.exp(-dt_ms / fall_ms)
        t_peak = math.log(fall_ms / rise_ms) * rise_ms * fall_ms / (fall_ms - rise_ms)
        self.norm = 1.0 / (math.exp(-t_peak / fall_ms) - math.exp(-t_peak / rise_ms))
        self.fast = self.slow = 0.0

    def kick(self, strength: float) -> None:
        self.fast += strength
        self.slow += strength

    def step(self) -> float:
        self.fast *= self.d_fast
        self.slow *= self.d_slow
        v = (self.slow - self.fast) * self.norm
        if v < 1e-4 and self.slow < 1e-4:
            self.fast = self.slow = v = 0.0
        return v


class _Prosody:
    """Pitch accents: f0 peaks well above the running f0 baseline on loud voiced frames."""

    def __init__(self, s: BaselineSettings, dt_ms: float) -> None:
        self.s = s
        self.a_base = _alpha(1500.0, dt_ms)
        self.refractory = int(math.ceil(300.0 / dt_ms))
        self.base: float | None = None
        self.since = 10 ** 9

    @staticmethod
    def _st(f0: float) -> float:
        return 12.0 * math.log2(f0 / 55.0) if f0 > 0.0 else -1e9

    def step(self, prev: list[float], now: list[float], nxt: list[float], lv: _Levels) -> float:
        """Accent strength 0..1 at this frame (0 almost always)."""
        self.since += 1
        st = self._st(now[_F0])
        if st < -1e8:
            return 0.0
        if self.base is None:
            self.base = st
        rise = st - self.base
        self.base += (st - self.base) * self.a_base
        loud = now[_E] - lv.peak_db > -12.0
        peak = st >= self._st(prev[_F0]) and st >= self._st(nxt[_F0])
        plausible = rise < 9.0 and now[_VOI] > 0.7     # larger jumps are octave errors
        if loud and peak and plausible and rise > self.s.accent_semitones and self.since >= self.refractory:
            self.since = 0
            return min(1.0, 0.4 + (rise - self.s.accent_semitones) / 3.0)
        return 0.0


class _Head:
    """Head pose: seeded sinusoidal wander + syllable bob + nods + breathing."""

    def __init__(self, s: BaselineSettings, dt_ms: float, rng: np.random.Generator) -> None:
        self.s, self.dt_s = s, dt_ms / 1000.0
        self.freqs = rng.uniform(0.06, 0.45, size=(3, 3))           # axis x component, Hz
        self.phase = rng.uniform(0.0, 2.0 * math.pi, size=(3, 3))
        w = rng.uniform(0.5, 1.0, size=(3, 3))
        self.weights = w / w.sum(axis=1, keepdims=True)
        self.breath_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self.a_activity = _alpha(700.0, dt_ms)
        self.a_bob = _alpha(150.0, dt_ms)
        self.activity = self.bob = 0.0
        self.nod = _Envelope(150.0, 350.0, dt_ms)

    def step(self, speech: float, jaw: float, accent: float, speed: float, amp: float) -> tuple[float, ...]:
        s = self.s
        self.activity += (speech - self.activity) * self.a_activity
        self.bob += (jaw - self.bob) * self.a_bob
        if accent > 0.0:
            self.nod.kick(accent)
        nod = self.nod.step()
        self.phase += (2.0 * math.pi * self.dt_s * speed) * self.freqs
        wander = (self.weights * np.sin(self.phase)).sum(axis=1).tolist()
        self.breath_phase += 2.0 * math.pi * s.breathing_rate_hz * self.dt_s * max(speed, 0.25)
        breath = (1.0 - self.activity) * math.sin(self.breath_phase)
        level = amp * (s.head_idle_fraction + (1.0 - s.head_idle_fraction) * self.activity)
        yaw = level * s.head_yaw_amplitude_deg * wander[0]
        pitch = (level * s.head_pitch_amplitude_deg * wander[1]
                 + amp * (s.nod_amplitude_deg * nod + 0.8 * self.bob - s.breathing_amplitude_deg * breath))
        roll = level * s.head_roll_amplitude_deg * wander[2]
        k = s.head_translation_per_deg
        return yaw, pitch, roll, k * yaw, 0.5 * k * pitch - amp * 0.002 * breath, amp * 0.002 * breath


class _Eyes:
    """Stochastic blinks (more at the start of pauses) and small gaze saccades."""

    def __init__(self, s: BaselineSettings, dt_ms: float) -> None:
        self.s, self.dt_ms = s, dt_ms
        self.p_blink = s.blink_rate_per_min / 60000.0 * dt_ms
        self.p_saccade = s.saccade_rate_hz * dt_ms / 1000.0
        self.a_gaze = _alpha(30.0, dt_ms)
        self.blink_t: float | None = None      # ms since the blink's full closure minus closing time
        self.blink_close = self.blink_open = 0.0
        self.since_blink = 1e9
        self.gaze = [0.0, 0.0]
        self.gaze_target = [0.0, 0.0]

    def _blink_value(self) -> float:
        t, c, o = self.blink_t, self.blink_close, self.blink_open
        if t < 0.0:
            return 0.0
        if t < c:
            return math.sin(0.5 * math.pi * t / c)
        if t < c + o:
            return 0.5 * (1.0 + math.cos(math.pi * (t - c) / o))
        return 0.0

    def step(self, u: list[float], pause: bool) -> tuple[float, float, float]:
        s = self.s
        self.since_blink += self.dt_ms
        if self.blink_t is None:
            hazard = self.p_blink * (s.blink_pause_boost if pause else 1.0)
            if self.since_blink >= s.blink_refractory_ms and u[0] < hazard:
                dur = s.blink_min_ms + u[1] * (s.blink_max_ms - s.blink_min_ms)
                self.blink_close, self.blink_open = 0.4 * dur, 0.6 * dur
                self.blink_t = self.blink_close - self.dt_ms   # full closure on the next frame
                self.since_blink = 0.0
        blink = 0.0
        if self.blink_t is not None:
            blink = self._blink_value()
            self.blink_t += self.dt_ms
            if self.blink_t > self.blink_close + self.blink_open:
                self.blink_t = None
        if u[2] < self.p_saccade:
            if u[3] < 0.5:
                self.gaze_target = [0.0, 0.0]
            else:
                a = s.gaze_amplitude_deg
                self.gaze_target = [a * (2.0 * u[4] - 1.0), 0.6 * a * (2.0 * u[5] - 1.0)]
        self.gaze = [g + (t - g) * self.a_gaze for g, t in zip(self.gaze, self.gaze_target)]
        return blink, self.gaze[0], self.gaze[1]


class BaselineGenerator(MotionGenerator):
    """Deterministic signal-processing motion generator (see the module docstring).

    ``BaselineGenerator(BaselineSettings(...))``; feature rows must start with
    engine.audio.SCALAR_FEATURES (any number of mel columns may follow). Cost: tens of µs/frame.
    """

    def __init__(self, settings: BaselineSettings = BaselineSettings()) -> None:
        if not isinstance(settings, BaselineSettings):
            raise ConfigError(f"BaselineGenerator needs BaselineSettings, got {type(settings).__name__}")
        self.settings = settings
        self.fps = float(settings.fps)
        self.lookahead_frames = int(settings.lookahead_frames)
        self._dt_ms = 1000.0 / self.fps
        self._controls = {k: v[2] for k, v in CONTROLS.items()}
        self._smoothed = dict(self._controls)
        self._a_ctrl = _alpha(300.0, self._dt_ms)
        self.reset(settings.seed)

    @property
    def controls(self) -> dict[str, float]:
        """Current control targets."""
        return dict(self._controls)

    @property
    def frames_in(self) -> int:
        return self._n_in

    @property
    def frames_out(self) -> int:
        return self._t

    def reset(self, seed: int | None = None) -> None:
        s, dt = self.settings, self._dt_ms
        self.seed = int(s.seed if seed is None else seed)
        self._rng = np.random.default_rng(self.seed)
        self._levels = _Levels(s, dt)
        self._mouth = _Mouth(s, dt)
        self._prosody = _Prosody(s, dt)
        self._head = _Head(s, dt, self._rng)
        self._eyes = _Eyes(s, dt)
        self._brow = _Envelope(120.0, 500.0, dt)
        self._rows: list[list[float]] = [list(_SILENT_ROW)] * _PAST   # rows from frame _t - _PAST on
        self._t = 0            # next frame to emit
        self._n_in = 0
        self._silent_ms = 1e9  # time since speech was last present
        self._finished = False
        self._smoothed = dict(self._controls)

    def set_controls(self, **controls: float) -> None:
        for name, value in controls.items():
            if name not in CONTROLS:
                raise ConfigError(f"unknown control {name!r}; known: {', '.join(CONTROLS)}")
            lo, hi, _ = CONTROLS[name]
            v = float(value)
            if not lo <= v <= hi:
                raise ConfigError(f"control {name}={value!r} outside {lo}..{hi}")
        for name, value in controls.items():
            self._controls[name] = float(value)

    def push(self, features: np.ndarray) -> None:
        if self._finished:
            raise RuntimeError("push after finish(); call reset() to start a new stream")
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] < _NS:
            raise ValueError(f"features must be (n, F>={_NS}) rows from FeatureStream, got shape {f.shape}")
        if f.shape[0]:
            f = np.nan_to_num(f[:, :_NS], nan=0.0, posinf=0.0, neginf=-100.0)
            self._rows.extend(f.astype(np.float64).tolist())
            self._n_in += f.shape[0]

    def pull(self) -> np.ndarray:
        return self._run(self._n_in - self.lookahead_frames - self._t)

    def finish(self) -> np.ndarray:
        if self._finished:
            return np.zeros((0, M.NUM_CHANNELS), np.float32)
        self._rows.extend([list(_SILENT_ROW)] * self.lookahead_frames)
        out = self._run(self._n_in - self._t)
        self._finished = True
        return out

    def _run(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, M.NUM_CHANNELS), np.float32)
        out = np.zeros((n, M.NUM_CHANNELS), np.float32)
        L = self.lookahead_frames
        for j in range(n):
            k = _PAST + j                       # index of frame _t in self._rows
            rows = self._rows
            out[j] = self._frame(rows[k - _PAST:k], rows[k], rows[k + 1:k + 1 + L])
            self._t += 1
        del self._rows[:n]
        return M.clip(out)

    def _frame(self, past: list[list[float]], now: list[float], future: list[list[float]]) -> list[float]:
        """One motion row (C floats) for the current frame; advances all state by one frame."""
        c, a = self._smoothed, self._a_ctrl
        for name, target in self._controls.items():
            c[name] += (target - c[name]) * a if name != "head_motion_speed" else (target - c[name])
        intensity, amp, speed = c["expression_intensity"], c["head_motion_amplitude"], c["head_motion_speed"]
        lv = self._levels
        lv.update(now[_E], now[_EMIN])
        speech = lv.speech(now[_E])
        self._silent_ms = 0.0 if speech > 0.5 else self._silent_ms + self._dt_ms
        mouth = self._mouth.step(past, now, future, lv, intensity)
        accent = self._prosody.step(past[-1], now, future[0] if future else now, lv)
        if accent > 0.0:
            self._brow.kick(accent)
        brow = self._brow.step() * self.settings.brow_raise * intensity
        x = min(1.0, self._t * self._dt_ms / self.settings.start_ease_ms)
        ease = x * x * (3.0 - 2.0 * x)                  # smoothstep: a new stream starts at the photo
        yaw, pitch, roll, tx, ty, scale = self._head.step(speech, mouth["jawOpen"], accent, speed, amp * ease)
        u = self._rng.random(6).tolist()           # always 6 draws per frame: batching-independent
        quiet_ahead = all(lv.speech(r[_E]) <= 0.5 for r in future)
        pause = 0.0 < self._silent_ms <= 600.0 and quiet_ahead       # a real pause, not a stop closure
        blink, gaze_yaw, gaze_pitch = self._eyes.step(u, pause)
        row = [0.0] * M.NUM_CHANNELS
        for name, v in mouth.items():
            row[_C[name]] = v
        row[_C["browInnerUp"]] = brow
        row[_C["browOuterUpLeft"]] = row[_C["browOuterUpRight"]] = 0.7 * brow
        row[_C["eyeBlinkLeft"]] = row[_C["eyeBlinkRight"]] = blink
        row[_C["gazeYaw_deg"]], row[_C["gazePitch_deg"]] = ease * gaze_yaw, ease * gaze_pitch
        row[_C["headYaw_deg"]], row[_C["headPitch_deg"]], row[_C["headRoll_deg"]] = yaw, pitch, roll
        row[_C["headTx"]], row[_C["headTy"]], row[_C["headScale"]] = tx, ty, scale
        return row


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., MotionGenerator]] = {}


def register_generator(name: str, factory: Callable[..., MotionGenerator]) -> None:
    """Make ``make_generator(name, **kw)`` call ``factory(**kw)`` (e.g. the backbone, later)."""
    _REGISTRY[name] = factory


#: Generators shipped with the engine that register themselves when their module is imported
#: (imported on first use, so that ``import emote.engine.generator`` stays light).
_BUILTIN_MODULES: dict[str, str] = {"backbone": "emote.engine.backbone"}
#: The generator ``emote render`` / ``emote serve`` and the Python API use unless told otherwise.
DEFAULT_GENERATOR = "backbone"


def available_generators() -> tuple[str, ...]:
    return tuple(sorted(set(_REGISTRY) | set(_BUILTIN_MODULES)))


def _make_baseline(settings: BaselineSettings | None = None, **kw) -> BaselineGenerator:
    if settings is not None and kw:
        raise ConfigError("make_generator('baseline'): pass either settings= or keyword settings, not both")
    if settings is None:
        known = {f.name for f in fields(BaselineSettings)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ConfigError(f"unknown baseline setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = BaselineSettings(**kw)
    return BaselineGenerator(settings)


register_generator("baseline", _make_baseline)


def make_generator(name: str = "baseline", **kw) -> MotionGenerator:
    """A new generator by registry name; keyword arguments go to its factory.

    ``make_generator("baseline", fps=25, seed=3)`` or ``make_generator("baseline", settings=...)``.
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(available_generators())
        raise ConfigError(f"unknown motion generator {name!r}; available: {known}") from None
    return factory(**kw)
