"""Motion targets (T, engine.motion.NUM_CHANNELS) from phoneme timing and prosody.

Mouth: a dominance-function coarticulation model (Cohen & Massaro). Every (sub-)segment s of
the phoneme sequence has, per articulatory parameter p (engine.training.visemes.PARAMS), a
target T[s,p] and a dominance

    D[s,p](t) = alpha[s,p] * exp(-(dist(t, s) / spread_s)^2)     (dist = 0 inside the segment's core)

and the parameter's trajectory is the dominance-weighted mean
``x_p(t) = sum_s D[s,p](t) T[s,p] / (eps + sum_s D[s,p](t))``, with a weak rest term (eps) that
returns everything to 0 far from speech. Anticipation reaches further than carry-over (x1.3).
It is evaluated on a 2.5 ms grid and averaged over each video frame (frame i covers
[i/fps, (i+1)/fps)); each bilabial keeps its closure peak in the frame of its midpoint, so no
closure is averaged away at fast rates.

Head, brows, blinks, gaze: stochastic processes coupled to prosody (see :class:`Prosody`), all
driven by one numpy Generator, so the targets are a pure function of (phonemes, f0/energy, seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import numpy as np

from emote.engine import motion as M
from emote.engine.audio import SCALAR_FEATURES

from . import visemes as V
from .espeak import Phone

__all__ = ["Style", "draw_style", "mouth_params", "mouth_channels", "prosody_channels", "make_targets",
           "GRID_HZ"]

GRID_HZ = 400.0
_P = V.P
_C = M.INDEX
_F0, _E, _VOI = (SCALAR_FEATURES.index(n) for n in ("f0_hz", "energy_db", "voicing"))


@dataclass(frozen=True)
class Style:
    """A speaker's (or performance's) motion style: drawn once per speaker."""
    jaw_gain: float = 1.0
    round_gain: float = 1.0
    spread_gain: float = 1.0
    asym: float = 0.0                 # left/right lip asymmetry (-0.1..0.1)
    head_yaw_deg: float = 3.0         # OU std while speaking
    head_pitch_deg: float = 2.0
    head_roll_deg: float = 1.5
    head_tau_s: float = 1.2
    idle_fraction: float = 0.35
    nod_prob: float = 0.6
    nod_deg: float = 2.5
    brow_prob: float = 0.45
    brow_amp: float = 0.4
    blink_per_min: float = 16.0
    gaze_deg: float = 4.0

    def as_dict(self) -> dict:
        return asdict(self)


def draw_style(rng: np.random.Generator) -> Style:
    u = rng.uniform
    return Style(jaw_gain=u(0.8, 1.2), round_gain=u(0.75, 1.25), spread_gain=u(0.7, 1.3), asym=u(-0.08, 0.08),
                 head_yaw_deg=u(1.5, 5.0), head_pitch_deg=u(1.0, 3.0), head_roll_deg=u(0.7, 2.5),
                 head_tau_s=u(0.7, 2.0), idle_fraction=u(0.2, 0.5), nod_prob=u(0.3, 0.85), nod_deg=u(1.2, 4.0),
                 brow_prob=u(0.15, 0.7), brow_amp=u(0.2, 0.6), blink_per_min=u(8.0, 20.0), gaze_deg=u(2.0, 6.0))


# --------------------------------------------------------------------------------------------
# mouth
# --------------------------------------------------------------------------------------------

def mouth_params(phones: list[Phone], duration_s: float, grid_hz: float = GRID_HZ
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Articulatory parameter trajectories on a grid: (t (N,), x (N, len(PARAMS)), bilabial spans)."""
    n = max(1, int(math.ceil(duration_s * grid_hz)))
    t = (np.arange(n) + 0.5) / grid_hz
    k = len(V.PARAMS)
    eps = 0.02
    num = np.zeros((n, k))
    den = np.full((n, k), eps)
    bilabials: list[tuple[float, float]] = []
    for ph in phones:
        for vis, s0, s1, sym in V.segments(ph.ipa, ph.start_s, ph.end_s):
            if s1 <= s0:
                continue
            if vis.name == "bilabial":
                bilabials.append((s0, s1))
            half = 0.5 * (s1 - s0)
            mid = 0.5 * (s0 + s1)
            core = 0.5 * half                         # plateau: the middle half of the segment
            spread = vis.spread_ms / 1000.0
            lo = max(0, int((s0 - 3 * spread * 1.3) * grid_hz))
            hi = min(n, int((s1 + 3 * spread) * grid_hz) + 1)
            if hi <= lo:
                continue
            tt = t[lo:hi]
            d = tt - mid
            dist = np.maximum(np.abs(d) - core, 0.0)
            scale = np.where(d < 0, 1.3 * spread, spread)   # anticipation reaches further
            w = np.exp(-(dist / scale) ** 2)
            alpha = np.asarray(vis.dominance)
            target = np.asarray(vis.target)
            dw = w[:, None] * alpha[None, :]
            if vis.close_spread_ms is not None:      # the lips part at the burst; the jaw moves slower
                cs = vis.close_spread_ms / 1000.0
                wc = np.exp(-(dist / np.where(d < 0, 1.3 * cs, cs)) ** 2)
                dw[:, _P["close"]] = wc * alpha[_P["close"]]
            num[lo:hi] += dw * target[None, :]
            den[lo:hi] += dw
    return t, num / den, bilabials


def _frame_mean(x: np.ndarray, grid_hz: float, n_frames: int, fps: float) -> np.ndarray:
    """Mean of grid samples per video frame: (n_frames, ...)."""
    idx = np.minimum((np.arange(x.shape[0]) / grid_hz * fps).astype(np.int64), n_frames - 1)
    out = np.zeros((n_frames,) + x.shape[1:])
    cnt = np.bincount(idx, minlength=n_frames).astype(np.float64)
    np.add.at(out, idx, x)
    return out / np.maximum(cnt, 1)[(...,) + (None,) * (x.ndim - 1)]


def mouth_channels(phones: list[Phone], n_frames: int, fps: float, style: Style = Style(),
                   effort: float = 1.0) -> np.ndarray:
    """Mouth channels (n_frames, C) float32 (other channels 0). ``effort`` scales the jaw and the lip
    shapes (quiet 0.6, whisper 0.7, normal 1, loud 1.2), never the closures."""
    duration = n_frames / fps
    t, x, bil = mouth_params(phones, duration)
    fx = _frame_mean(x, GRID_HZ, n_frames, fps)
    close = fx[:, _P["close"]]
    for s0, s1 in bil:                         # keep each closure visible in its midpoint's frame
        mid = 0.5 * (s0 + s1)
        i = min(int(mid * fps), n_frames - 1)
        g = min(int(mid * GRID_HZ), x.shape[0] - 1)
        close[i] = max(close[i], x[g, _P["close"]])
    out = np.zeros((n_frames, M.NUM_CHANNELS), np.float64)
    e = float(effort)
    jaw = fx[:, _P["jaw"]] * style.jaw_gain * e
    out[:, _C["jawOpen"]] = jaw
    out[:, _C["mouthClose"]] = close
    out[:, _C["mouthFunnel"]] = fx[:, _P["funnel"]] * style.round_gain * min(e, 1.1)
    out[:, _C["mouthPucker"]] = fx[:, _P["pucker"]] * style.round_gain * min(e, 1.1)
    l, r = 1.0 + style.asym, 1.0 - style.asym
    spread = fx[:, _P["spread"]] * style.spread_gain * min(e, 1.1)
    out[:, _C["mouthSmileLeft"]], out[:, _C["mouthSmileRight"]] = 0.3 * spread * l, 0.3 * spread * r
    out[:, _C["mouthStretchLeft"]], out[:, _C["mouthStretchRight"]] = 0.5 * spread * l, 0.5 * spread * r
    up = fx[:, _P["upper"]] * e
    lo = fx[:, _P["lower"]] * style.jaw_gain * e
    out[:, _C["mouthUpperUpLeft"]], out[:, _C["mouthUpperUpRight"]] = up * l, up * r
    out[:, _C["mouthLowerDownLeft"]], out[:, _C["mouthLowerDownRight"]] = lo * l, lo * r
    out[:, _C["mouthRollLower"]] = fx[:, _P["roll"]]
    out[out < 1e-3] = 0.0
    return M.clip(out)


# --------------------------------------------------------------------------------------------
# prosody-coupled processes
# --------------------------------------------------------------------------------------------

def _speech_activity(phones: list[Phone], n_frames: int, fps: float) -> np.ndarray:
    """Fraction of each frame covered by non-pause phonemes."""
    grid = np.zeros(n_frames * 8)
    for p in phones:
        if p.ipa != "_":
            a, b = int(round(p.start_s * fps * 8)), int(round(p.end_s * fps * 8))
            grid[max(a, 0):min(b, grid.size)] = 1.0
    return grid.reshape(n_frames, 8).mean(axis=1)


def _bump(n: int, center: float, width: float) -> np.ndarray:
    """Raised-cosine bump over frames (peak 1 at ``center``, full width ``width``, in frames)."""
    i = np.arange(n, dtype=np.float64)
    x = (i - center) / (0.5 * width)
    return np.where(np.abs(x) < 1.0, 0.5 * (1.0 + np.cos(np.pi * x)), 0.0)


def accents(phones: list[Phone], f0_hz: np.ndarray, energy_db: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """Pitch accents (time s, strength 0..1): vowels whose f0 and loudness stand out locally."""
    n = len(f0_hz)
    cands = []
    for p in phones:
        if not V.is_vowel(p.ipa) or p.dur_s < 0.03:
            continue
        a, b = int(p.start_s * fps), max(int(p.start_s * fps) + 1, int(math.ceil(p.end_s * fps)))
        f = f0_hz[a:min(b, n)]
        f = f[f > 0]
        if f.size == 0:
            continue
        st = 12.0 * np.log2(np.max(f) / 100.0)
        cands.append((0.5 * (p.start_s + p.end_s), st, float(np.max(energy_db[a:min(b, n)])), p.dur_s))
    if len(cands) < 2:
        return []
    st = np.array([c[1] for c in cands])
    en = np.array([c[2] for c in cands])
    du = np.array([c[3] for c in cands])
    score = (st - np.median(st)) / 2.0 + (en - np.median(en)) / 6.0 + (du - np.median(du)) / (np.std(du) + 0.02) * 0.3
    out = []
    order = np.argsort(-score)
    chosen: list[int] = []
    for i in order:
        if score[i] < 0.6:
            break
        if all(abs(cands[i][0] - cands[j][0]) > 0.45 for j in chosen):
            chosen.append(int(i))
    for i in sorted(chosen):
        out.append((cands[i][0], float(min(1.0, 0.35 + score[i] / 3.0))))
    return out


def prosody_channels(phones: list[Phone], features: np.ndarray, fps: float, style: Style,
                     rng: np.random.Generator, jaw: np.ndarray | None = None) -> np.ndarray:
    """Head pose, brows, blinks and gaze (n_frames, C) float32; mouth channels 0.

    * head: Ornstein-Uhlenbeck wander per axis (std from the style, time constant head_tau_s),
      smoothed by a second 250 ms stage (so the velocity is continuous),
      scaled between idle_fraction (silence) and 1 (speech) by the smoothed speech activity;
      a nod (pitch down and back, 350-600 ms) on a pitch accent with probability nod_prob; a small
      bob with the jaw; head translation follows yaw/pitch.
    * brows: a raise (browInnerUp, browOuterUp) on an accent with probability brow_prob.
    * blinks: a Poisson process (blink_per_min), x3 in the first 500 ms of a pause, 300 ms refractory; 90-250 ms, 10 % partial.
    * gaze: fixations (mean 1.5 s) on the camera (60 %) or nearby points, 40 ms saccades.
    """
    n = features.shape[0]
    dt = 1.0 / fps
    out = np.zeros((n, M.NUM_CHANNELS), np.float64)
    act = _speech_activity(phones, n, fps)
    sm = np.zeros(n)
    a = 1.0 - math.exp(-dt / 0.7)
    level = 0.0
    for i in range(n):
        level += (act[i] - level) * a
        sm[i] = level
    gain = style.idle_fraction + (1.0 - style.idle_fraction) * sm
    # OU wander
    tau = style.head_tau_s
    phi = math.exp(-dt / tau)
    beta = math.exp(-dt / 0.25)            # a second, 250 ms stage: smooth velocity, no jitter
    unit = math.sqrt((1 - beta) ** 2 * (1 + phi * beta) / ((1 - beta * beta) * (1 - phi * beta)))
    noise = rng.standard_normal((n, 3)) * math.sqrt(1.0 - phi * phi)
    ou = np.zeros((n, 3))
    x = rng.standard_normal(3) * 0.3
    y = x * unit
    for i in range(n):
        x = phi * x + noise[i]
        y = beta * y + (1 - beta) * x
        ou[i] = y / unit
    yaw = ou[:, 0] * style.head_yaw_deg * gain
    pitch = ou[:, 1] * style.head_pitch_deg * gain
    roll = ou[:, 2] * style.head_roll_deg * gain
    # accents -> nods, brows
    brow = np.zeros(n)
    acc = accents(phones, features[:, _F0], features[:, _E], fps)
    for tc, strength in acc:
        u = rng.random(4)
        if u[0] < style.nod_prob:
            width = (0.35 + 0.25 * u[1]) * fps
            pitch += style.nod_deg * strength * _bump(n, tc * fps + 0.1 * fps, width)
        if u[2] < style.brow_prob:
            width = (0.4 + 0.35 * u[3]) * fps
            brow = np.maximum(brow, style.brow_amp * strength * _bump(n, tc * fps, width))
    if jaw is not None:
        b = np.zeros(n)
        ab = 1.0 - math.exp(-dt / 0.15)
        v = 0.0
        for i in range(n):
            v += (jaw[i] - v) * ab
            b[i] = v
        pitch += 0.8 * b
    out[:, _C["headYaw_deg"]], out[:, _C["headPitch_deg"]], out[:, _C["headRoll_deg"]] = yaw, pitch, roll
    out[:, _C["headTx"]] = 0.003 * yaw
    out[:, _C["headTy"]] = 0.0015 * pitch
    out[:, _C["browInnerUp"]] = brow
    out[:, _C["browOuterUpLeft"]] = out[:, _C["browOuterUpRight"]] = 0.7 * brow
    # blinks
    pause_boost = np.ones(n)
    for p in phones:
        if p.ipa == "_" and p.dur_s >= 0.15:
            a0 = int(p.start_s * fps)
            pause_boost[a0:a0 + int(0.5 * fps)] = 3.0
    blink = np.zeros(n)
    p_frame = style.blink_per_min / 60.0 * dt
    u = rng.random((n, 3))
    i, next_ok = 0, 0
    sub = 8
    while i < n:
        if i >= next_ok and u[i, 0] < p_frame * pause_boost[i]:
            dur = 0.09 + 0.16 * u[i, 1]
            amp = 1.0 if u[i, 2] > 0.1 else 0.5 + 3.0 * u[i, 2]
            close, opn = 0.35 * dur, 0.65 * dur
            t0 = (i + u[i, 1]) * dt
            for j in range(i, min(n, i + int(dur * fps) + 2)):
                ts = (j + (np.arange(sub) + 0.5) / sub) * dt - t0
                v = np.where(ts < 0, 0.0, np.where(ts < close, np.sin(0.5 * np.pi * ts / max(close, 1e-3)),
                             np.where(ts < close + opn, 0.5 * (1 + np.cos(np.pi * (ts - close) / opn)), 0.0)))
                blink[j] = max(blink[j], amp * float(v.mean()))
            next_ok = i + int((dur + 0.3) * fps)
        i += 1
    out[:, _C["eyeBlinkLeft"]] = out[:, _C["eyeBlinkRight"]] = blink
    # gaze
    gaze = np.zeros((n, 2))
    target = np.zeros(2)
    g = np.zeros(2)
    ag = 1.0 - math.exp(-dt / 0.03)
    t_next = rng.exponential(1.5)
    ug = rng.random((n, 3))
    for i in range(n):
        if i * dt >= t_next:
            if ug[i, 0] < 0.6:
                target = np.zeros(2)
            else:
                target = np.array([style.gaze_deg * (2 * ug[i, 1] - 1), 0.6 * style.gaze_deg * (2 * ug[i, 2] - 1)])
            t_next = i * dt + rng.exponential(1.5) + 0.2
        g = g + (target - g) * ag
        gaze[i] = g
    out[:, _C["gazeYaw_deg"]], out[:, _C["gazePitch_deg"]] = gaze[:, 0], gaze[:, 1]
    return M.clip(out)


def make_targets(phones: list[Phone], features: np.ndarray, fps: float, style: Style, rng: np.random.Generator,
                 effort: float = 1.0) -> np.ndarray:
    """All channels (T, C) float32: mouth from the phonemes, the rest from prosody (T = len(features))."""
    n = features.shape[0]
    mouth = mouth_channels(phones, n, fps, style, effort)
    pros = prosody_channels(phones, features, fps, style, rng, mouth[:, _C["jawOpen"]])
    mouth_cols = M.idx(*M.MOUTH)
    out = pros.copy()
    out[:, mouth_cols] = mouth[:, mouth_cols]
    return M.clip(out)
