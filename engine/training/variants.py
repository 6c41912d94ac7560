"""Variants of an utterance (singing) and augmentations for the live microphone path.

All of them keep the phoneme times true for the audio they return:

* :func:`sing`: vowels stretched (x1.5..4, longer at phrase ends) and an f0 melody imposed
  (notes of a major or minor scale, one per vowel, glides on consonants, vibrato on long notes)
  by Praat's overlap-add resynthesis (praat-parselmouth). The phoneme times are mapped through
  the same duration tier Praat applies (the integral of the piecewise-linear relative duration).
* rapid speech, whisper: done at synthesis (espeak-ng rate, the "whisper" variants): exact.
* :func:`telephone`: a narrow-band telephone channel (300-3400 Hz, 8 kHz, G.711 mu-law), as the
  real voices' recordings (Asterisk's prompts) came through: exact-labelled speech in their band.
* :func:`augment`: gain, band limits, room reverb (synthetic exponentially decaying impulse
  response, direct path at 0), additive noise (white, pink, brown, hum) at 0-30 dB SNR, source
  sample rate (8/16/48 kHz round trip), Opus round trip through PyAV (Ogg: pre-skip handled,
  so no shift). Filters are zero-phase; nothing shifts the audio in time.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import signal

from . import visemes as V
from .espeak import Phone

__all__ = ["sing", "augment", "Augmentation", "draw_augmentation", "warp_phones", "telephone"]


# --------------------------------------------------------------------------------------------
# singing
# --------------------------------------------------------------------------------------------

def _tier_points(phones: list[Phone], factors: list[float], ramp: float = 0.005) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for p, f in zip(phones, factors):
        a, b = p.start_s, p.end_s
        r = min(ramp, 0.25 * (b - a))
        pts.append((a + r, f))
        pts.append((b - r, f))
    return pts


def _warp(points: list[tuple[float, float]], t_max: float, grid_hz: float = 4000.0):
    """New time of each original time under a Praat DurationTier (linear interpolation between
    points, constant outside): t' = integral_0^t d. Returns (t grid, t' grid)."""
    tp = np.array([p[0] for p in points])
    dp = np.array([p[1] for p in points])
    t = np.arange(int(math.ceil(t_max * grid_hz)) + 1) / grid_hz
    d = np.interp(t, tp, dp)
    tn = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) / grid_hz)])
    return t, tn


def warp_phones(phones: list[Phone], t: np.ndarray, tn: np.ndarray) -> list[Phone]:
    return [Phone(p.ipa, float(np.interp(p.start_s, t, tn)), float(np.interp(p.end_s, t, tn))) for p in phones]


def sing(audio: np.ndarray, sr: int, phones: list[Phone], rng: np.random.Generator,
         base_f0_hz: float | None = None) -> tuple[np.ndarray, list[Phone], dict]:
    """Sung version of a spoken utterance: (float32 audio at sr, phoneme times for it, info)."""
    import parselmouth
    from parselmouth.praat import call

    x = np.asarray(audio, np.float64)
    dur = x.size / sr
    # Praat's overlap-add draws random numbers (unvoiced stretches): seed them from our rng
    parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({int(rng.integers(1, 1 << 30))})")
    snd = parselmouth.Sound(x, sampling_frequency=sr)
    if base_f0_hz is None:
        pitch = snd.to_pitch(0.01, 60, 500)
        f = pitch.selected_array["frequency"]
        base_f0_hz = float(np.median(f[f > 0])) if np.any(f > 0) else 140.0
    factors = []
    n = len(phones)
    for k, p in enumerate(phones):
        if V.is_vowel(p.ipa):
            phrase_end = k + 1 < n and phones[k + 1].ipa == "_" or k + 2 >= n
            factors.append(float(rng.uniform(2.5, 4.0) if phrase_end else rng.uniform(1.5, 3.0)))
        elif p.ipa == "_":
            factors.append(1.0)
        else:
            factors.append(float(rng.uniform(0.9, 1.2)))
    points = _tier_points(phones, factors)
    manip = call(snd, "To Manipulation", 0.01, 60, 500)
    tier = call("Create DurationTier", "dur", 0.0, dur)
    for tp, f in points:
        call(tier, "Add point", tp, f)
    call([manip, tier], "Replace duration tier")
    # melody: one note per vowel, on a scale around the voice's own f0
    scale = [0, 2, 4, 5, 7, 9, 11, 12] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10, 12]
    tonic = base_f0_hz * 2 ** (rng.uniform(-3, 2) / 12)
    deg = int(rng.integers(0, 5))
    ptier = call("Create PitchTier", "melody", 0.0, dur)
    notes = []
    for p, f in zip(phones, factors):
        if not V.is_vowel(p.ipa):
            continue
        deg = int(np.clip(deg + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 0, len(scale) - 1))
        hz = tonic * 2 ** (scale[deg] / 12)
        notes.append(round(12 * math.log2(hz / 440.0) + 69, 2))
        a, b = p.start_s, p.end_s
        m = max(2, int((b - a) / 0.02))
        for j in range(m + 1):
            tt = a + (b - a) * j / m
            vib = 0.0
            if (b - a) * f > 0.3:                      # vibrato on long notes (in sung time)
                vib = 0.3 * math.sin(2 * math.pi * 5.5 * (tt - a) * f) * min(1.0, (tt - a) * f / 0.3)
            call(ptier, "Add point", tt, hz * 2 ** (vib / 12))
    call([manip, ptier], "Replace pitch tier")
    out = call(manip, "Get resynthesis (overlap-add)")
    y = np.asarray(out.values[0], np.float32)
    t, tn = _warp(points, dur)
    new_phones = warp_phones(phones, t, tn)
    end = new_phones[-1].end_s if new_phones else y.size / sr
    want = int(round(end * sr))
    y = y[:want] if y.size >= want else np.pad(y, (0, want - y.size))
    peak = float(np.max(np.abs(y))) or 1.0
    y = (y * min(1.0, 0.9 / peak)).astype(np.float32)
    return y, new_phones, {"tonic_hz": round(float(tonic), 1), "notes_midi": notes,
                           "mean_stretch": round(float(np.mean(factors)), 3)}


# --------------------------------------------------------------------------------------------
# microphone augmentations
# --------------------------------------------------------------------------------------------

@dataclass
class Augmentation:
    """One draw of the microphone chain (None / 0 = step not applied)."""
    gain_db: float = 0.0
    highpass_hz: float | None = None
    lowpass_hz: float | None = None
    rt60_s: float | None = None
    reverb_wet: float = 0.0
    noise: str | None = None          # white | pink | brown | hum
    snr_db: float | None = None
    source_rate_hz: int | None = None  # 8000 | 16000 | 48000
    opus_kbps: int | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, 0.0, {}) or k == "gain_db"}


def draw_augmentation(rng: np.random.Generator) -> Augmentation:
    u = rng.random(8)
    a = Augmentation()
    a.gain_db = float(rng.uniform(-20.0, 6.0))
    if u[0] < 0.5:
        a.highpass_hz = float(rng.uniform(60.0, 300.0))
    if u[1] < 0.5:
        a.lowpass_hz = float(rng.choice([3400.0, 4000.0, 5500.0, 7000.0]))
    if u[2] < 0.5:
        a.rt60_s, a.reverb_wet = float(rng.uniform(0.15, 0.8)), float(rng.uniform(0.1, 0.6))
    if u[3] < 0.7:
        a.noise = str(rng.choice(["white", "pink", "brown", "hum"]))
        a.snr_db = float(rng.uniform(0.0, 30.0))
    if u[4] < 0.5:
        a.source_rate_hz = int(rng.choice([8000, 16000, 48000]))
    if u[5] < 0.25:
        a.opus_kbps = int(rng.choice([12, 16, 24, 32, 64]))
    return a


def _to_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded at its end to ``n`` samples (after a resampling round trip)."""
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


#: G.711's mu
MU_LAW = 255.0


def telephone(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """float32 mono ``x`` at ``sr`` through a narrow-band telephone channel -> float32 at ``sr``,
    same length and timing: a 300-3400 Hz band-pass (zero-phase Butterworth), sampled at 8 kHz,
    scaled to a peak drawn in -12..-1 dBFS and companded with G.711's mu-law to 8 bits (256
    levels), then back to ``sr``. Nothing above 4 kHz is left, as in the real telephone prompts."""
    import soxr

    y = np.asarray(x, np.float64)
    n = y.size
    if n == 0:
        return np.zeros(0, np.float32)
    hi = min(3400.0, 0.45 * sr)
    y = signal.sosfiltfilt(signal.butter(4, [300.0, hi], "bandpass", fs=sr, output="sos"), y)
    z = soxr.resample(y.astype(np.float32), sr, 8000).astype(np.float64)
    z *= 10 ** (rng.uniform(-12.0, -1.0) / 20) / (np.max(np.abs(z)) + 1e-9)
    c = np.sign(z) * np.log1p(MU_LAW * np.abs(z)) / np.log1p(MU_LAW)        # compand
    c = np.round(c * 127.5) / 127.5                                          # 8 bits
    z = np.sign(c) * np.expm1(np.abs(c) * np.log1p(MU_LAW)) / MU_LAW         # expand
    out = soxr.resample(z.astype(np.float32), 8000, sr)
    return np.clip(_to_length(out, n), -1.0, 1.0).astype(np.float32)


def _colored_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / sr
        f = 50.0 if rng.random() < 0.5 else 60.0
        return sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3)) \
            + 0.05 * rng.standard_normal(n)
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    spec = np.fft.rfft(w)
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)
    spec /= np.sqrt(f) if kind == "pink" else f
    return np.fft.irfft(spec, n)


def _rir(rt60: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)     # -60 dB at rt60
    h[: int(0.002 * sr)] = 0.0                               # reflections start after 2 ms
    h /= np.sqrt(np.sum(h * h)) + 1e-12
    return h


def opus_round_trip(x: np.ndarray, sr: int, kbps: int) -> np.ndarray:
    """Encode to Opus (Ogg, 48 kHz) with PyAV and decode back to ``sr``; same length, no shift."""
    import av
    import soxr

    y48 = soxr.resample(x.astype(np.float32), sr, 48000).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        st = out.add_stream("libopus", rate=48000, layout="mono")
        st.bit_rate = int(kbps) * 1000
        fr = av.AudioFrame.from_ndarray(y48[None], format="flt", layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = 48000, 0, Fraction(1, 48000)
        rs = av.AudioResampler(format=st.codec_context.format, layout="mono", rate=48000)
        pts = 0
        for f in rs.resample(fr) + rs.resample(None):
            f.pts, f.time_base = pts, Fraction(1, 48000)
            pts += f.samples
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        dec = np.concatenate([f.to_ndarray()[0] for f in inp.decode(inp.streams.audio[0])])
    z = soxr.resample(dec.astype(np.float32), 48000, sr).astype(np.float32)
    return _to_length(z, x.size)


def augment(x: np.ndarray, sr: int, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Apply the chain to float32 mono ``x`` at ``sr``; same length, same timing."""
    import soxr

    y = np.asarray(x, np.float64)
    n = y.size
    speech_power = float(np.mean(y[np.abs(y) > 0.02 * (np.max(np.abs(y)) + 1e-9)] ** 2)) if n else 0.0
    if aug.rt60_s:
        wet = signal.fftconvolve(y, _rir(aug.rt60_s, sr, rng))[:n]
        y = (1 - aug.reverb_wet) * y + aug.reverb_wet * wet * np.sqrt(np.mean(y * y) / (np.mean(wet * wet) + 1e-12))
    if aug.noise and aug.snr_db is not None:
        nz = _colored_noise(aug.noise, n, sr, rng)
        nz *= math.sqrt(speech_power / (np.mean(nz * nz) + 1e-12) / 10 ** (aug.snr_db / 10))
        y = y + nz
    if aug.highpass_hz:
        y = signal.sosfiltfilt(signal.butter(2, aug.highpass_hz, "highpass", fs=sr, output="sos"), y)
    if aug.lowpass_hz and aug.lowpass_hz < 0.5 * sr:
        y = signal.sosfiltfilt(signal.butter(6, aug.lowpass_hz, "lowpass", fs=sr, output="sos"), y)
    y = y * 10 ** (aug.gain_db / 20)
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    if aug.source_rate_hz and aug.source_rate_hz != sr:
        z = soxr.resample(y, sr, aug.source_rate_hz)
        y = soxr.resample(z, aug.source_rate_hz, sr).astype(np.float32)
        y = _to_length(y, n)
    if aug.opus_kbps:
        y = opus_round_trip(y, sr, aug.opus_kbps)
    return np.clip(y, -1.0, 1.0).astype(np.float32)
