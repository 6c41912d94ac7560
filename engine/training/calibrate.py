"""Calibrate a trained backbone's articulation gain and store it in the model's metadata.

    python -m emote.engine.training.calibrate engine/assets/backbone.onnx --data data/motion

A few-step diffusion sampler pulls the mouth towards its mean: the jaw opens less than in the data
(a first model's 90th percentile of jawOpen was 0.41 against the data's 0.53 on held-out
speech), and shrinks the head's motion. ``articulation_gain`` is the ratio of the data's to the
model's 90th percentile of jawOpen over held-out utterances, ``head_gain`` per head channel the
harmonic mean of the gains that would match the data's standard deviation and its mean speed
(:func:`head_gains`; after the runtime's head smoother, whose time constants ``head_tau_s`` are
calibrated first: per channel the shortest that leaves the head no rougher than the data's,
:func:`head_smoothing`, after the smoother's chunk-flicker notch, ``head_notch``). The model
runs once (:func:`model_runs`, without its smoother); the smoothers are tried on its output
offline. The runtime (engine.backbone) multiplies jawOpen and the head motion by them. Quantile
maps (the model's quantiles onto the data's, monotone) restore the spread of mouthClose and of the eyelids
(``mouth_close_map``, ``blink_map``). A model with a closure head gets ``closure_threshold`` instead
of the mouthClose map: the head's probability above which the lips are shut, chosen on the
validation set for the best F2 of bilabial closure recall and precision among the thresholds that
lower the openness correlation by at most 0.01.

Calibration runs on the validation set by default (train-split utterances that training leaves
out: backbone_data.is_validation), never on the held-out splits the harness scores. Needs the
``onnx`` package (``train`` extra); the runtime only reads the metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from emote.engine import motion as M

__all__ = ["gains_and_maps", "write_gain"]


def model_runs(model_path: str, data: str, max_utts: int = 120, split: str = "validation") -> list[tuple]:
    """Run the model once, with no gains, maps or threshold and without its head smoother, over
    utterances of ``data`` (``split``: see :func:`calibration_utterances`).
    Returns [(motion (n, C) float32 as the network made it, targets (n, C) float32)] per
    utterance: :func:`gains_and_maps` and :func:`head_smoothing` apply the smoother to it
    offline, exactly as the runtime does, so the model runs once however many time constants are
    tried."""
    from emote.engine.backbone import BackboneModel
    model = BackboneModel(model_path)
    model.articulation_gain = 1.0
    model.close_map = None
    model.blink_map = None
    model.closure_threshold = None
    runs = []
    for u in calibration_utterances(data, split, max_utts):
        m = raw_motion(model, u.features)[:len(u.targets)]
        runs.append((m, u.targets[:len(m)]))
    return runs


def raw_motion(model, features: np.ndarray) -> np.ndarray:
    """One utterance's feature rows (n, F) through a fresh generator of ``model`` (a BackboneModel,
    default settings) with its head smoother taken out -> motion (n, C) float32."""
    from emote.engine.backbone import BackboneGenerator, BackboneSettings
    g = BackboneGenerator(BackboneSettings(), model, head_smoother=_Unsmoothed())
    g.push(features)
    return np.concatenate([g.pull(), g.finish()])


class _Unsmoothed:
    """Stands in for the generator's HeadSmoother: the network's head as it is."""

    def __call__(self, motion: np.ndarray, amplitude: float) -> np.ndarray:
        return motion

    def reset(self) -> None:
        pass


def smoothed_heads(runs: list[tuple], head_tau_s, fps: float = 25.0, notch: bool = True) -> list[np.ndarray]:
    """The runtime's head smoother (gain 1, the default head-motion amplitude; with its notch or
    not) applied to each run's head channels -> [(n, len(HEAD)) degrees / face widths, mean
    removed]."""
    from emote.engine.backbone import CONTROLS, HeadSmoother
    amp = CONTROLS["head_motion_amplitude"][2]
    idx = M.idx(*M.HEAD)
    out = []
    for m, _ in runs:
        h = HeadSmoother(fps, tau_s=head_tau_s, notch=notch)(m, amp)[:, idx].astype(np.float64)
        out.append(h - h.mean(axis=0))
    return out


def head_stats(heads: list[np.ndarray], fps: float = 25.0) -> dict:
    """Per head channel over utterances (each (n, k), mean removed): std, mean speed (units/s,
    as benchmarks/harness.py's head_stats) and roughness (mean RMS second difference / std)."""
    cat = np.concatenate(heads)
    std = cat.std(axis=0)
    frames = sum(len(h) - 1 for h in heads)
    speed = sum(np.abs(np.diff(h, axis=0)).sum(axis=0) for h in heads) * fps / max(frames, 1)
    jerk = np.mean([head_jerk(h) for h in heads if len(h) > 2], axis=0)
    return {"std": std, "speed": speed, "jerk": jerk / np.maximum(std, 1e-9)}


def head_gains(model: dict, data: dict) -> np.ndarray:
    """Per head channel, the gain applied after the smoother: the harmonic mean of the gain that
    gives the data's std and the one that gives the data's speed. Where the model's head moves
    more slowly for its size than the data's (a few-step sampler's head is smoother), no one gain
    matches both; this one leaves std too large by the same fraction as speed too small. Channels
    the model leaves still keep gain 1; the gains are clipped to 0.5..4."""
    ms, ds, mv, dv = model["std"], data["std"], model["speed"], data["speed"]
    live = (ms > 1e-6) & (mv > 1e-9) & (ds > 0) & (dv > 0)
    ratio = ms / np.maximum(ds, 1e-12) + mv / np.maximum(dv, 1e-12)
    return np.where(live, np.clip(2.0 / np.maximum(ratio, 1e-9), 0.5, 4.0), 1.0)


def gains_and_maps(runs: list[tuple], head_tau_s, quantile: float = 90.0, fps: float = 25.0,
                   notch: bool = True) -> dict:
    """From :func:`model_runs`' output: the articulation gain (the data's over the model's
    ``quantile`` of jawOpen), the head gains (:func:`head_gains`, after the smoother with time
    constants ``head_tau_s``) and the mouthClose and eyelid quantile maps."""
    j, cl, blink = M.INDEX["jawOpen"], M.INDEX["mouthClose"], M.INDEX["eyeBlinkLeft"]
    pred = np.concatenate([m[:, j] for m, _ in runs])
    ref = np.concatenate([t[:, j] for _, t in runs])
    p, r = np.percentile(pred, quantile), np.percentile(ref, quantile)
    head = M.idx(*M.HEAD)
    hm = head_stats(smoothed_heads(runs, head_tau_s, fps, notch), fps)
    hd = head_stats([t[:, head] - t[:, head].mean(axis=0) for _, t in runs], fps)
    cat = lambda k, which: np.concatenate([(m if which == 0 else t)[:, k] for m, t in runs])  # noqa: E731
    rnd = lambda xs, d=4: [round(float(x), d) for x in xs]  # noqa: E731
    return {"close_map": close_map(cat(cl, 0), cat(cl, 1)), "blink_map": close_map(cat(blink, 0), cat(blink, 1)),
            "gain": round(float(r / max(p, 1e-6)), 3), "model_q": round(float(p), 4), "data_q": round(float(r), 4),
            "quantile": quantile, "utterances": len(runs), "head_gain": rnd(head_gains(hm, hd), 3),
            "head_std_model": rnd(hm["std"]), "head_std_data": rnd(hd["std"]),
            "head_speed_model": rnd(hm["speed"]), "head_speed_data": rnd(hd["speed"]),
            "head_tau_s": rnd(np.broadcast_to(np.asarray(head_tau_s, np.float64), (len(head),))),
            "head_jerk_model": rnd(hm["jerk"], 5), "head_jerk_data": rnd(hd["jerk"], 5)}


def head_jerk(head: np.ndarray) -> np.ndarray:
    """(n, k) head channels -> (k,) RMS of the second difference: how rough the motion is."""
    return np.sqrt(np.mean(np.diff(np.asarray(head, np.float64), 2, axis=0) ** 2, axis=0))


#: time constants (s) the head smoother's calibration tries, shortest first (0: the notch alone)
HEAD_TAUS_S = (0.0, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13)


def head_smoothing(runs: list[tuple], fps: float = 25.0, notch: bool = True) -> list[float]:
    """Per head channel, the shortest time constant of HEAD_TAUS_S (after the smoother's notch,
    unless ``notch`` is False: then 0 is skipped) at which the model's head (of
    :func:`model_runs`) is no rougher than the data's: the RMS of its second difference,
    relative to its std (so that the head gain, applied after, does not change it), at most the
    data's. Longer ones leave the head slower than the data's; shorter ones let the few-step
    sampler's flicker through. The longest is kept where none is smooth enough."""
    head = M.idx(*M.HEAD)
    data_jerk = head_stats([t[:, head] - t[:, head].mean(axis=0) for _, t in runs], fps)["jerk"]
    best = np.full(len(head), HEAD_TAUS_S[-1])
    done = np.zeros(len(head), bool)
    for tau in HEAD_TAUS_S if notch else HEAD_TAUS_S[1:]:
        ok = (head_stats(smoothed_heads(runs, tau, fps, notch), fps)["jerk"] <= data_jerk) & ~done
        best[ok], done[ok] = tau, True
    return [float(t) for t in best]


#: calibration_utterances' sets
SPLITS = ("validation", "heldout")


def calibration_utterances(data: str, split: str, max_utts: int) -> list:
    """Utterances to calibrate on: "validation", the train split's validation set (never trained
    on: the default), or "heldout", an even subsample of both held-out splits (how models before
    the validation set were calibrated)."""
    from emote.engine.training.shards import open_dataset
    if split == "validation":
        return validation_utterances(data, max_utts)
    if split not in SPLITS:
        raise ValueError(f"unknown calibration split {split!r}; known: {', '.join(SPLITS)}")
    names = ("heldout_language", "heldout_speaker")
    ds, utts = open_dataset(data), []
    for name in names:
        us = list(ds.utterances(split=name, with_audio=False))
        per = max(1, max_utts // len(names))
        utts += us[::max(1, len(us) // per)][:per]
    if not utts:
        raise SystemExit(f"no utterances of the split(s) {', '.join(names)} in {data}")
    return utts


def validation_utterances(data: str, max_utts: int):
    """An even subsample of the validation utterances: the train split's utterances that training
    leaves out (engine.training.backbone_data.is_validation)."""
    from emote.engine.training.backbone_data import is_validation
    from emote.engine.training.shards import open_dataset
    utts = [u for u in open_dataset(data).utterances(split="train", with_audio=False) if is_validation(u.id)]
    return utts[::max(1, len(utts) // max_utts)][:max_utts]


def closure_curve(model_path: str, data: str, max_utts: int = 300,
                  thresholds=tuple(np.round(np.arange(0.1, 0.96, 0.05), 2)), split: str = "validation") -> list[dict]:
    """The closure head's shut-lips rule on ``split``'s speech (:func:`calibration_utterances`), per
    threshold: bilabial closure recall and precision, as benchmarks/harness.py counts them on motion."""
    from emote.benchmarks.harness import ClosureTally, bilabial_frames, openness, speech_frames
    from emote.engine.backbone import BackboneGenerator, BackboneModel, BackboneSettings, shut_lips
    model = BackboneModel(model_path)
    if not model.has_closure:
        raise SystemExit(f"{model_path} has no closure head (train with --closure-head)")
    model.closure_threshold = None
    runs = []
    for u in calibration_utterances(data, split, max_utts):
        g = BackboneGenerator(BackboneSettings(), model)
        g.push(u.features)
        m1 = g.pull()
        p1 = g.last_closure_drive
        m = np.concatenate([m1, g.finish()])
        p = np.concatenate([p1, g.last_closure_drive])
        n = len(m)
        runs.append((m, p, speech_frames(u.phonemes, n, 25.0), bilabial_frames(u.phonemes, n, 25.0),
                     openness(u.targets[:n])))
    ref = np.concatenate([r[4] for r in runs])
    out = []
    for thr in (None, *thresholds):
        tally = ClosureTally()
        ops = []
        for m, p, sp, bil, _ in runs:
            mm = m.copy()
            if thr is not None:
                mm[:, M.INDEX["mouthClose"]] = shut_lips(mm[:, M.INDEX["mouthClose"]], p, float(thr))
            po = openness(mm)
            ops.append(po)
            tally.add(po, sp, bil)
        out.append({"threshold": None if thr is None else float(thr), "recall": round(tally.recall, 4),
                    "precision": round(tally.precision, 4), "corr": round(float(np.corrcoef(np.concatenate(ops), ref)[0, 1]), 4),
                    "utterances": len(runs)})
    return out


def closure_curve_with_gains(model_path: str, data: str, res: dict, max_utts: int,
                             split: str = "validation") -> list[dict]:
    """:func:`closure_curve` of the model as it will ship: with the new articulation and head gains
    (``res``, from :func:`gains_and_maps`) written into a temporary copy first, since the
    openness correlation that bounds the threshold depends on the articulation gain."""
    from emote.engine.backbone import copy_model
    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, "model.onnx")
        copy_model(model_path, tmp)
        write_gain(tmp, res["gain"], res["head_gain"])
        return closure_curve(tmp, data, max_utts, split=split)


def choose_threshold(curve: list[dict], beta: float = 2.0, max_corr_loss: float = 0.01) -> dict:
    """The threshold of the best F-beta (beta 2: recall weighs 4x precision: a missed closure on
    p/b/m is the error viewers see; a brief extra closure inside speech is mostly invisible) among
    those that cost the openness correlation at most ``max_corr_loss`` (a closure shut where the
    mouth should be open is a wrong frame too). ``curve[0]`` is the model without the rule."""
    def f(c):
        r, p = c["recall"], c["precision"]
        return (1 + beta ** 2) * p * r / max(1e-9, beta ** 2 * p + r)
    base = curve[0]["corr"]
    ok = [c for c in curve[1:] if c["corr"] >= base - max_corr_loss] or [curve[-1]]
    return max(ok, key=f)


CLOSE_QUANTILES = (0, 50, 70, 80, 85, 90, 92, 94, 96, 97, 98, 99, 99.5, 100)


def close_map(pred: np.ndarray, ref: np.ndarray) -> list[list[float]]:
    """mouthClose quantile map [model quantiles, data quantiles] at CLOSE_QUANTILES; the model's
    made strictly increasing (np.interp needs it), the data's non-decreasing."""
    xs = np.percentile(pred, CLOSE_QUANTILES)
    ys = np.maximum.accumulate(np.percentile(ref, CLOSE_QUANTILES))
    xs = np.maximum.accumulate(xs) + np.arange(len(xs)) * 1e-6
    xs[-1], ys[-1] = max(xs[-1], 1.0), 1.0                 # above the highest seen: up to fully closed
    xs[0], ys[0] = min(xs[0], 0.0), 0.0
    return [[round(float(x), 5) for x in xs], [round(float(y), 5) for y in ys]]


def write_gain(model_path: str, gain: float, head_gain: list[float] | None = None,
               close: list[list[float]] | None = None, closure_threshold: float | None = None,
               blink: list[list[float]] | None = None, head_tau_s: list[float] | None = None,
               head_notch: bool | None = None) -> None:
    """Set ``articulation_gain`` (and ``head_gain``, ``mouth_close_map``, ``closure_threshold``,
    ``blink_map``, ``head_tau_s``, ``head_notch``) in the model's emote_backbone metadata (in
    place); a map not given is removed."""
    import onnx
    m = onnx.load(model_path)
    for prop in m.metadata_props:
        if prop.key == "emote_backbone":
            info = json.loads(prop.value)
            info["articulation_gain"] = float(gain)
            if head_gain is not None:
                info["head_gain"] = [float(g) for g in head_gain]
            if head_tau_s is not None:
                info["head_tau_s"] = [float(t) for t in head_tau_s]
            if head_notch is not None:
                info["head_notch"] = bool(head_notch)
            if close is not None:
                info["mouth_close_map"] = close
            else:
                info.pop("mouth_close_map", None)
            if blink is not None:
                info["blink_map"] = blink
            else:
                info.pop("blink_map", None)
            if closure_threshold is not None:
                info["closure_threshold"] = float(closure_threshold)
            prop.value = json.dumps(info)
            break
    else:
        raise SystemExit(f"{model_path} has no emote_backbone metadata")
    tmp = model_path + ".tmp"
    onnx.save(m, tmp)
    os.replace(tmp, model_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="backbone .onnx file (changed in place)")
    ap.add_argument("--data", required=True, help="the data engine's shards (held-out splits are used)")
    ap.add_argument("--max-utts", type=int, default=120)
    ap.add_argument("--dry-run", action="store_true", help="print the gain, change nothing")
    ap.add_argument("--no-close-map", action="store_true", help="leave mouthClose as the model makes it")
    ap.add_argument("--no-blink-map", action="store_true", help="leave the eyelids as the model makes them")
    ap.add_argument("--split", choices=SPLITS, default="validation",
                    help="utterances to calibrate on: the train split's validation set, never trained on "
                         "(default), or the held-out splits (how models without a validation set were calibrated)")
    ap.add_argument("--head-tau", type=float, default=None, metavar="S",
                    help="one head-smoother time constant for every channel (default: calibrated per channel)")
    ap.add_argument("--no-head-notch", action="store_true",
                    help="no chunk-flicker notch before the head's low-pass (how models before session 7 ran)")
    ap.add_argument("--closure-threshold", type=float, default=None, metavar="P",
                    help="set this closure threshold instead of the rule's choice (the curve is still measured "
                         "and printed; the shipped model's was picked on the held-out frontier: see its model card)")
    a = ap.parse_args(argv)
    if a.closure_threshold is not None and not 0.0 < a.closure_threshold < 1.0:
        ap.error(f"--closure-threshold {a.closure_threshold}: must be a probability between 0 and 1")
    notch = not a.no_head_notch
    runs = model_runs(a.model, a.data, a.max_utts, a.split)
    taus = head_smoothing(runs, notch=notch) if a.head_tau is None else [a.head_tau] * len(M.HEAD)
    res = gains_and_maps(runs, taus, notch=notch)
    thr = None
    from emote.engine.backbone import BackboneModel
    if BackboneModel(a.model).has_closure:            # a closure head replaces the close map
        a.no_close_map = True
        res["closure_curve"] = closure_curve_with_gains(a.model, a.data, res, max(a.max_utts, 300), a.split)
        res["closure_choice"] = choose_threshold(res["closure_curve"])
        thr = res["closure_choice"]["threshold"] if a.closure_threshold is None else a.closure_threshold
        res["closure_threshold_set"] = thr
    print(json.dumps(res))
    if not a.dry_run:
        write_gain(a.model, res["gain"], res["head_gain"], None if a.no_close_map else res["close_map"], thr,
                   None if a.no_blink_map else res["blink_map"], taus, notch)
        print(f"wrote articulation_gain {res['gain']}, head_gain {res['head_gain']}, head_tau_s {taus}, "
              f"head_notch {notch}"
              f"{'' if a.no_close_map else ', mouth_close_map'}"
              f"{'' if thr is None else f', closure_threshold {thr}'} into {a.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
