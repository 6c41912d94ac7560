"""Lip-sync and motion evaluation harness: any motion generator, scored on the data engine's held-out splits.

    python -m emote.benchmarks.harness --generator baseline [--data data/motion] [--out benchmarks/results]
                                       [--max-utts 400] [--render 12] [--size 256] [--seed 0]

The data set is the one ``python -m emote.engine.training.build_data`` writes (built with its
defaults first if ``--data`` has none). Utterances of the ``heldout_language`` and
``heldout_speaker`` splits are scored; the reference is the data engine's target motion.

Openness: ``jawOpen * (1 - mouthClose)`` for motion (the lips pressed shut count as closed);
the inner-lip aperture (engine.landmarks.inner_lip_aperture) minus the photo's own for rendered
video. "Closed": openness at most max(floor, 12 % of its 90th percentile over the utterance's
speech frames), so the rule is the same for motion and video whatever their scales.

Metrics (motion, and on RENDERED video for a subset: frames from engine.pipeline with the
embedded astronaut portrait, lips re-detected by the face landmarker on every frame):

* ``corr``: Pearson correlation of predicted and reference openness, frames pooled per language;
* ``closure_recall``: share of bilabials (p, b, m ...) with a closed mouth within +-1 frame of
  the bilabial's mid-time; ``closure_precision``: share of predicted closures (runs of closed
  frames inside speech) that lie within +-1 frame of a bilabial;
* ``offset_ms``: lag of the peak of the cross-correlation (summed over utterances) between
  predicted and reference openness; positive = the prediction is late;
* head: std and mean speed (deg/s) of yaw, pitch, roll; blink rate (per minute), for the
  generator and for the data engine's targets on the same utterances (``data_engine``), and
  for the data engine's targets on as many utterances of the train split (``data_engine_train``).
  The data engine draws each speaker's head style (amplitudes, time constant, nods) at random,
  once per speaker, and the held-out splits have only a few speakers: their head statistics are
  those of a few random draws, which no model can infer from the audio; the train split's are
  the population's, what a model of the audio alone can match.

``--render-reference`` also renders the data engine's own motion of the same utterances (Replay)
and scores it the same way (``rendered_reference``): the rendered ceiling, what the renderer and
the landmarker's re-detection lose on their own (the lip shapes, mouthUpperUp / LowerDown /
Funnel ..., move the visible lip gap where openness does not look). It then also scores the
generator's video against that video, lip aperture against lip aperture
(``rendered_vs_rendered_reference``: its ``corr`` and ``offset_ms``; the closure counts are the
generator video's, as in ``rendered``).

Writes ``harness_<generator>.json`` and ``harness_<generator>.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emote.engine import motion as M

J, CL = M.INDEX["jawOpen"], M.INDEX["mouthClose"]
BLINK = M.INDEX["eyeBlinkLeft"]
HEAD = {"yaw": M.INDEX["headYaw_deg"], "pitch": M.INDEX["headPitch_deg"], "roll": M.INDEX["headRoll_deg"]}
HELDOUT = ("heldout_language", "heldout_speaker")
MAX_LAG = 8          # frames (+-320 ms at 25 fps)


# --------------------------------------------------------------------------------------------
# metric primitives
# --------------------------------------------------------------------------------------------

def openness(motion: np.ndarray) -> np.ndarray:
    """Mouth openness of motion rows: jawOpen * (1 - mouthClose)."""
    m = np.asarray(motion, np.float64)
    return m[:, J] * (1.0 - m[:, CL])


def speech_frames(phonemes, n: int, fps: float) -> np.ndarray:
    """Frames more than half covered by non-pause phonemes."""
    g = np.zeros(n * 8)
    for p, s0, s1 in phonemes:
        if p != "_":
            g[max(0, int(round(s0 * fps * 8))):min(g.size, int(round(s1 * fps * 8)))] = 1.0
    return g.reshape(n, 8).mean(axis=1) > 0.5


def bilabial_frames(phonemes, n: int, fps: float) -> list[int]:
    from emote.engine.training.visemes import is_bilabial
    return [min(n - 1, int(0.5 * (s0 + s1) * fps)) for p, s0, s1 in phonemes if is_bilabial(p)]


def closed_mask(op: np.ndarray, speech: np.ndarray, floor: float) -> np.ndarray:
    ref = np.percentile(op[speech], 90) if speech.any() else np.max(op, initial=0.0)
    return op <= max(floor, 0.12 * ref)


class ClosureTally:
    """Bilabial closure counts summed over utterances, as the harness scores motion: ``add`` one
    utterance's mouth openness (n,), speech mask (n,) bool and bilabial frames; ``recall`` and
    ``precision`` of all added so far."""

    def __init__(self) -> None:
        self.counts = {"bilabials": 0, "hits": 0, "runs": 0, "good_runs": 0}

    def add(self, op: np.ndarray, speech: np.ndarray, bil: list[int], floor: float = 0.02) -> None:
        for k, v in closure_counts(closed_mask(op, speech, floor), speech, bil).items():
            self.counts[k] += v

    @property
    def recall(self) -> float:
        return self.counts["hits"] / max(1, self.counts["bilabials"])

    @property
    def precision(self) -> float:
        return self.counts["good_runs"] / max(1, self.counts["runs"])


def closure_counts(closed: np.ndarray, speech: np.ndarray, bil: list[int]) -> dict:
    """Counts for recall (bilabials hit / bilabials) and precision (closure runs near a bilabial / runs)."""
    n = closed.size
    near = np.zeros(n, bool)
    for f in bil:
        near[max(0, f - 1):min(n, f + 2)] = True
    hits = sum(bool(closed[max(0, f - 1):min(n, f + 2)].any()) for f in bil if speech[f])
    total = sum(1 for f in bil if speech[f])
    runs = good = 0
    i = 0
    while i < n:
        if closed[i] and speech[i]:
            j = i
            while j < n and closed[j] and speech[j]:
                j += 1
            inside = (i > 0 and speech[i - 1]) and (j < n and speech[j])   # not touching a pause
            if inside:
                runs += 1
                good += bool(near[i:j].any())
            i = j
        else:
            i += 1
    return {"bilabials": total, "hits": hits, "runs": runs, "good_runs": good}


def sustained_vowel_frames(phonemes, n: int, fps: float, min_s: float = 0.3) -> list[np.ndarray]:
    """Frame indices of each vowel lasting ``min_s`` or more (its middle 80 %): the sung notes."""
    from emote.engine.training.visemes import is_vowel
    out = []
    for p, s0, s1 in phonemes:
        if s1 - s0 >= min_s and is_vowel(p):
            a, b = s0 + 0.1 * (s1 - s0), s1 - 0.1 * (s1 - s0)
            idx = np.arange(int(np.ceil(a * fps)), min(n, int(np.floor(b * fps)) + 1))
            if idx.size:
                out.append(idx)
    return out


def sung_stats(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict | None:
    """Does the mouth stay open through sustained vowels? ``pairs``: (pred, ref) openness on the
    frames of each sustained vowel. ``open_fraction``: frames where pred >= half of ref;
    ``open_ratio``: median over notes of mean pred / mean ref."""
    if not pairs:
        return None
    pred = np.concatenate([p for p, _ in pairs])
    ref = np.concatenate([r for _, r in pairs])
    ratio = [float(p.mean() / max(r.mean(), 1e-6)) for p, r in pairs]
    return {"notes": len(pairs), "frames": int(pred.size),
            "open_fraction": round(float(np.mean(pred >= 0.5 * ref)), 4),
            "open_ratio": round(float(np.median(ratio)), 4)}


def xcorr(pred: np.ndarray, ref: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Sum over t of z(pred)[t + lag] * z(ref)[t] for lag in -max_lag..max_lag (unnormalised)."""
    a = (pred - pred.mean()) / (pred.std() + 1e-9)
    b = (ref - ref.mean()) / (ref.std() + 1e-9)
    n = a.size
    out = np.zeros(2 * max_lag + 1)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        if lag >= 0:
            out[k] = np.dot(a[lag:], b[:n - lag]) if lag < n else 0.0
        else:
            out[k] = np.dot(a[:n + lag], b[-lag:]) if -lag < n else 0.0
    return out


def peak_lag_ms(xc: np.ndarray, fps: float) -> float:
    k = int(np.argmax(xc))
    frac = 0.0
    if 0 < k < xc.size - 1:
        y0, y1, y2 = xc[k - 1], xc[k], xc[k + 1]
        d = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / d if d != 0 else 0.0
    return float((k - (xc.size - 1) // 2 + frac) * 1000.0 / fps)


class Accumulator:
    """Pools one family of metrics (motion or rendered) per language."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.per: dict[str, dict] = {}

    def add(self, lang: str, pred: np.ndarray, ref: np.ndarray, closed_pred: np.ndarray, speech: np.ndarray,
            bil: list[int]) -> None:
        d = self.per.setdefault(lang, {"pred": [], "ref": [], "xc": np.zeros(2 * MAX_LAG + 1), "bilabials": 0,
                                       "hits": 0, "runs": 0, "good_runs": 0, "utterances": 0})
        ok = np.isfinite(pred)
        d["pred"].append(pred[ok])
        d["ref"].append(ref[ok])
        if ok.all() and pred.std() > 1e-9 and ref.std() > 1e-9:
            d["xc"] += xcorr(pred, ref)
        for k, v in closure_counts(closed_pred & ok, speech & ok, bil).items():
            d[k] += v
        d["utterances"] += 1

    @staticmethod
    def _summary(d: dict, fps: float) -> dict:
        p, r = np.concatenate(d["pred"]), np.concatenate(d["ref"])
        corr = float(np.corrcoef(p, r)[0, 1]) if p.size > 2 and p.std() > 0 and r.std() > 0 else float("nan")
        return {"utterances": d["utterances"], "frames": int(p.size), "corr": round(corr, 4),
                "closure_recall": round(d["hits"] / d["bilabials"], 4) if d["bilabials"] else None,
                "closure_precision": round(d["good_runs"] / d["runs"], 4) if d["runs"] else None,
                "bilabials": d["bilabials"], "closures_predicted": d["runs"],
                "offset_ms": round(peak_lag_ms(d["xc"], fps), 1) if d["xc"].any() else None}

    def summary(self) -> dict:
        per = {lang: self._summary(d, self.fps) for lang, d in sorted(self.per.items())}
        allp = {"pred": [x for d in self.per.values() for x in d["pred"]],
                "ref": [x for d in self.per.values() for x in d["ref"]],
                "xc": sum((d["xc"] for d in self.per.values()), np.zeros(2 * MAX_LAG + 1)),
                "utterances": sum(d["utterances"] for d in self.per.values())}
        for k in ("bilabials", "hits", "runs", "good_runs"):
            allp[k] = sum(d[k] for d in self.per.values())
        overall = self._summary(allp, self.fps) if allp["pred"] else {}
        corrs = [v["corr"] for v in per.values() if not math.isnan(v["corr"])]
        overall["corr_mean_over_languages"] = round(float(np.mean(corrs)), 4) if corrs else None
        overall["xcorr"] = [round(float(v), 3) for v in allp["xc"] / max(1e-9, np.max(np.abs(allp["xc"])))]
        return {"overall": overall, "per_language": per}


def head_stats(motions: list[np.ndarray], fps: float) -> dict:
    out = {}
    frames = sum(m.shape[0] for m in motions)
    for name, c in HEAD.items():
        std = sum(np.std(m[:, c]) * m.shape[0] for m in motions) / max(frames, 1)
        speed = sum(np.abs(np.diff(m[:, c])).sum() * fps for m in motions) / max(frames - len(motions), 1)
        out[name] = {"std_deg": round(float(std), 3), "speed_deg_s": round(float(speed), 3)}
    blinks = sum(int(np.sum((m[1:, BLINK] >= 0.5) & (m[:-1, BLINK] < 0.5))) for m in motions)
    out["blinks_per_min"] = round(blinks / max(frames / fps / 60.0, 1e-9), 2)
    return out


# --------------------------------------------------------------------------------------------
# running a generator
# --------------------------------------------------------------------------------------------

def run_generator(name: str, features: np.ndarray, fps: float, seed: int) -> np.ndarray:
    from emote.engine.generator import make_generator
    g = make_generator(name, fps=float(fps), seed=int(seed))
    g.reset(int(seed))
    g.push(features)
    out = np.concatenate([g.pull(), g.finish()])
    if out.shape != (features.shape[0], M.NUM_CHANNELS):
        raise RuntimeError(f"generator {name!r} returned {out.shape} for {features.shape[0]} feature rows")
    return out


class Replay:
    """A motion generator (engine.generator.MotionGenerator's interface) that plays given motion
    rows (n, C) back, one per feature row pushed (the last row held past the end): the data
    engine's reference motion through the same renderer and landmarker as a generator's, which
    scores what the rendering and the re-detection alone lose (the rendered ceiling)."""

    lookahead_frames = 0

    def __init__(self, motion: np.ndarray, fps: float) -> None:
        self.motion, self.fps = np.asarray(motion, np.float32), float(fps)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.pushed = self.sent = 0

    def push(self, features: np.ndarray) -> None:
        self.pushed += len(features)

    def pull(self) -> np.ndarray:
        idx = np.minimum(np.arange(self.sent, self.pushed), len(self.motion) - 1)
        self.sent = self.pushed
        return self.motion[idx]

    finish = pull

    def set_controls(self, **controls: float) -> None:
        pass


def render_apertures(generator, audio: np.ndarray, size: int, seed: int, cache_dir: str) -> tuple[np.ndarray, float]:
    """Frames of the pipeline (astronaut portrait) for this audio -> inner-lip aperture per frame
    (NaN where no face is found), and the photo's own aperture. ``generator``: a registry name,
    or a generator object (Replay)."""
    from emote.engine import landmarks as L
    from emote.engine.avatar import AvatarSettings, prepare
    from emote.engine.pipeline import PipelineSettings, PortraitPipeline
    from emote.engine.resources import default_portrait_path

    named = isinstance(generator, str)
    settings = PipelineSettings(size_px=size, seed=seed, cache_dir=cache_dir,
                                **({"generator": generator} if named else {}))
    avatar = prepare(default_portrait_path(), AvatarSettings(size_px=size), cache_dir=cache_dir)
    pipe = PortraitPipeline(avatar, settings, generator=None if named else generator)
    lm = L.shared_landmarker()
    rest = L.inner_lip_aperture(lm.detect_one(avatar.image).points)
    ap = []

    def measure(frames):
        for f in frames:
            faces = lm.detect(f.rgb)
            ap.append(L.inner_lip_aperture(faces[0].points) if faces else np.nan)

    for i in range(0, audio.size, 16000):
        pipe.push(audio[i:i + 16000])
        measure(pipe.pull())
    measure(pipe.finish())
    return np.asarray(ap, np.float64), float(rest)


def rendered_subset(ds, generator: str, splits: tuple[str, ...], render: int, size: int, seed: int,
                    reference: bool = False, progress: bool = True) -> tuple[dict, list[str], dict]:
    """Render ``render`` held-out utterances (evenly spread over ``splits``, 3-12 s) with
    ``generator`` and score their re-detected lips against the reference openness; with
    ``reference`` also the data engine's motion of the same utterances (Replay), scored the same
    way, and the generator's video against the reference's video (lip aperture against lip
    aperture). Returns ({"generator", "reference", "video_vs_reference": Accumulator or None},
    rendered ids, {id: the generator's apertures})."""
    fps = float(ds.manifest["fps"])
    acc = {"generator": Accumulator(fps), "reference": Accumulator(fps) if reference else None,
           "video_vs_reference": Accumulator(fps) if reference else None}
    ids_done, apertures = [], {}
    quota = [render // len(splits) + (1 if i < render % len(splits) else 0) for i in range(len(splits))]
    with tempfile.TemporaryDirectory() as cache:
        for split, per_split in zip(splits, quota):
            if per_split <= 0:
                continue
            ids = [m["id"] for m in ds.metas(split) if 3.0 <= m["duration_s"] <= 12.0]
            step = max(1.0, len(ids) / per_split)           # evenly spread over the split
            pick = {ids[int(i * step)] for i in range(min(per_split, len(ids)))}
            for u in ds.utterances(split=split, where=lambda m: m["id"] in pick):
                if u.audio is None:
                    continue
                n = u.features.shape[0]
                ph = u.phonemes
                sp, bil, ro = speech_frames(ph, n, fps), bilabial_frames(ph, n, fps), openness(u.targets)
                aps = {}
                for key, gen in (("generator", generator), ("reference", Replay(u.targets, fps))):
                    if acc[key] is None:
                        continue
                    ap, rest = render_apertures(gen, u.float_audio(), size, seed, cache)
                    ap = aps[key] = ap[:n] - rest
                    valid = np.isfinite(ap)
                    closed = closed_mask(np.where(valid, ap, 0.0), sp & valid, 0.01)
                    acc[key].add(u.meta["language"], ap, ro, closed, sp, bil)
                    if key == "generator":
                        apertures[u.id] = ap
                        closed_gen = closed
                if acc["video_vs_reference"] is not None:
                    both = np.isfinite(aps["generator"]) & np.isfinite(aps["reference"])
                    acc["video_vs_reference"].add(u.meta["language"], np.where(both, aps["generator"], np.nan),
                                                  np.where(both, aps["reference"], 0.0), closed_gen, sp, bil)
                ids_done.append(u.id)
                if progress:
                    print(f"  rendered {u.id} ({n} frames)", file=sys.stderr)
    return acc, ids_done, apertures


# --------------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------------

def evaluate(generator: str, data: str, max_utts: int = 400, render: int = 12, size: int = 256, seed: int = 0,
             splits: tuple[str, ...] = HELDOUT, progress: bool = True, render_reference: bool = False) -> dict:
    from emote.engine.training.shards import open_dataset

    t0 = time.perf_counter()
    ds = open_dataset(data)
    fps = float(ds.manifest["fps"])
    motion_acc, ref_acc = Accumulator(fps), Accumulator(fps)
    gen_motions, ref_motions = [], []
    sung: list[tuple[np.ndarray, np.ndarray]] = []
    by_split: dict[str, Accumulator] = {s: Accumulator(fps) for s in splits}
    chosen = []
    for split in splits:
        utts = list(ds.utterances(split=split, with_audio=False))
        if len(utts) > max_utts // len(splits):                 # an even, deterministic subsample
            step = len(utts) / (max_utts // len(splits))
            utts = [utts[int(i * step)] for i in range(max_utts // len(splits))]
        chosen += utts
    if not chosen:
        raise SystemExit(f"no utterances of the splits {', '.join(splits)} in {data}")
    example = None
    for k, u in enumerate(chosen):
        n = u.features.shape[0]
        pred = run_generator(generator, u.features, fps, seed)
        ph = u.phonemes
        sp = speech_frames(ph, n, fps)
        bil = bilabial_frames(ph, n, fps)
        po, ro = openness(pred), openness(u.targets)
        lang = u.meta["language"]
        motion_acc.add(lang, po, ro, closed_mask(po, sp, 0.02), sp, bil)
        by_split[u.meta["split"]].add(lang, po, ro, closed_mask(po, sp, 0.02), sp, bil)
        ref_acc.add(lang, ro, ro, closed_mask(ro, sp, 0.02), sp, bil)
        gen_motions.append(pred)
        ref_motions.append(u.targets)
        if u.meta.get("variant") == "sung":
            sung += [(po[i], ro[i]) for i in sustained_vowel_frames(ph, n, fps)]
        if example is None and len(bil) >= 3 and 4.0 < n / fps < 10.0 and "augmentation" not in u.meta:
            example = {"id": u.id, "ref": ro, "pred": po, "bilabials": bil}
        if progress and k % 50 == 0:
            print(f"  motion {k}/{len(chosen)}", file=sys.stderr)
    rendered, rendered_ids, apertures = rendered_subset(ds, generator, splits, render, size, seed,
                                                        render_reference, progress) if render > 0 else ({}, [], {})
    if example is not None and example["id"] in apertures:
        example["video"] = apertures[example["id"]]
    video_acc, ref_video, vs_ref = (rendered.get(k) for k in ("generator", "reference", "video_vs_reference"))
    result = {
        "generator": generator,
        "data": str(Path(data).resolve()),
        "data_totals": ds.manifest.get("totals", {}),
        "splits": list(splits),
        "seed": seed,
        "motion": motion_acc.summary(),
        "motion_by_split": {s: a.summary()["overall"] for s, a in by_split.items() if a.per},
        "reference_self_check": ref_acc.summary()["overall"],
        "rendered": video_acc.summary() if video_acc is not None and video_acc.per else None,
        "rendered_reference": ref_video.summary()["overall"] if ref_video is not None and ref_video.per else None,
        "rendered_vs_rendered_reference": vs_ref.summary()["overall"] if vs_ref is not None and vs_ref.per else None,
        "rendered_utterances": rendered_ids,
        "render_size_px": size,
        "head": {"generator": head_stats(gen_motions, fps), "data_engine": head_stats(ref_motions, fps),
                 "data_engine_train": head_stats(train_targets(ds, len(chosen)), fps)},
        "sung": sung_stats(sung),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    for key in ("xcorr",):
        result["reference_self_check"].pop(key, None)
    result["_example"] = example
    return result


def train_targets(ds, n: int) -> list[np.ndarray]:
    """The targets (motion rows) of ``n`` train-split utterances of dataset ``ds``, evenly spread."""
    ids = [m["id"] for m in ds.metas("train")]
    pick = {ids[int(i * len(ids) / n)] for i in range(min(n, len(ids)))}
    return [u.targets for u in ds.utterances(split="train", with_audio=False, where=lambda m: m["id"] in pick)]


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(17, 9.5))
    gen = result["generator"]
    fig.suptitle(f"emote lip-sync harness: generator '{gen}' on the held-out splits "
                 f"({result['motion']['overall']['utterances']} utterances; rendered: "
                 f"{len(result['rendered_utterances'])})", fontsize=13)
    # 1 per-language correlation
    a = ax[0, 0]
    per = result["motion"]["per_language"]
    langs = list(per)
    x = np.arange(len(langs))
    a.bar(x - 0.2, [per[l]["corr"] for l in langs], 0.4, label="motion")
    if result["rendered"]:
        rp = result["rendered"]["per_language"]
        a.bar(x + 0.2, [rp.get(l, {}).get("corr", np.nan) for l in langs], 0.4, label="rendered video")
    a.set_xticks(x, langs, rotation=90, fontsize=6)
    a.set_ylim(-0.1, 1)
    a.axhline(0, color="k", lw=0.5)
    a.set_title("mouth-openness correlation with the reference, per language")
    a.legend()
    # 2 closures
    a = ax[0, 1]
    fams = [("motion", result["motion"]["overall"])]
    if result["rendered"]:
        fams.append(("rendered", result["rendered"]["overall"]))
    if result.get("rendered_reference"):
        fams.append(("reference\nrendered", result["rendered_reference"]))
    fams.append(("reference", result["reference_self_check"]))
    xs = np.arange(len(fams))
    a.bar(xs - 0.2, [f[1].get("closure_recall") or 0 for f in fams], 0.4, label="recall")
    a.bar(xs + 0.2, [f[1].get("closure_precision") or 0 for f in fams], 0.4, label="precision")
    a.set_xticks(xs, [f[0] for f in fams])
    a.set_ylim(0, 1.05)
    a.set_title("bilabial closures (mouth closed within ±1 frame of p/b/m)")
    a.legend()
    # 3 cross-correlation
    a = ax[0, 2]
    lags = (np.arange(2 * MAX_LAG + 1) - MAX_LAG) * 1000.0 / 25.0
    a.plot(lags, result["motion"]["overall"]["xcorr"], "o-", label=f"motion (peak {result['motion']['overall']['offset_ms']} ms)")
    if result["rendered"]:
        a.plot(lags, result["rendered"]["overall"]["xcorr"], "s-",
               label=f"rendered (peak {result['rendered']['overall']['offset_ms']} ms)")
    a.axvline(0, color="k", lw=0.5)
    a.set_xlabel("lag of the prediction (ms; > 0 = late)")
    a.set_title("A/V offset: cross-correlation of openness")
    a.legend()
    # 4 example trace
    a = ax[1, 0]
    ex = result.get("_example")
    if ex:
        t = np.arange(len(ex["ref"])) / 25.0
        a.plot(t, ex["ref"], label="reference (data engine)", lw=2)
        a.plot(t, ex["pred"], label=f"{gen} motion")
        if "video" in ex:
            v = ex["video"]
            a.plot(t[:len(v)], v / (np.nanmax(v) + 1e-9) * np.max(ex["ref"]), label="rendered aperture (scaled)")
        for f in ex["bilabials"]:
            a.axvline((f + 0.5) / 25.0, color="r", lw=0.6, alpha=0.5)
        a.set_title(f"openness, {ex['id']} (red: p/b/m)")
        a.set_xlabel("s")
        a.legend(fontsize=8)
    # 5 head stats
    a = ax[1, 1]
    hg, hd = result["head"]["generator"], result["head"]["data_engine"]
    names = ["yaw", "pitch", "roll"]
    x = np.arange(3)
    ht = result["head"].get("data_engine_train", hd)
    bars = [(hg, "std_deg", f"{gen} std (deg)"), (hd, "std_deg", "held-out data std"),
            (ht, "std_deg", "train-split data std"), (hg, "speed_deg_s", f"{gen} speed (deg/s)"),
            (hd, "speed_deg_s", "held-out data speed"), (ht, "speed_deg_s", "train-split data speed")]
    for k, (src, key, label) in enumerate(bars):
        a.bar(x + (k - 2.5) * 0.14, [src[n][key] for n in names], 0.14, label=label)
    a.set_xticks(x, names)
    a.set_title("head motion")
    a.legend(fontsize=8)
    # 6 blinks + summary text
    a = ax[1, 2]
    a.bar([0, 1, 2], [hg["blinks_per_min"], hd["blinks_per_min"], ht["blinks_per_min"]], color=["C0", "C1", "C2"])
    a.set_xticks([0, 1, 2], [gen, "held-out data", "train-split data"])
    a.set_title("blink rate (per minute)")
    mo = result["motion"]["overall"]
    txt = [f"motion: r={mo['corr']:.4f}  recall={mo['closure_recall']}  precision={mo['closure_precision']}  "
           f"offset={mo['offset_ms']} ms"]
    if result["rendered"]:
        ro = result["rendered"]["overall"]
        txt.append(f"video:  r={ro['corr']:.4f}  recall={ro['closure_recall']}  precision={ro['closure_precision']}  "
                   f"offset={ro['offset_ms']} ms")
    if result.get("rendered_reference"):
        rr = result["rendered_reference"]
        txt.append(f"video of the reference (ceiling): r={rr['corr']:.4f}  recall={rr['closure_recall']}  "
                   f"precision={rr['closure_precision']}")
    a.text(0.02, -0.22, "\n".join(txt), transform=a.transAxes, fontsize=9, family="monospace", va="top")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.benchmarks.harness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="baseline", help="a name from engine.generator's registry")
    ap.add_argument("--data", default="data/motion", help="built data set (built with the defaults if missing)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--max-utts", type=int, default=400, help="held-out utterances scored on motion")
    ap.add_argument("--render", type=int, default=12, help="held-out utterances rendered and re-detected (0: none)")
    ap.add_argument("--size", type=int, default=256, help="render size (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-reference", action="store_true",
                    help="also render the data engine's own motion of the rendered utterances and score it "
                         "(the rendered ceiling: what rendering and re-detection lose; doubles the render time)")
    ap.add_argument("--splits", nargs="+", default=list(HELDOUT), metavar="SPLIT",
                    help="the splits scored (default: both held-out splits)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from emote.engine.generator import available_generators
    if a.generator not in available_generators():
        ap.error(f"unknown generator {a.generator!r}; available: {', '.join(available_generators())}")
    if not (Path(a.data) / "manifest.json").is_file():
        from emote.engine.training.build_data import BuildConfig, build
        print(f"no data set in {a.data}: building it with the defaults (python -m emote.engine.training.build_data "
              f"--out {a.data})", file=sys.stderr)
        build(BuildConfig(out=a.data), progress=not a.quiet)
    res = evaluate(a.generator, a.data, a.max_utts, a.render, a.size, a.seed, splits=tuple(a.splits),
                   progress=not a.quiet, render_reference=a.render_reference)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"harness_{a.generator}.png"
    plot(res, png)
    res.pop("_example", None)
    js = out / f"harness_{a.generator}.json"
    js.write_text(json.dumps(res, indent=1))
    mo = res["motion"]["overall"]
    print(f"{a.generator}: motion  corr {mo['corr']:.3f} (mean over languages {mo['corr_mean_over_languages']}), "
          f"closure recall {mo['closure_recall']} precision {mo['closure_precision']}, offset {mo['offset_ms']} ms")
    if res["rendered"]:
        ro = res["rendered"]["overall"]
        print(f"{a.generator}: video   corr {ro['corr']:.3f}, closure recall {ro['closure_recall']} "
              f"precision {ro['closure_precision']}, offset {ro['offset_ms']} ms")
    if res["rendered_reference"]:
        rr, vv = res["rendered_reference"], res["rendered_vs_rendered_reference"]
        print(f"data engine's motion rendered (the ceiling): corr {rr['corr']:.3f}, closure recall "
              f"{rr['closure_recall']} precision {rr['closure_precision']}, offset {rr['offset_ms']} ms")
        print(f"{a.generator}: video against the reference's video (lip aperture against lip aperture): "
              f"corr {vv['corr']:.3f}, offset {vv['offset_ms']} ms")
    if res["sung"]:
        sg = res["sung"]
        print(f"{a.generator}: sung    {sg['notes']} sustained vowels: mouth open (>= half the reference) on "
              f"{sg['open_fraction'] * 100:.0f} % of their frames, median openness ratio {sg['open_ratio']}")
    hg, hd = res["head"]["generator"], res["head"]["data_engine"]
    print("head std/speed (deg, deg/s) generator vs data: " + ", ".join(
        f"{n} {hg[n]['std_deg']}/{hg[n]['speed_deg_s']} vs {hd[n]['std_deg']}/{hd[n]['speed_deg_s']}"
        for n in ("yaw", "pitch", "roll")) + f"; blinks/min {hg['blinks_per_min']} vs {hd['blinks_per_min']}")
    ht = res["head"]["data_engine_train"]
    print("data engine's train split (the population of head styles): " + ", ".join(
        f"{n} {ht[n]['std_deg']}/{ht[n]['speed_deg_s']}" for n in ("yaw", "pitch", "roll"))
        + f"; blinks/min {ht['blinks_per_min']}")
    print(f"wrote {js} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
