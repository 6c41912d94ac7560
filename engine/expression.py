"""Expression controls applied after any motion generator: emotion presets, gaze mode, blink rate.

The generators (baseline, backbone) make speech-driven motion; this stage adds what a user chooses
on top of it, so that every generator honours the same controls the same way:

* ``emotion``: a preset of blendshape biases (below), added to the generated rows, scaled by
  ``expression_intensity`` (the generators' own control, forwarded by the pipeline); a change
  ramps in over ``ramp_ms`` so that no frame jumps;
* ``gaze``: ``"wander"`` keeps the generator's gaze, ``"camera"`` holds the eyes on the camera
  (the photo's own gaze, 0 deg); the switch ramps as well;
* ``blink_rate_per_min``: ``None`` keeps the generator's blinks; a number replaces them with blinks
  at that mean rate (a renewal process with a 1.2 s refractory gap, seeded per stream: the same seed
  gives the same blinks, whatever the push sizes).

Rows in and out: (n, engine.motion.NUM_CHANNELS) float32, in frame order; channel units as in
engine.motion (blendshapes 0..1, angles in degrees).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import motion as M
from .exceptions import ConfigError

__all__ = ["EMOTIONS", "GAZE_MODES", "ExpressionSettings", "ExpressionStage", "EXPRESSION_CONTROLS"]

#: Preset -> {channel: bias} at expression_intensity 1. Chosen from FACS descriptions of the basic
#: emotions, in the channels engine.motion has (happy: AU6+12 smile; sad: AU1+4 inner brow raise,
#: lip corners down-ish via stretch and a lowered lip; angry: AU4 brow lowerer, AU10 upper lip raise;
#: surprised: AU1+2 brows up, AU26 jaw drop).
EMOTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouthSmileLeft": 0.55, "mouthSmileRight": 0.55, "browOuterUpLeft": 0.1,
              "browOuterUpRight": 0.1, "mouthUpperUpLeft": 0.08, "mouthUpperUpRight": 0.08},
    "sad": {"browInnerUp": 0.8, "browDownLeft": 0.15, "browDownRight": 0.15, "mouthStretchLeft": 0.2,
            "mouthStretchRight": 0.2, "mouthRollLower": 0.15, "headPitch_deg": 3.0},
    "angry": {"browDownLeft": 0.7, "browDownRight": 0.7, "mouthUpperUpLeft": 0.2, "mouthUpperUpRight": 0.2,
              "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15, "headPitch_deg": 1.5},
    "surprised": {"browInnerUp": 0.7, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7, "jawOpen": 0.12,
                  "mouthFunnel": 0.1, "headPitch_deg": -2.0},
}
GAZE_MODES = ("wander", "camera")
#: The controls of this stage (the pipeline routes them here): name -> accepted values.
EXPRESSION_CONTROLS = {"emotion": EMOTIONS, "gaze": GAZE_MODES, "blink_rate_per_min": (0.0, 60.0)}

_BLINK = M.idx("eyeBlinkLeft", "eyeBlinkRight")
_GAZE = M.idx(*M.GAZE)
_BIAS = {name: np.array([preset.get(c, 0.0) for c in M.NAMES], np.float32) for name, preset in EMOTIONS.items()}


def _check(emotion: str, gaze: str, blink_rate_per_min: float | None) -> None:
    if emotion not in EMOTIONS:
        raise ConfigError(f"unknown emotion {emotion!r}; choose one of {', '.join(EMOTIONS)}")
    if gaze not in GAZE_MODES:
        raise ConfigError(f"unknown gaze mode {gaze!r}; choose one of {', '.join(GAZE_MODES)}")
    if blink_rate_per_min is not None and not 0.0 <= float(blink_rate_per_min) <= 60.0:
        raise ConfigError(f"blink_rate_per_min must be within 0..60 (people blink 10-20 times a "
                          f"minute), got {blink_rate_per_min!r}")


@dataclass(frozen=True)
class ExpressionSettings:
    """Initial controls and timing. ``blink_rate_per_min`` None: the generator's own blinks."""

    emotion: str = "neutral"
    gaze: str = "wander"
    blink_rate_per_min: float | None = None
    fps: float = 25.0
    ramp_ms: float = 250.0            # time constant of emotion and gaze changes
    blink_close_ms: float = 70.0
    blink_open_ms: float = 150.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.emotion, self.gaze, self.blink_rate_per_min)
        if not 1.0 <= self.fps <= 120.0 or not 0.0 <= self.ramp_ms <= 5000.0:
            raise ConfigError("fps must be within 1..120 and ramp_ms within 0..5000")
        if not 20.0 <= self.blink_close_ms <= 500.0 or not 20.0 <= self.blink_open_ms <= 800.0:
            raise ConfigError("blink_close_ms must be within 20..500 and blink_open_ms within 20..800")


class ExpressionStage:
    """``stage(rows) -> rows`` (see the module docstring); ``set_controls(emotion=, gaze=,
    blink_rate_per_min=, expression_intensity=)`` applies from the next row on."""

    def __init__(self, settings: ExpressionSettings = ExpressionSettings()) -> None:
        self.s = settings
        self._alpha = 1.0 - float(np.exp(-1000.0 / (settings.fps * settings.ramp_ms))) if settings.ramp_ms else 1.0
        self.controls = {"emotion": settings.emotion, "gaze": settings.gaze,
                         "blink_rate_per_min": settings.blink_rate_per_min, "expression_intensity": 1.0}
        self.reset(settings.seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng([int(self.s.seed if seed is None else seed), 0xB1C])
        self._bias = _BIAS[self.controls["emotion"]] * self.controls["expression_intensity"]
        self._camera = 1.0 if self.controls["gaze"] == "camera" else 0.0
        self._t = 0                     # next frame index
        self._next_blink = self._draw_gap()
        self._blink_start = -10_000

    def check(self, **controls) -> dict:
        """The controls after this change (ConfigError if any is wrong); applies nothing."""
        unknown = set(controls) - set(self.controls)
        if unknown:
            raise ConfigError(f"unknown expression control(s) {sorted(unknown)}; known: {', '.join(self.controls)}")
        new = {**self.controls, **controls}
        if new["blink_rate_per_min"] is not None:
            new["blink_rate_per_min"] = float(new["blink_rate_per_min"])
        new["expression_intensity"] = float(new["expression_intensity"])
        _check(new["emotion"], new["gaze"], new["blink_rate_per_min"])
        return new

    def set_controls(self, **controls) -> None:
        new = self.check(**controls)
        rate_changed = new["blink_rate_per_min"] != self.controls["blink_rate_per_min"]
        self.controls = new
        if rate_changed:
            self._next_blink = self._t + self._draw_gap()

    def _draw_gap(self) -> int:
        """Frames to the next blink: 1.2 s refractory + exponential, mean 60 / rate s."""
        rate = self.controls["blink_rate_per_min"]
        if not rate:
            return 1 << 30
        mean_s = max(60.0 / rate - 1.2, 0.05)
        return int(round((1.2 + self._rng.exponential(mean_s)) * self.s.fps))

    def _blink(self) -> float:
        """Lid closure 0..1 of the current frame (advances the blink process)."""
        if self._t >= self._next_blink:
            self._blink_start = self._t
            self._next_blink = self._t + self._draw_gap()
        ms = (self._t - self._blink_start) * 1000.0 / self.s.fps
        close, open_ = self.s.blink_close_ms, self.s.blink_open_ms
        if ms < close:
            return float(np.sin(0.5 * np.pi * ms / close))
        if ms < close + open_:
            return float(0.5 + 0.5 * np.cos(np.pi * (ms - close) / open_))
        return 0.0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """rows: (n, C) float32 motion -> (n, C) float32, clipped to the channels' ranges."""
        out = np.array(rows, np.float32, copy=True).reshape(-1, M.NUM_CHANNELS)
        c = self.controls
        target = _BIAS[c["emotion"]] * float(c["expression_intensity"])
        cam = 1.0 if c["gaze"] == "camera" else 0.0
        for i in range(len(out)):
            self._bias += (target - self._bias) * self._alpha
            self._camera += (cam - self._camera) * self._alpha
            out[i] += self._bias
            out[i, _GAZE] *= 1.0 - self._camera
            if c["blink_rate_per_min"] is not None:
                out[i, _BLINK] = self._blink()
            self._t += 1
        return M.clip(out)
