"""Phoneme timing on real speech.

* :func:`dtw_align` (every language): espeak-ng speaks the transcript (phoneme times exact, see
  engine.training.espeak) at a rate matched to the recording's speech duration; both signals
  become MFCC-like frames (10 ms hop, 25 ms window, 100-3800 Hz mel bands so 8 kHz telephone
  prompts and 22 kHz studio speech look alike, per-utterance mean/variance normalised, with
  deltas); dynamic time warping (steps (1,0), (0,1), (1,1)) between the speech spans maps every
  synthesis time to a recording time, and the phoneme boundaries go through that map.
* :func:`pocketsphinx_align` (English): CMU pocketsphinx 5 forced alignment (its en-US model
  ships in the wheel): word and phone segments.
* :func:`compare_words`: word-boundary differences between two alignments of the same text (the
  DTW is validated against pocketsphinx this way: ``python -m emote.engine.training.align``).
"""
from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from dataclasses import dataclass

import numpy as np

from . import espeak
from .espeak import Phone

__all__ = ["Alignment", "dtw_align", "pocketsphinx_align", "compare_words", "features", "dtw_path",
           "closure_dip", "closure_audit", "dtw_ceiling"]

HOP_S = 0.01


@dataclass
class Alignment:
    phonemes: list[Phone]                  # in the recording's time
    words: list[tuple[float, float, str]]  # (start, end, word) in the recording's time
    cost: float                            # mean DTW cost per path step (lower = better match)
    rate_wpm: int


# --------------------------------------------------------------------------------------------
# features and DTW
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _mel(sr: int, n_fft: int, n: int = 26, lo: float = 100.0, hi: float = 3800.0) -> np.ndarray:
    def m(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def f(mm):
        return 700.0 * (10 ** (mm / 2595.0) - 1.0)
    edges = f(np.linspace(m(lo), m(min(hi, 0.5 * sr - 1)), n + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n, freqs.size))
    for k in range(n):
        a, b, c = edges[k], edges[k + 1], edges[k + 2]
        fb[k] = np.clip(np.minimum((freqs - a) / (b - a), (c - freqs) / (c - b)), 0.0, None)
    return fb


@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n)


def _frames(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Power spectra (T, n_fft/2+1) at 10 ms hop, 25 ms Hann; and the frame energies (dB)."""
    hop, win = int(round(HOP_S * sr)), int(round(0.025 * sr))
    n_fft = 1 << int(math.ceil(math.log2(win)))
    x = np.concatenate([np.zeros(win // 2), np.asarray(x, np.float64), np.zeros(win)])
    n = max(1, (x.size - win) // hop)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    fr = x[idx] * _hann(win)[None, :]
    p = np.abs(np.fft.rfft(fr, n_fft, axis=1)) ** 2
    e = 10 * np.log10(np.mean(fr * fr, axis=1) + 1e-12)
    return p, e


def features(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 24) normalised cepstra + deltas at 10 ms; and frame energies (dB)."""
    p, e = _frames(x, sr)
    n_fft = (p.shape[1] - 1) * 2
    mel = np.log(p @ _mel(sr, n_fft).T + 1e-10)
    k = np.arange(mel.shape[1])
    dct = np.cos(np.pi / mel.shape[1] * (k[None, :] + 0.5) * np.arange(1, 13)[:, None])
    c = mel @ dct.T
    c = (c - c.mean(axis=0)) / (c.std(axis=0) + 1e-6)
    d = np.gradient(c, axis=0)
    d = d / (d.std(axis=0) + 1e-6)
    return np.hstack([c, 0.5 * d]), e


def speech_span(e_db: np.ndarray, floor_db: float = 35.0) -> tuple[int, int]:
    """First and last+1 frames whose energy is within floor_db of the loudest frame."""
    on = np.flatnonzero(e_db > np.max(e_db) - floor_db)
    if on.size == 0:
        return 0, e_db.size
    return int(on[0]), int(on[-1]) + 1


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """DTW between frame sequences a (N, d) and b (M, d) (Euclidean cost, steps (1,0), (0,1),
    (1,1)); returns the path as (K, 2) index pairs from (0, 0) to (N-1, M-1) and the mean cost."""
    N, M = a.shape[0], b.shape[0]
    c = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T), 0.0))
    D = np.empty((N, M))
    D[0] = np.cumsum(c[0])
    for i in range(1, N):
        prev = D[i - 1]
        via = c[i] + np.minimum(prev, np.concatenate([[np.inf], prev[:-1]]))   # vertical or diagonal
        S = np.cumsum(c[i])
        D[i] = S + np.minimum.accumulate(via - S)                              # ... or horizontal
    i, j = N - 1, M - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            k = int(np.argmin((D[i - 1, j - 1], D[i - 1, j], D[i, j - 1])))
            if k == 0:
                i, j = i - 1, j - 1
            elif k == 1:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    path_arr = np.array(path[::-1])
    return path_arr, float(D[N - 1, M - 1] / len(path_arr))


def _time_map(path: np.ndarray, off_a: int, off_b: int):
    """Piecewise-linear map: synthesis time (b) -> recording time (a), from a DTW path."""
    tb = (path[:, 1] + off_b) * HOP_S
    ta = (path[:, 0] + off_a) * HOP_S
    ub, inv = np.unique(tb, return_inverse=True)
    ua = np.zeros(ub.size)
    np.add.at(ua, inv, ta)
    ua /= np.bincount(inv)
    ua = np.maximum.accumulate(ua)
    return ub, ua


#: Reference voices used for a speaker of each sex: each is aligned to the recording and every
#: boundary is the median over them (an ensemble of references; one voice alone is noisier).
REFERENCE_VARIANTS = {"f": ("f1", "f2", "f4"), "m": ("m1", "m2", "m3")}


def dtw_align(x: np.ndarray, sr: int, text: str, voice: str, variant: str | None = None,
              rate_wpm: int | None = None, candidates: tuple[str, ...] | None = None) -> Alignment:
    """Phoneme and word times of ``text`` in the recording ``x`` (float, ``sr``), by DTW against
    espeak-ng's synthesis with ``voice``. Every variant of ``candidates`` (default: the reference
    variants of ``variant``'s sex) is aligned and the boundaries are their median."""
    fx, ex = features(x, sr)
    a0, a1 = speech_span(ex)
    rec_speech_s = (a1 - a0) * HOP_S
    if candidates is None:
        candidates = REFERENCE_VARIANTS.get((variant or "m")[0], (variant,)) if variant else (None,)
    if rate_wpm is None:
        probe = espeak.synthesize(text, voice, rate_wpm=170, variant=candidates[0])
        _, ep = _frames(probe.float_audio(), probe.sample_rate_hz)
        p0, p1 = speech_span(ep)
        syn_s = max((p1 - p0) * HOP_S, 0.05)
        rate_wpm = int(np.clip(170 * syn_s / max(rec_speech_s, 0.05), 80, 450))
    dur = x.size / sr
    runs = []
    for var in candidates:
        syn = espeak.synthesize(text, voice, rate_wpm=rate_wpm, variant=var)
        fs, es = features(syn.float_audio(), syn.sample_rate_hz)
        b0, b1 = speech_span(es)
        path, cost = dtw_path(fx[a0:a1], fs[b0:b1])
        to_rec = _mapper(path, a0, a1, b0, b1, dur)
        bounds = np.array([to_rec(p.start_s) for p in syn.phonemes])
        words = _word_spans(syn, to_rec)
        runs.append((cost, syn, bounds, words))
    runs.sort(key=lambda r: r[0])
    cost, syn, bounds, words = runs[0]
    same = [r for r in runs if [p.ipa for p in r[1].phonemes] == [p.ipa for p in syn.phonemes]
            and [w[2] for w in r[3]] == [w[2] for w in words]]
    if len(same) > 1:                      # an ensemble: the median over the reference voices
        bounds = np.median(np.stack([r[2] for r in same]), axis=0)
        words = [(float(np.median([r[3][k][0] for r in same])), float(np.median([r[3][k][1] for r in same])), w[2])
                 for k, w in enumerate(words)]
    bounds = list(bounds) + [dur]          # the first phoneme starts where the map puts it; the
    bounds = list(np.maximum.accumulate(np.clip(bounds, 0.0, dur)))   # silence before is a pause
    phones = [Phone(p.ipa, float(bounds[k]), float(bounds[k + 1])) for k, p in enumerate(syn.phonemes)
              if bounds[k + 1] > bounds[k]]
    if phones and phones[0].ipa != "_" and phones[0].start_s > 0:
        phones.insert(0, Phone("_", 0.0, phones[0].start_s))
    return Alignment(phones, words, cost, rate_wpm)


def _mapper(path: np.ndarray, a0: int, a1: int, b0: int, b1: int, dur: float):
    """Synthesis time -> recording time: the DTW map inside the speech spans; outside them,
    silence keeps its distance to the speech edge."""
    tb, ta = _time_map(path, a0, b0)
    b_start, b_end = b0 * HOP_S, b1 * HOP_S

    def to_rec(t: float) -> float:
        if t <= b_start:
            return max(0.0, a0 * HOP_S - (b_start - t))
        if t >= b_end:
            return min(dur, a1 * HOP_S + (t - b_end))
        return float(np.interp(t, tb, ta))
    return to_rec


def _word_spans(syn: espeak.Synthesis, to_rec) -> list[tuple[float, float, str]]:
    """Word (start, end) from the synthesis' phonemes: a word starts at its first phoneme (the
    first one starting at or after the word event) and ends where the next word starts or at a
    pause."""
    starts = []
    ph = syn.phonemes
    for t, w in syn.words:
        k = next((i for i, p in enumerate(ph) if p.start_s >= t - 1e-4 and p.ipa != "_"), None)
        if k is not None:
            starts.append((k, w))
    out = []
    for n, (k, w) in enumerate(starts):
        end_k = starts[n + 1][0] if n + 1 < len(starts) else len(ph)
        last = end_k - 1
        while last > k and ph[last].ipa == "_":
            last -= 1
        out.append((to_rec(ph[k].start_s), to_rec(ph[last].end_s), w))
    return out


# --------------------------------------------------------------------------------------------
# pocketsphinx
# --------------------------------------------------------------------------------------------

_ps_decoder = None
#: pocketsphinx frame i is the 25.6 ms window starting at i * 10 ms (centre i*10 + 12.8 ms): a
#: boundary before frame i lies between the centres of frames i-1 and i, at i*10 + 7.8 ms.
PS_OFFSET_S = 0.0078


def _normalise_words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split() if w.strip("'")]


def pocketsphinx_align(x16: np.ndarray, text: str) -> list[tuple[float, float, str, list[tuple[float, float, str]]]] | None:
    """Forced alignment of English ``text`` in 16 kHz audio: [(start, end, word, [(s, e, phone)...])],
    or None (a word outside the dictionary, or no alignment)."""
    global _ps_decoder
    from pocketsphinx import Decoder

    if _ps_decoder is None:
        _ps_decoder = Decoder(samprate=16000, loglevel="FATAL", bestpath=False)
    d = _ps_decoder
    words = _normalise_words(text)
    if not words or any(d.lookup_word(w) is None for w in words):
        return None
    pcm = (np.clip(x16, -1, 1) * 32767).astype(np.int16).tobytes()
    try:
        d.set_align_text(" ".join(words))          # pass 1: word alignment
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()                          # pass 2: phone and state alignment
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        al = d.get_alignment()
    except (RuntimeError, ValueError):
        return None
    if al is None:
        return None
    out = []
    for w in al:
        if w.name in ("<s>", "</s>", "<sil>", "[NOISE]"):
            continue
        phones = [(p.start * HOP_S + PS_OFFSET_S, (p.start + p.duration) * HOP_S + PS_OFFSET_S, p.name) for p in w]
        out.append((w.start * HOP_S + PS_OFFSET_S, (w.start + w.duration) * HOP_S + PS_OFFSET_S,
                    re.sub(r"\(\d+\)$", "", w.name), phones))
    return out or None


def compare_words(a: list[tuple[float, float, str]], b: list[tuple[float, float, str]],
                  skip_edges: bool = True) -> list[float]:
    """|boundary differences| (s) between two word alignments of the same text: start and end of
    every word matched in order (by its normalised spelling). With ``skip_edges`` the first
    word's start and the last word's end are left out (pocketsphinx's forced alignment has no
    leading or trailing silence: its first word starts at the file's first sample)."""
    na = [" ".join(_normalise_words(w[2])) for w in a]
    nb = [" ".join(_normalise_words(w[2])) for w in b]
    diffs = []
    sm = difflib.SequenceMatcher(a=na, b=nb, autojunk=False)
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            ia, ib = blk.a + k, blk.b + k
            wa, wb = a[ia], b[ib]
            if not (skip_edges and (ia == 0 or ib == 0)):
                diffs.append(abs(wa[0] - wb[0]))
            if not (skip_edges and (ia == len(a) - 1 or ib == len(b) - 1)):
                diffs.append(abs(wa[1] - wb[1]))
    return diffs


def validate_english(max_utts: int = 200, progress: bool = True) -> dict:
    """DTW vs pocketsphinx word boundaries on the English asterisk prompts."""
    from . import corpora
    from emote.engine.audio import load_audio

    items = [it for it in corpora.asterisk_items("en")][:max_utts]
    diffs, per_utt, used, skipped = [], [], 0, 0
    for k, it in enumerate(items):
        x16 = load_audio(it.path, 16000)
        ps = pocketsphinx_align(x16, it.text)
        if ps is None:
            skipped += 1
            continue
        al = dtw_align(x16, 16000, it.text, "en-us", variant="f2")
        d = compare_words(al.words, [(s, e, w) for s, e, w, _ in ps])
        if not d:
            skipped += 1
            continue
        used += 1
        diffs += d
        per_utt.append(float(np.median(d)))
        if progress and k % 25 == 0:
            print(f"  {k}/{len(items)} median so far {1000 * np.median(diffs):.1f} ms", file=sys.stderr)
    arr = np.array(diffs)
    return {"utterances": used, "skipped": skipped, "boundaries": int(arr.size),
            "median_ms": round(float(np.median(arr)) * 1000, 1) if arr.size else None,
            "mean_ms": round(float(np.mean(arr)) * 1000, 1) if arr.size else None,
            "p90_ms": round(float(np.percentile(arr, 90)) * 1000, 1) if arr.size else None,
            "within_50ms": round(float(np.mean(arr <= 0.05)), 3) if arr.size else None}


#: pocketsphinx's (CMU ARPAbet) bilabial phones
PS_BILABIALS = ("P", "B", "M")


def bilabial_offsets(data: str, max_utts: int = 150) -> dict:
    """Mid-times of the bilabials (p, b, m) in a built data set's English real speech (the data
    engine's DTW phonemes) against pocketsphinx's phone alignment of the same audio: how far the
    harness's reference closures can be from the audio's. Utterances whose bilabial counts differ
    between the two are left out."""
    from .shards import open_dataset
    from .visemes import is_bilabial

    errs, used = [], 0
    for u in open_dataset(data).utterances(with_audio=True, where=lambda m: m.get("source") == "asterisk-en"):
        ps = pocketsphinx_align(u.float_audio(), u.meta["text"])
        if ps is None:
            continue
        a = [0.5 * (s + e) for _, _, _, ph in ps for s, e, p in ph if p in PS_BILABIALS]
        b = [0.5 * (s + e) for p, s, e in u.phonemes if is_bilabial(p)]
        if not a or len(a) != len(b):
            continue
        errs += list(np.array(b) - np.array(a))
        used += 1
        if used >= max_utts:
            break
    e = np.abs(np.array(errs)) * 1000.0
    if not e.size:
        return {"utterances": 0}
    return {"utterances": used, "bilabials": int(e.size), "median_ms": round(float(np.median(e)), 1),
            "p75_ms": round(float(np.percentile(e, 75)), 1), "p90_ms": round(float(np.percentile(e, 90)), 1),
            "within_40ms": round(float(np.mean(e <= 40.0)), 3), "within_60ms": round(float(np.mean(e <= 60.0)), 3),
            "mean_signed_ms": round(float(np.mean(errs)) * 1000.0, 1)}


#: shifts of the closure audit (s): -300 ms to +300 ms in 20 ms steps
AUDIT_SHIFTS_S = tuple(np.round(np.arange(-0.3, 0.3001, 0.02), 3))


def closure_dip(audio: np.ndarray, sr: int, phonemes, shifts_s=AUDIT_SHIFTS_S, half_window_s: float = 0.02,
                hop_s: float = 0.005) -> np.ndarray:
    """Energy at an utterance's bilabials, from its audio alone: for each bilabial (p, b, m) of
    ``phonemes`` [(ipa, start_s, end_s)] and each shift, the lowest frame energy (dB, ``hop_s``
    frames) within +-``half_window_s`` of the bilabial's mid-time + shift, minus the utterance's
    median frame energy. (n_bilabials, n_shifts) float64; NaN where the window leaves the audio.
    The lips shut the sound off at a bilabial, so labels that are right dip near shift 0."""
    from .visemes import is_bilabial
    x = np.asarray(audio, np.float64)
    hop = max(1, int(round(hop_s * sr)))
    n = x.size // hop
    e = 10.0 * np.log10(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    voiced = e[e > -90.0]
    med = float(np.median(voiced)) if voiced.size else 0.0
    rows = []
    for p, s0, s1 in phonemes:
        if not is_bilabial(p):
            continue
        mid = 0.5 * (s0 + s1)
        row = []
        for sh in shifts_s:
            a, b = int(round((mid + sh - half_window_s) / hop_s)), int(round((mid + sh + half_window_s) / hop_s))
            row.append(e[a:b].min() - med if 0 <= a and b <= n and b > a else np.nan)
        rows.append(row)
    return np.array(rows, np.float64).reshape(len(rows), len(shifts_s))


def closure_audit(data: str, max_utts_per_speaker: int = 150) -> dict:
    """Are a built data set's phoneme labels where the audio says? Per speaker (real speakers by
    name, every espeak-ng voice pooled as "espeak-ng"): the median over bilabials of
    :func:`closure_dip` per shift, the dip at shift 0, and its depth below the profile's highest
    point within +-120 ms, the neighbouring vowel ("contrast", dB; negative = a dip at the
    label). Exact labels (espeak-ng) give about -9 dB; labels at chance give about -1 dB (the
    fillets-ng dialogue's DTW labels: -0.7 to -2.4). Needs the audio in the shards."""
    from .shards import open_dataset
    rows: dict[str, list[np.ndarray]] = {}
    count: dict[str, int] = {}
    for u in open_dataset(data).utterances(with_audio=True):
        if u.audio is None:
            continue
        key = u.meta.get("speaker", "?") if u.meta.get("timing") == "dtw" else str(u.meta.get("source", "?"))
        if count.get(key, 0) >= max_utts_per_speaker:
            continue
        count[key] = count.get(key, 0) + 1
        d = closure_dip(u.float_audio(), 16000, u.phonemes)
        if d.size:
            rows.setdefault(key, []).append(d)
    sh = np.array(AUDIT_SHIFTS_S)
    near = np.abs(sh) <= 0.12 + 1e-9
    at0 = int(np.argmin(np.abs(sh)))
    out = {}
    for key, r in sorted(rows.items()):
        prof = np.nanmedian(np.concatenate(r), axis=0)
        out[key] = {"utterances": count[key], "bilabials": int(sum(len(x) for x in r)),
                    "dip_at_label_db": round(float(prof[at0]), 1),
                    "contrast_db": round(float(prof[at0] - np.nanmax(prof[near])), 1),
                    "profile_db": [round(float(v), 1) for v in prof]}
    return {"shifts_ms": [int(round(s * 1000)) for s in sh], "speakers": out}


def dtw_ceiling(data: str, source: str = "festival", max_utts: int = 120, band_hz: int | None = None) -> dict:
    """How a perfect model would score against DTW references: utterances of ``source`` (exact
    labels: "festival" or "espeak-ng"; English ones only, as DTW needs a transcript's voice) are
    aligned again by :func:`dtw_align` (audio band-limited to ``band_hz`` * 2 sample rate first,
    e.g. 4000 for telephone speech); the targets made from the exact labels are then scored, as
    the harness scores a generator (benchmarks/harness.py), against the targets made from the DTW
    labels. Also the bilabial mid-time errors (ms)."""
    from emote.benchmarks.harness import ClosureTally, bilabial_frames, openness, speech_frames

    from . import targets as TG
    from .build_data import speaker_style
    from .shards import open_dataset
    from .visemes import is_bilabial
    tally = ClosureTally()
    ops, refs, errs, used = [], [], [], 0
    want = lambda m: m.get("source") == source and m.get("language") == "en" and m.get("timing") == "exact"  # noqa: E731
    for u in open_dataset(data).utterances(with_audio=True, where=want):
        if used >= max_utts:
            break
        x = u.float_audio()
        if band_hz:
            import soxr
            x = soxr.resample(soxr.resample(x, 16000, 2 * band_hz), 2 * band_hz, 16000).astype(np.float32)[:x.size]
        variant = "f2" if u.meta.get("speaker", "").endswith(("slt", "f1", "f2", "f3", "f4", "f5")) else "m2"
        al = dtw_align(x, 16000, u.meta["text"], "en-us", variant)
        style, n = speaker_style(u.meta["speaker"], 0), len(u.features)
        exact = [Phone(p, s0, s1) for p, s0, s1 in u.phonemes]
        te = TG.make_targets(exact, u.features, 25.0, style, np.random.default_rng(0))
        td = TG.make_targets(al.phonemes, u.features, 25.0, style, np.random.default_rng(0))
        dph = [(p.ipa, p.start_s, p.end_s) for p in al.phonemes]
        sp, bil = speech_frames(dph, n, 25.0), bilabial_frames(dph, n, 25.0)
        po = openness(te)
        tally.add(po, sp, bil)
        ops.append(po)
        refs.append(openness(td))
        a = [0.5 * (s0 + s1) for p, s0, s1 in u.phonemes if is_bilabial(p)]
        b = [0.5 * (p.start_s + p.end_s) for p in al.phonemes if is_bilabial(p.ipa)]
        if len(a) == len(b):
            errs += list(np.abs(np.array(a) - np.array(b)) * 1000.0)
        used += 1
    if not used:
        return {"utterances": 0}
    e = np.array(errs)
    return {"utterances": used, "source": source, "band_hz": band_hz,
            "corr": round(float(np.corrcoef(np.concatenate(ops), np.concatenate(refs))[0, 1]), 4),
            "closure_recall": round(tally.recall, 4), "closure_precision": round(tally.precision, 4),
            "bilabial_error_median_ms": round(float(np.median(e)), 1) if e.size else None,
            "bilabial_within_40ms": round(float(np.mean(e <= 40.0)), 3) if e.size else None}


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.align",
                                 description="DTW alignment vs pocketsphinx on English real speech")
    ap.add_argument("--max-utts", type=int, default=200)
    ap.add_argument("--bilabials", metavar="DATA",
                    help="instead: bilabial mid-times of a built data set's English real speech vs pocketsphinx")
    ap.add_argument("--closure-audit", metavar="DATA",
                    help="instead: the energy at every speaker's labelled bilabials (closure_audit), any language")
    ap.add_argument("--dtw-ceiling", metavar="DATA",
                    help="instead: a perfect model's scores against DTW references (dtw_ceiling), on Festival speech")
    ap.add_argument("--source", default="festival", help="with --dtw-ceiling: festival or espeak-ng")
    ap.add_argument("--band-hz", type=int, default=None, help="with --dtw-ceiling: band-limit the audio first")
    a = ap.parse_args()
    if a.dtw_ceiling:
        print(json.dumps(dtw_ceiling(a.dtw_ceiling, a.source, a.max_utts, a.band_hz), indent=1))
    elif a.closure_audit:
        res = closure_audit(a.closure_audit, a.max_utts)
        for spk, v in res["speakers"].items():
            print(f"{spk:28s} {v['bilabials']:5d} bilabials: {v['dip_at_label_db']:+6.1f} dB at the label, "
                  f"contrast {v['contrast_db']:+5.1f} dB")
        print(json.dumps(res))
    else:
        print(json.dumps(bilabial_offsets(a.bilabials, a.max_utts) if a.bilabials else validate_english(a.max_utts),
                         indent=1))
