"""Build the motion data set: ``python -m emote.engine.training.build_data --out data/motion``.

One command, reproducible from ``--seed``: the same seed and options give the same shards,
whatever ``--workers`` is (every utterance draws from its own seed sequence, and the shards'
contents are fixed by the plan, not by the scheduling).

Sources (see docs/data_engine.md):

* ``syn``: espeak-ng speech in ~50 languages (engine.training.text), 18 synthetic speakers
  (espeak voice variants x pitch), phoneme times exact (engine.training.espeak);
  variants: normal, rapid (x1.5-2.5), quiet, whispered, sung; the microphone augmentation
  chain on a share of them;
* ``asterisk``: Debian's asterisk-core-sounds-{en,es,fr,it,ru}-wav prompts (8 kHz, one voice
  per language) with their transcripts; ``fillets``: fillets-ng-data-{cs,nl} dialogue (22 kHz,
  several actors); phoneme times by DTW against espeak-ng's synthesis of the same text
  (engine.training.align). Skipped (with a note) when the packages are not installed. By default
  only engine.training.corpora.DEFAULT_SOURCES: the fillets dialogue's labels fail the closure
  audit (``python -m emote.engine.training.align --closure-audit DATA``: no energy dip at its
  bilabials, the labels are at chance), so it is opt-in (``--real-sources``);
* ``festival``: English, Czech, Finnish and Catalan sentences spoken by Festival's voices made
  from real speakers' recordings (diphone and HTS voices; engine.training.festival), phoneme
  times exact, ``--festival-hours`` of them spread evenly over the installed voices (10 with
  ``scripts/setup.sh --data``).

Splits: ``heldout_language`` (every utterance in HELDOUT_LANGUAGES), ``heldout_speaker``
(synthetic speakers with held-out voice variants, and the held-out real speakers), ``train``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emote.engine import motion as M
from emote.engine.audio import AudioSettings, FeatureStream

from .retarget import TARGETS_VERSION
from . import espeak, targets as TG, text as TX
from .shards import SPLITS, Utterance, write_shard

__all__ = ["BuildConfig", "SPEAKERS", "HELDOUT_LANGUAGES", "HELDOUT_REAL_SPEAKERS", "plan", "build", "main",
           "make_synthetic"]

SR = 16000
FPS = 25.0
HELDOUT_LANGUAGES = ("it", "hu", "sw", "ta", "vi")
#: Real speakers held out (their languages stay in training through other speakers).
HELDOUT_REAL_SPEAKERS = ("asterisk-fr-June", "fillets-nl-small")


@dataclass(frozen=True)
class Speaker:
    id: str
    variant: str
    pitch: int
    pitch_range: int
    heldout: bool = False


def _speakers() -> tuple[Speaker, ...]:
    held = {"m7", "f4", "klatt3"}
    out = []
    pitches = {"m": (35, 55), "f": (55, 75)}
    k = 0
    for v in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
              "croak"):
        lo, hi = pitches.get(v[0], (40, 65))
        for j, pitch in enumerate((lo, hi) if v in ("m2", "f2") else ((lo + hi) // 2,)):
            out.append(Speaker(f"syn{k:02d}-{v}", v, pitch, 40 + 10 * j + (k % 3) * 8, v in held))
            k += 1
    return tuple(out)


SPEAKERS = _speakers()


@dataclass
class BuildConfig:
    out: str = "data/motion"
    seed: int = 0
    hours_synthetic: float = 6.0       # espeak-ng speech (before the real sources are added)
    languages: tuple[str, ...] = tuple(l.code for l in TX.LANGUAGES)
    real: bool = True                  # the real sources and Festival, when installed
    real_max_per_source: int | None = None
    real_sources: tuple[str, ...] | None = None   # None: corpora.DEFAULT_SOURCES
    festival_hours: float = 4.0        # Festival's voices, all installed (0: none; skipped when not installed)
    audio: str = "all"                 # all | heldout | none: which utterances keep their audio
    workers: int = 2
    utts_per_shard: int = 48
    p_rapid: float = 0.12
    p_quiet: float = 0.07
    p_whisper: float = 0.07
    p_sing: float = 0.06
    p_augment: float = 0.35
    p_telephone: float = 0.3           # espeak-ng and Festival speech through the telephone channel
    sentences_per_utt: tuple[int, int] = (1, 3)
    resume: bool = False               # keep shard files already written by an interrupted build
    words_per_sentence: tuple[int, int] = (4, 14)


def split_of(language: str, speaker_heldout: bool) -> str:
    if language in HELDOUT_LANGUAGES:
        return "heldout_language"
    return "heldout_speaker" if speaker_heldout else "train"


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------

_MEAN_UTT_S = 9.0   # measured mean duration of a synthetic utterance with the defaults


def plan(cfg: BuildConfig) -> list[dict]:
    """All jobs (dicts), in shard order. A pure function of the config."""
    jobs: list[dict] = []
    langs = [l for l in cfg.languages]
    n_per_lang = max(1, int(math.ceil(cfg.hours_synthetic * 3600.0 / _MEAN_UTT_S / max(1, len(langs)))))
    for li, lang in enumerate(langs):
        TX.language(lang)   # validates
        rng = np.random.default_rng([cfg.seed, 1, li])
        spk = rng.integers(len(SPEAKERS), size=n_per_lang)
        n_sent = rng.integers(cfg.sentences_per_utt[0], cfg.sentences_per_utt[1] + 1, size=n_per_lang)
        sents = iter(TX.sentences(lang, int(n_sent.sum()), cfg.seed * 7919 + li, cfg.words_per_sentence))
        for i in range(n_per_lang):
            s = SPEAKERS[int(spk[i])]
            text = " ".join(next(sents) for _ in range(int(n_sent[i])))
            jobs.append({"kind": "syn", "lang": lang, "speaker": s.id, "index": i, "text": text,
                         "split": split_of(lang, s.heldout), "seed": [cfg.seed, 2, li, i]})
    if cfg.real:
        from . import corpora
        sources = corpora.DEFAULT_SOURCES if cfg.real_sources is None else tuple(cfg.real_sources)
        for job in corpora.plan_real(cfg.seed, cfg.real_max_per_source, sources=sources):
            job["split"] = split_of(job["lang"], job["speaker"] in HELDOUT_REAL_SPEAKERS)
            jobs.append(job)
    if cfg.real and cfg.festival_hours > 0:     # voices made of real speakers' recordings
        from . import festival
        for job in festival.plan_festival(cfg.seed, cfg.festival_hours):
            job["split"] = split_of(job["lang"], False)
            jobs.append(job)
    order = {s: i for i, s in enumerate(SPLITS)}
    jobs.sort(key=lambda j: (order[j["split"]], j["kind"], j["lang"], j["index"]))
    return jobs


# --------------------------------------------------------------------------------------------
# one utterance
# --------------------------------------------------------------------------------------------

_SPK = {s.id: s for s in SPEAKERS}


def speaker_style(speaker_id: str, seed: int) -> TG.Style:
    """A speaker's motion style: the same for every utterance of that speaker."""
    return TG.draw_style(np.random.default_rng([seed, 3, sum(ord(c) * (i + 1) for i, c in enumerate(speaker_id))]))


def features_of(x16: np.ndarray) -> np.ndarray:
    fs = FeatureStream(AudioSettings(sample_rate_hz=SR, fps=FPS))
    fs.push(x16)
    return np.concatenate([fs.pull(), fs.finish()])


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    import soxr
    if sr == SR:
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), sr, SR).astype(np.float32)


def finish_utterance(meta: dict, clean16: np.ndarray, phones: list[espeak.Phone], style: TG.Style,
                     rng: np.random.Generator, effort: float, augment_p: float, keep_audio: bool,
                     telephone_p: float = 0.0) -> Utterance:
    """Augment (maybe: the microphone chain with probability ``augment_p``, or else the telephone
    channel with ``telephone_p``, drawn first, from a generator seeded by the utterance id),
    compute features and targets, pack an Utterance."""
    from . import variants as VA

    clean16 = _quantize(clean16)          # the stored int16 audio is exactly what features saw
    clean_feats = features_of(clean16)
    x, aug = clean16, None
    trng = np.random.default_rng([zlib.crc32(meta["id"].encode()), 7])
    if telephone_p > 0 and trng.random() < telephone_p:
        x, aug = _quantize(VA.telephone(clean16, SR, trng)), {"telephone": True}
    elif rng.random() < augment_p:
        chain = VA.draw_augmentation(rng)
        x, aug = _quantize(VA.augment(clean16, SR, chain, rng)), chain.as_dict()
    feats = clean_feats if aug is None else features_of(x)
    if aug is not None:
        meta["augmentation"] = aug
    targ = TG.make_targets(phones, clean_feats, FPS, style, rng, effort)
    meta["duration_s"] = round(x.size / SR, 4)
    meta["frames"] = int(feats.shape[0])
    meta["phonemes"] = [[p.ipa, round(p.start_s, 5), round(p.end_s, 5)] for p in phones]
    meta["effort"] = round(float(effort), 3)
    audio = np.round(x * 32768.0).astype(np.int16) if keep_audio else None
    return Utterance(meta, feats.astype(np.float32), targ.astype(np.float32), audio)


def _quantize(x: np.ndarray) -> np.ndarray:
    """float32 audio rounded to the int16 grid (as a 16-bit WAV would carry it)."""
    q = np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767)
    return (q / 32768.0).astype(np.float32)


def _pad(x: np.ndarray, sr: int, phones: list[espeak.Phone], before_s: float, after_s: float):
    a, b = int(before_s * sr), int(after_s * sr)
    y = np.concatenate([np.zeros(a, np.float32), x.astype(np.float32), np.zeros(b, np.float32)])
    sh = a / sr
    ph = [espeak.Phone(p.ipa, p.start_s + sh, p.end_s + sh) for p in phones]
    if ph and ph[0].ipa == "_":
        ph[0] = espeak.Phone("_", 0.0, ph[0].end_s)
    elif a:
        ph.insert(0, espeak.Phone("_", 0.0, sh))
    end = y.size / sr
    if ph and ph[-1].ipa == "_":
        ph[-1] = espeak.Phone("_", ph[-1].start_s, end)
    elif b:
        ph.append(espeak.Phone("_", ph[-1].end_s, end))
    return y, ph


def _have_parselmouth() -> bool:
    try:
        import parselmouth  # noqa: F401
    except ImportError:
        return False
    return True


def make_synthetic(job: dict, cfg: BuildConfig) -> Utterance:
    rng = np.random.default_rng(job["seed"])
    lang = TX.language(job["lang"])
    spk = _SPK[job["speaker"]]
    text = job["text"]
    u = rng.random()
    cut = np.cumsum([cfg.p_rapid, cfg.p_quiet, cfg.p_whisper, cfg.p_sing])
    variant = "normal"
    for name, c in zip(("rapid", "quiet", "whisper", "sung"), cut):
        if u < c:
            variant = name
            break
    if variant == "sung" and not _have_parselmouth():
        variant = "normal"                       # singing needs praat-parselmouth (the train extra)
    rate = float(rng.uniform(135, 195))
    if variant == "rapid":
        rate = min(450.0, rate * float(rng.uniform(1.5, 2.5)))
    voice_variant = spk.variant
    if variant == "whisper":
        voice_variant = "whisperf" if spk.variant.startswith("f") else "whisper"
    syn = espeak.synthesize(text, lang.voice, rate_wpm=int(rate), pitch=spk.pitch, pitch_range=spk.pitch_range,
                            variant=voice_variant)
    x, sr, phones = syn.float_audio(), syn.sample_rate_hz, syn.phonemes
    info: dict = {}
    effort = float(rng.uniform(0.9, 1.1))
    if variant == "sung":
        from . import variants as VA
        x, phones, info = VA.sing(x, sr, phones, rng)
        effort = float(rng.uniform(1.05, 1.25))
    elif variant == "rapid":
        effort = float(rng.uniform(0.75, 0.9))
    elif variant == "whisper":
        effort = float(rng.uniform(0.7, 0.9))
    elif variant == "quiet":
        effort = float(rng.uniform(0.55, 0.75))
    x, phones = _pad(x, sr, phones, float(rng.uniform(0.1, 0.8)), float(rng.uniform(0.1, 0.8)))
    x16 = _resample(x, sr)
    if variant == "quiet":
        gain = float(rng.uniform(-32, -18))
        x16 = (x16 * 10 ** (gain / 20)).astype(np.float32)
        info["gain_db"] = round(gain, 1)
    meta = {"id": f"syn-{lang.code}-{job['index']:05d}", "split": job["split"], "language": lang.code,
            "speaker": spk.id, "source": "espeak-ng", "voice": syn.voice, "variant": variant,
            "rate_wpm": int(rate), "text": text, "timing": "exact"}
    if info:
        meta["variant_info"] = info
    style = speaker_style(spk.id, 0)
    keep = cfg.audio == "all" or (cfg.audio == "heldout" and job["split"] != "train")
    return finish_utterance(meta, x16, phones, style, rng, effort, cfg.p_augment, keep, cfg.p_telephone)


def make_utterance(job: dict, cfg: BuildConfig) -> Utterance | None:
    if job["kind"] == "syn":
        return make_synthetic(job, cfg)
    if job["kind"] == "festival":
        from . import festival
        return festival.make_festival(job, cfg)
    from . import corpora
    return corpora.make_real(job, cfg)


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------

def _do_shard(args) -> dict:
    """One shard, in a fresh process: libespeak-ng keeps state between syntheses (its pitch
    flutter runs on, its noise uses rand()), so a shard is reproducible only from a fresh
    library with a fixed rand() seed and a fixed order of utterances."""
    import ctypes

    k, jobs, cfg = args
    path = Path(cfg.out) / f"shard-{k:05d}.npz"
    if cfg.resume and path.is_file():            # written by an interrupted build of the same plan
        return _summary_of(path)
    ctypes.CDLL(None).srand(k)
    utts, skipped = [], []
    for job in jobs:
        try:
            u = make_utterance(job, cfg)
        except Exception as e:     # one bad utterance never stops a build; it is reported
            skipped.append({"job": {key: v for key, v in job.items() if key != "seed"}, "error": f"{type(e).__name__}: {e}"})
            continue
        if u is None:
            skipped.append({"job": {key: v for key, v in job.items() if key != "seed"}, "error": "no alignment"})
            continue
        utts.append(u)
    summary = write_shard(path, utts)
    summary["splits"] = sorted({u.meta["split"] for u in utts})
    summary["skipped"] = skipped
    summary["stats"] = [{key: u.meta[key] for key in ("split", "language", "speaker", "source", "variant",
                                                      "duration_s")} for u in utts]
    return summary


def _summary_of(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        metas = json.loads(str(z["meta"]))
        frames = int(z["frame_offsets"][-1])
    return {"file": path.name, "utterances": len(metas), "frames": frames,
            "seconds": float(sum(m["duration_s"] for m in metas)), "splits": sorted({m["split"] for m in metas}),
            "skipped": [], "resumed": True,
            "stats": [{key: m[key] for key in ("split", "language", "speaker", "source", "variant", "duration_s")}
                      for m in metas]}


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Build the data set into cfg.out; returns the manifest (also written to manifest.json)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        for old in out.glob("shard-*.npz"):
            old.unlink()
    jobs = plan(cfg)
    shards = [(k, jobs[i:i + cfg.utts_per_shard], cfg) for k, i in enumerate(range(0, len(jobs), cfg.utts_per_shard))]
    results: list[dict] = []
    import multiprocessing as mp
    ctx = mp.get_context("forkserver")          # children never inherit an used libespeak-ng
    ctx.set_forkserver_preload(["emote.engine.training.targets", "emote.engine.training.variants",
                                "emote.engine.training.shards"])
    with ctx.Pool(max(1, cfg.workers), maxtasksperchild=1) as pool:
        for r in _progress(pool.imap(_do_shard, shards), len(shards), progress):
            results.append(r)
    stats = [s for r in results for s in r.pop("stats")]
    skipped = [s for r in results for s in r.pop("skipped")]
    manifest = {
        "format": "emote-motion-shards/1",
        "targets_version": TARGETS_VERSION,
        "config": asdict(cfg),
        "fps": FPS, "sample_rate_hz": SR,
        "feature_names": list(FeatureStream(AudioSettings(sample_rate_hz=SR, fps=FPS)).names),
        "channel_names": list(M.NAMES),
        "heldout_languages": list(HELDOUT_LANGUAGES),
        "heldout_speakers": [s.id for s in SPEAKERS if s.heldout] + list(HELDOUT_REAL_SPEAKERS),
        "shards": results,
        "totals": _totals(stats),
        "skipped": skipped,
        "build_seconds": round(time.perf_counter() - t0, 1),
        "resumed_shards": sum(1 for r in results if r.pop("resumed", False)),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def _totals(stats: list[dict]) -> dict:
    def hours(key: str) -> dict:
        d: dict[str, float] = {}
        for s in stats:
            d[s[key]] = d.get(s[key], 0.0) + s["duration_s"] / 3600.0
        return {k: round(v, 4) for k, v in sorted(d.items())}
    return {"utterances": len(stats), "hours": round(sum(s["duration_s"] for s in stats) / 3600.0, 4),
            "languages": len({s["language"] for s in stats}), "speakers": len({s["speaker"] for s in stats}),
            "hours_by_split": hours("split"), "hours_by_source": hours("source"),
            "hours_by_variant": hours("variant"), "hours_by_language": hours("language")}


def _progress(it, total: int, on: bool):
    if not on:
        return it
    from tqdm import tqdm
    return tqdm(it, total=total, unit="shard", desc="build", file=sys.stderr)


def _all_sources() -> tuple[str, ...]:
    from .corpora import SOURCES
    return SOURCES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.build_data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/motion", help="output folder (default data/motion, git-ignored)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hours", type=float, default=6.0, help="hours of synthetic speech (real speech comes on top)")
    ap.add_argument("--languages", nargs="*", default=None, help="language codes (default: all; see text.LANGUAGES)")
    ap.add_argument("--no-real", action="store_true", help="espeak-ng speech only (no real sources, no Festival)")
    ap.add_argument("--real-max", type=int, default=None, help="at most this many utterances per real source")
    ap.add_argument("--real-sources", nargs="+", default=None, metavar="SOURCE",
                    help="real sources to use (default: those whose labels pass the closure audit; "
                         "all: " + " ".join(_all_sources()) + ")")
    ap.add_argument("--festival-hours", type=float, default=4.0,
                    help="hours of Festival speech, spread evenly over its installed voices (English, Czech, "
                         "Finnish, Catalan; default 4; 0: none; skipped if Festival is not installed)")
    ap.add_argument("--audio", choices=("all", "heldout", "none"), default="all", help="which utterances keep audio")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tiny", action="store_true", help="a few seconds' build for tests (3 languages, ~2 min of audio)")
    ap.add_argument("--resume", action="store_true", help="keep the shards an interrupted build (same options) wrote")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    cfg = BuildConfig(out=a.out, seed=a.seed, hours_synthetic=a.hours, real=not a.no_real,
                      real_max_per_source=a.real_max, audio=a.audio, workers=a.workers, resume=a.resume,
                      real_sources=tuple(a.real_sources) if a.real_sources else None,
                      festival_hours=a.festival_hours)
    if a.languages:
        cfg.languages = tuple(a.languages)
    if a.tiny:
        cfg.languages = tuple(a.languages or ("en", "de", "it"))
        cfg.hours_synthetic = 0.03
        cfg.utts_per_shard = 8
        cfg.real_max_per_source = 2 if a.real_max is None else a.real_max
        cfg.festival_hours = min(cfg.festival_hours, 0.005)
    m = build(cfg, progress=not a.quiet)
    t = m["totals"]
    print(f"{t['utterances']} utterances, {t['hours']:.2f} h, {t['languages']} languages, {t['speakers']} speakers "
          f"in {m['build_seconds']:.0f} s -> {cfg.out}")
    print("hours by split: " + ", ".join(f"{k} {v:.2f}" for k, v in t["hours_by_split"].items()))
    if m["skipped"]:
        print(f"skipped {len(m['skipped'])} utterances (see manifest.json 'skipped')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
