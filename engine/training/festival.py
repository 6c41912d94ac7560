"""Festival synthesis with exact phoneme timing (Debian ``festival`` + its English voices).

Festival's diphone voices (festvox-kallpc16k, festvox-kdlpc16k) concatenate real human
recordings, and its HTS voice (festvox-us-slt-hts) is trained on a real speaker: they sound
closer to real speech than espeak-ng's formant synthesis. Festival knows where each phone of
its output begins and ends (the Segment relation's end times), so the labels are exact for the
audio, with no alignment. A stop's segment already begins at its closure (measured: the
energy drops within 10-15 ms of the boundary, unlike espeak-ng's events at the release), so
espeak.attach_closures is not needed.

    syn = synthesize("Bob bought a pie.", "kal")
    syn.audio            # int16 mono at syn.sample_rate_hz (16000 diphones, 32000 HTS)
    syn.phonemes         # [Phone("_", 0.0, 0.2), Phone("b", 0.2, 0.284), ...] in espeak-ng style IPA

Each call runs ``festival --pipe`` once as a subprocess (a few tenths of a second: see
:func:`synthesize`). :func:`plan_festival` / :func:`make_festival` are the data engine's jobs
(engine.training.build_data), like engine.training.corpora's plan_real / make_real.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import unicodedata
import wave
from pathlib import Path

import numpy as np

from .espeak import Phone, Synthesis

__all__ = ["VOICES", "IPA", "available_voices", "synthesize", "plan_festival", "make_festival", "read_segs", "ipa_of",
           "scheme_string"]

VOICE_ROOT = Path("/usr/share/festival/voices")
#: our name -> (festival voice command, sex, voice directory under VOICE_ROOT, engine)
VOICES: dict[str, tuple[str, str, str, str]] = {
    "kal": ("voice_kal_diphone", "m", "english/kal_diphone", "diphone"),          # festvox-kallpc16k
    "ked": ("voice_ked_diphone", "m", "english/ked_diphone", "diphone"),          # festvox-kdlpc16k
    "slt": ("voice_cmu_us_slt_arctic_hts", "f", "us/cmu_us_slt_arctic_hts", "hts"),  # festvox-us-slt-hts
}

#: Festival's "radio" phone set (every English voice above uses it) -> espeak-ng en-us IPA.
IPA: dict[str, str] = {
    "aa": "ɑː", "ae": "æ", "ah": "ʌ", "ao": "ɔː", "aw": "aʊ", "ax": "ə", "axr": "ɚ", "ay": "aɪ",
    "b": "b", "ch": "tʃ", "d": "d", "dh": "ð", "dx": "ɾ", "eh": "ɛ", "el": "əl", "em": "əm", "en": "ən",
    "er": "ɜː",  # stressed; unstressed "ɚ" (ipa_of)
    "ey": "eɪ", "f": "f", "g": "ɡ", "hh": "h", "hv": "h", "ih": "ɪ", "iy": "iː", "jh": "dʒ",
    "k": "k", "l": "l", "m": "m", "n": "n", "nx": "n", "ng": "ŋ", "ow": "oʊ", "oy": "ɔɪ", "p": "p",
    "r": "ɹ", "s": "s", "sh": "ʃ", "t": "t", "th": "θ", "uh": "ʊ", "uw": "uː", "v": "v", "w": "w",
    "y": "j", "z": "z", "zh": "ʒ", "pau": "_", "h#": "_", "brth": "_",
}

VOICES_INDEX = {name: k for k, name in enumerate(VOICES)}   # a voice's place in job seeds
_TIMEOUT_S = 120.0


def _festival() -> str | None:
    return shutil.which("festival")


def available_voices() -> list[str]:
    """Names (keys of :data:`VOICES`) of the voices installed; [] when festival is missing."""
    if _festival() is None:
        return []
    return [name for name, (_, _, sub, _) in VOICES.items() if (VOICE_ROOT / sub).is_dir()]


def scheme_string(text: str) -> str:
    """``text`` as a Scheme string literal: ASCII (accents folded, other characters dropped),
    control characters as spaces, quotes and backslashes escaped."""
    s = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    s = "".join(c if c.isprintable() else " " for c in s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(text: str, voice: str, rate: float, wav: Path, segs: Path) -> str:
    """The Scheme program for ``festival --pipe``: voice, speed, synthesis, wave and segments."""
    cmd, _, _, engine = VOICES[voice]
    if engine == "hts":         # HTS ignores Duration_Stretch; hts_engine's own speed is -r
        speed = f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.6f}))))'
    else:                       # scale the voice's own stretch (1.1 for kal/ked)
        speed = f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {rate:.6f}))"
    return (f"({cmd})\n{speed}\n"
            f"(set! emote_utt (utt.synth (Utterance Text {scheme_string(text)})))\n"
            f"(utt.save.wave emote_utt {scheme_string(str(wav))} 'riff)\n"
            f"(set! emote_fd (fopen {scheme_string(str(segs))} \"w\"))\n"
            "(mapcar (lambda (s) (format emote_fd \"%s %f %s\\n\" (item.name s) (item.feat s \"end\")"
            " (item.feat s \"R:SylStructure.parent.stress\"))) (utt.relation.items emote_utt 'Segment))\n"
            "(fclose emote_fd)\n")


def read_segs(path: Path | str) -> list[tuple[str, float, int]]:
    """The segment file :func:`synthesize`'s script writes -> [(festival phone, end time s,
    syllable stress 0/1), ...] in order (one "name end_s stress" line per Segment item)."""
    out = []
    for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines():
        f = line.split()
        if len(f) != 3:
            raise RuntimeError(f"unexpected line {line!r} in festival's segment file")
        out.append((f[0], float(f[1]), 1 if f[2] not in ("0", "nil") else 0))
    return out


def ipa_of(name: str, stress: int = 1) -> str:
    """A Festival radio phone -> espeak-ng style IPA ("er" in an unstressed syllable -> "ɚ", as
    espeak-ng writes "bitter"); RuntimeError for a phone with no mapping."""
    if name not in IPA:
        raise RuntimeError(f"festival emitted phone {name!r}, which has no IPA mapping (festival.IPA)")
    return "ɚ" if name == "er" and not stress else IPA[name]


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono RIFF file -> (int16 samples, rate Hz)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError(f"festival wrote {w.getnchannels()} channels of {8 * w.getsampwidth()} bits, "
                               "expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16), w.getframerate()


def _phones(segs: list[tuple[str, float, int]], n: int, sr: int) -> list[Phone]:
    """Festival segments (name, end s) -> contiguous IPA phones covering ``n`` samples at
    ``sr`` Hz; pauses merged, a tail after the last segment is a pause (the last segment is
    stretched when the tail is shorter than 5 ms)."""
    total = n / sr
    phones: list[Phone] = []
    t = 0.0
    for name, end, stress in segs:
        ipa = ipa_of(name, stress)
        end = min(end, total)
        if end <= t:
            continue
        if ipa == "_" and phones and phones[-1].ipa == "_":
            phones[-1] = Phone("_", phones[-1].start_s, end)
        else:
            phones.append(Phone(ipa, t, end))
        t = end
    if total - t > 0.005 or not phones:
        if phones and phones[-1].ipa == "_":
            phones[-1] = Phone("_", phones[-1].start_s, total)
        else:
            phones.append(Phone("_", t, total))
    elif t < total:
        phones[-1] = Phone(phones[-1].ipa, phones[-1].start_s, total)
    return phones


def synthesize(text: str, voice: str, rate: float = 1.0) -> Synthesis:
    """Speak ``text`` (English) with Festival voice ``voice`` (a key of :data:`VOICES`) at
    ``rate`` times the voice's own speed (0.5..2; durations scale by 1/rate).

    Returns the audio (int16 mono; 16000 Hz diphones, 32000 Hz HTS) and its phonemes: a
    contiguous list covering the whole audio, espeak-ng style IPA, ``"_"`` for pauses (Festival
    puts a pause at both ends). Raises RuntimeError if festival or the voice is not installed or
    festival fails, ValueError for an unknown voice, a bad rate or a text with no letters.
    """
    if voice not in VOICES:
        raise ValueError(f"unknown festival voice {voice!r}; known: {sorted(VOICES)}")
    if not 0.5 <= rate <= 2.0:
        raise ValueError(f"rate {rate} out of range 0.5..2")
    if not any(c.isalpha() for c in scheme_string(text)):
        raise ValueError(f"nothing to speak in {text!r} (no ASCII letters)")
    exe = _festival()
    if exe is None:
        raise RuntimeError("festival is not installed (Debian: apt-get install festival festvox-kallpc16k)")
    if voice not in available_voices():
        raise RuntimeError(f"festival voice {voice!r} is not installed ({VOICE_ROOT / VOICES[voice][2]} missing)")
    with tempfile.TemporaryDirectory(prefix="emote-festival-") as tmp:
        wav, segs = Path(tmp) / "out.wav", Path(tmp) / "out.segs"
        r = subprocess.run([exe, "--pipe"], input=_script(text, voice, rate, wav, segs), capture_output=True,
                           text=True, timeout=_TIMEOUT_S)
        err = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or "SIOD ERROR" in err or not wav.is_file() or not segs.is_file():
            raise RuntimeError(f"festival failed (exit {r.returncode}) on {text[:60]!r} with voice {voice}: "
                               f"{err[-500:] or 'no output files'}")
        audio, sr = _read_wav(wav)
        phones = _phones(read_segs(segs), audio.size, sr)
    return Synthesis(text, VOICES[voice][0], audio, sr, phones)


_MEAN_JOB_S = 9.0   # estimated mean duration of one job (1-3 sentences, padding included)


def plan_festival(seed: int, hours: float, voices: list[str] | None = None) -> list[dict]:
    """Jobs (dicts) for ``hours`` of Festival speech, spread evenly over ``voices`` (default:
    the installed ones; [] when there are none): 1-3 English pseudo-sentences each, rate drawn
    uniformly in 0.8..1.3. A pure function of the arguments (and of which voices are installed
    when ``voices`` is None). The caller sets job["split"]."""
    from . import text as TX

    voices = available_voices() if voices is None else list(voices)
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise ValueError(f"unknown festival voices {unknown}; known: {sorted(VOICES)}")
    if hours <= 0 or not voices:
        return []
    n = int(np.ceil(hours * 3600.0 / _MEAN_JOB_S))
    rng = np.random.default_rng([seed, 6])
    n_sent = rng.integers(1, 4, size=n)
    rates = rng.uniform(0.8, 1.3, size=n)
    sents = iter(TX.sentences("en", int(n_sent.sum()), seed * 7919 + 6, (4, 14)))
    per_voice = [0] * len(voices)
    jobs = []
    for k in range(n):
        vi = k % len(voices)
        i = per_voice[vi]
        per_voice[vi] += 1
        voice = voices[vi]
        jobs.append({"kind": "festival", "lang": "en", "speaker": f"festival-{voice}", "index": i,
                     "text": " ".join(next(sents) for _ in range(int(n_sent[k]))), "voice": voice,
                     "rate": round(float(rates[k]), 4), "seed": [seed, 6, VOICES_INDEX[voice], i]})
    return jobs



def make_festival(job: dict, cfg):
    """One Festival utterance (a shards.Utterance): exact phones, padded with 0.1-0.8 s of
    silence at both ends, resampled to 16 kHz, features and targets (build_data.finish_utterance).
    Returns None when Festival gives no speech for the text."""
    from .build_data import SR, _pad, _resample, finish_utterance, speaker_style

    rng = np.random.default_rng(job["seed"])
    syn = synthesize(job["text"], job["voice"], float(job["rate"]))
    if syn.audio.size < int(0.1 * syn.sample_rate_hz) or all(p.ipa == "_" for p in syn.phonemes):
        return None
    x, phones = _pad(syn.float_audio(), syn.sample_rate_hz, syn.phonemes, float(rng.uniform(0.1, 0.8)),
                     float(rng.uniform(0.1, 0.8)))
    x16 = _resample(x, syn.sample_rate_hz)
    meta = {"id": f"festival-{job['voice']}-{job['index']:05d}", "split": job["split"], "language": "en",
            "speaker": job["speaker"], "source": "festival", "voice": syn.voice, "variant": "normal",
            "rate": job["rate"], "text": job["text"], "timing": "exact"}
    style = speaker_style(job["speaker"], 0)
    effort = float(rng.uniform(0.9, 1.1))
    keep = cfg.audio == "all" or (cfg.audio == "heldout" and job["split"] != "train")
    return finish_utterance(meta, x16, phones, style, rng, effort, cfg.p_augment, keep)
