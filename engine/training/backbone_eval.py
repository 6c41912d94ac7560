"""Lip-sync metrics of a motion generator on clips with phoneme timing (numpy only).

Used by train_backbone until the evaluation harness (benchmarks/harness.py, issue 4) exists:

* openness correlation: Pearson r between the generator's ``jawOpen`` and a phonetic reference
  openness (vowel height: open 1, mid .65, close .4; bilabials and pauses 0; other consonants .25;
  time-weighted per frame, lightly smoothed), over all frames of all clips;
* bilabial closure recall: share of p/b/m that follow speech and have ``mouthClose`` > 0.5 within
  ±1 frame of the phoneme; precision: share of the closure events (runs of ``mouthClose`` > 0.5)
  that touch such a window;
* A/V offset: the lag (ms; > 0 means the motion is late) of the cross-correlation peak between
  ``jawOpen`` and the reference, with parabolic sub-frame interpolation, within ±200 ms.
"""
from __future__ import annotations

import numpy as np

from emote.engine import motion as M

__all__ = ["reference_openness", "lip_metrics", "run_generator"]

_JAW, _CLOSE = M.INDEX["jawOpen"], M.INDEX["mouthClose"]


def _is_vowel(name: str) -> bool:
    return bool(name) and name[0] in set("aAeEiIoOuUyYV@03&29W")


def _is_bilabial(name: str) -> bool:
    return name.rstrip(":;#'") in ("p", "b", "m")


def reference_openness(phones, n_frames: int, fps: float = 25.0) -> np.ndarray:
    t = (np.arange(n_frames * 10) + 0.5) / (10 * fps)
    val = np.zeros_like(t)
    for p in phones:
        if p.name.startswith("_") or _is_bilabial(p.name):
            v = 0.0
        elif _is_vowel(p.name):
            c = p.name[0]
            v = 1.0 if c in "aA&" else (0.65 if c in "eEoO03V@29W" else 0.4)
        else:
            v = 0.25
        val[(t >= p.start_s) & (t < p.end_s)] = v
    per = val.reshape(n_frames, 10).mean(axis=1)
    return np.convolve(per, [0.25, 0.5, 0.25], mode="same")


def run_generator(gen, features: np.ndarray, block: int = 7) -> np.ndarray:
    """Stream ``features`` through a fresh-reset generator in blocks of ``block`` rows."""
    gen.reset()
    out = []
    for i in range(0, len(features), block):
        gen.push(features[i:i + block])
        out.append(gen.pull())
    out.append(gen.finish())
    return np.concatenate(out)


def _lag_ms(pred: np.ndarray, ref: np.ndarray, fps: float, max_lag: int = 5) -> float:
    p, r = pred - pred.mean(), ref - ref.mean()
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.array([np.dot(p[max(0, k):len(p) + min(0, k)], r[max(0, -k):len(r) - max(0, k)]) for k in lags])
    i = int(np.argmax(cc))
    frac = 0.0
    if 0 < i < len(cc) - 1:
        den = cc[i - 1] - 2 * cc[i] + cc[i + 1]
        frac = 0.5 * (cc[i - 1] - cc[i + 1]) / den if den != 0 else 0.0
    return float((lags[i] + frac) * 1000.0 / fps)


def lip_metrics(motions: list[np.ndarray], clips, fps: float = 25.0) -> dict[str, float]:
    """Metrics over ``clips`` (each with ``phones``) given each clip's generated motion."""
    preds, refs = [], []
    hits = total = ev_hit = ev_total = 0
    for mo, c in zip(motions, clips):
        n = len(mo)
        ref = reference_openness(c.phones, n, fps)
        preds.append(mo[:, _JAW])
        refs.append(ref)
        close = mo[:, _CLOSE] > 0.5
        near = np.zeros(n, bool)
        for k, p in enumerate(c.phones):
            if not _is_bilabial(p.name):
                continue
            a, b = max(0, int(p.start_s * fps) - 1), min(n, int(np.ceil(p.end_s * fps)) + 1)
            near[a:b] = True
            if k > 0 and not c.phones[k - 1].name.startswith("_"):
                total += 1
                hits += bool(close[a:b].any())
        d = np.diff(np.concatenate([[0], close.astype(int), [0]]))
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            ev_total += 1
            ev_hit += bool(near[a:b].any())
    p, r = np.concatenate(preds), np.concatenate(refs)
    return {"openness_corr": float(np.corrcoef(p, r)[0, 1]),
            "bilabial_recall": hits / max(total, 1), "bilabial_precision": ev_hit / max(ev_total, 1),
            "av_offset_ms": _lag_ms(p, r, fps), "bilabials": total, "frames": int(len(p))}
