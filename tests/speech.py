"""Test helper: real speech from espeak-ng, and reference mouth openness for it.

* :func:`make_speech` renders a sentence with the espeak-ng CLI to a 16-bit mono wav (22050 Hz).
* :func:`phonemes` gives espeak-ng's own phoneme timing for the same text/voice/rate, through
  libespeak-ng (ctypes, phoneme events); the timing matches the CLI's audio (same engine, same
  start), which the tests check.
* :func:`speech_envelope` is an audio-only reference openness per video frame (smoothed RMS of
  the 150-1500 Hz band, where the first formant lives, in dB relative to the clip's peak).
* :func:`phoneme_openness` is a phonetic reference openness per video frame (open vowels high,
  close vowels low, bilabials 0), from the phoneme timing.
"""
from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

__all__ = ["SENTENCES", "have_espeak", "have_phonemes", "make_speech", "Phoneme", "phonemes", "is_vowel", "is_bilabial",
           "speech_envelope", "phoneme_openness", "encode_audio", "ESPEAK_RATE_HZ"]

ESPEAK_RATE_HZ = 22050

#: One real sentence per language, rich in p/b/m.
SENTENCES: dict[str, str] = {
    "en": "Bob bought a big blue bottle of maple syrup, and Pam made a pumpkin pie.",
    "es": "Pablo y mamá beben un poco de vino blanco en el bar de la playa.",
    "de": "Meine Mutter bringt bunte Blumen mit, und Papa backt Brot am Abend.",
    "fr": "Papa boit un bon café bien chaud, puis maman mange une pomme.",
}

_VOWEL_START = set("aAeEiIoOuUyYV@03&")
_BILABIAL = {"p", "b", "m", "p#", "b#", "m#"}


def have_espeak() -> bool:
    """The espeak-ng CLI is installed."""
    return shutil.which("espeak-ng") is not None


def have_phonemes() -> bool:
    """libespeak-ng can be loaded (for :func:`phonemes`)."""
    try:
        _espeak()
    except (OSError, RuntimeError):
        return False
    return True


def make_speech(text: str, voice: str, path: str | Path, rate_wpm: int = 150) -> Path:
    """Render ``text`` with ``espeak-ng -v voice -s rate_wpm -w path``; returns the wav path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rate_wpm)), "-w", str(path), text],
                   check=True, capture_output=True, timeout=60)
    if not path.exists() or path.stat().st_size <= 44:
        raise RuntimeError(f"espeak-ng produced no audio for {voice}: {text!r}")
    return path


@dataclass(frozen=True)
class Phoneme:
    name: str       # espeak-ng phoneme mnemonic ("p", "a:", "@", "_" for a pause)
    start_s: float
    end_s: float


def phonemes(text: str, voice: str, rate_wpm: int = 150) -> list[Phoneme]:
    """espeak-ng's phoneme sequence with start/end times (s) for this text, voice and rate
    (libespeak-ng through the project's one binding, emote.engine.training.espeak; mnemonics)."""
    audio, events = _espeak().phoneme_events(text, voice, rate_wpm=rate_wpm, ipa=False)
    out = []
    for k, (sample, name) in enumerate(events):
        end = events[k + 1][0] if k + 1 < len(events) else audio.size
        if end > sample:
            out.append(Phoneme(name, sample / ESPEAK_RATE_HZ, end / ESPEAK_RATE_HZ))
    return out


def _espeak():
    """The binding module, initialised (OSError/RuntimeError when libespeak-ng is missing)."""
    from emote.engine.training import espeak
    espeak._get()
    return espeak


def is_vowel(name: str) -> bool:
    return bool(name) and name[0] in _VOWEL_START


def is_bilabial(name: str) -> bool:
    return name in _BILABIAL


def _vowel_openness(name: str) -> float:
    c = name[0]
    if c in "aA&":
        return 1.0
    if c in "eEoO03V@":
        return 0.65
    return 0.4          # i I u U y Y


def phoneme_openness(phs: list[Phoneme], n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Reference jaw openness per video frame (n_frames,) float64, 0..1, from phoneme timing.

    Vowels by height (open 1, mid .65, close .4), bilabials and pauses 0, other consonants .25;
    each frame takes the time-weighted mean over its span, then a light smoothing.
    """
    t = (np.arange(n_frames * 10) + 0.5) / (10 * fps)
    val = np.zeros_like(t)
    for p in phs:
        if p.name.startswith("_") or is_bilabial(p.name):
            v = 0.0
        elif is_vowel(p.name):
            v = _vowel_openness(p.name)
        else:
            v = 0.25
        val[(t >= p.start_s) & (t < p.end_s)] = v
    per_frame = val.reshape(n_frames, 10).mean(axis=1)
    return np.convolve(per_frame, [0.25, 0.5, 0.25], mode="same")


def speech_envelope(samples: np.ndarray, sr: int, fps: float = 25.0) -> np.ndarray:
    """Audio-only reference openness per video frame, (ceil(len / spf),) float64 in 0..1.

    RMS of the 150-1500 Hz band per frame, in dB, mapped from 30 dB below the clip's loudest
    frame (0) to that frame (1), smoothed over three frames.
    """
    spf = int(round(sr / fps))
    sos = signal.butter(4, [150.0, 1500.0], btype="bandpass", fs=sr, output="sos")
    y = signal.sosfiltfilt(sos, np.asarray(samples, np.float64))
    n = -(-y.size // spf)
    y = np.pad(y, (0, n * spf - y.size))
    db = 10.0 * np.log10((y.reshape(n, spf) ** 2).mean(axis=1) + 1e-12)
    env = np.clip((db - (db.max() - 30.0)) / 30.0, 0.0, 1.0)
    return np.convolve(env, [0.25, 0.5, 0.25], mode="same")


def encode_audio(samples: np.ndarray, sample_rate_hz: int, path: str | Path, codec: str,
                 rate_hz: int | None = None, channels: int = 1, bit_rate: int | None = None) -> Path:
    """Write mono float samples to ``path`` with PyAV: container from the suffix, ``codec`` at
    ``rate_hz`` (resampled by PyAV) with ``channels`` identical channels. Returns the path."""
    import av
    path = Path(path)
    rate_hz = int(rate_hz or sample_rate_hz)
    x = np.asarray(samples, np.float32)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=rate_hz, layout=layout)
        if bit_rate:
            st.bit_rate = bit_rate
        resampler = av.AudioResampler(format=st.codec_context.format or "fltp", layout=layout, rate=rate_hz)
        packed = np.repeat(x[:, None], channels, axis=1).reshape(1, -1)     # interleaved L R L R ...
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(packed), format="flt", layout=layout)
        frame.sample_rate = int(sample_rate_hz)
        frames = list(resampler.resample(frame)) + list(resampler.resample(None))
        pts = 0
        for f in frames:
            f.pts, f.time_base = pts, Fraction(1, rate_hz)   # timestamps let the muxer record codec delay
            pts += f.samples
            for pkt in st.encode(f):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path
