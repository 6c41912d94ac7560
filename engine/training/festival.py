"""Festival synthesis with exact phoneme timing (Debian ``festival`` and its English, Czech,
Finnish and Catalan voices).

Festival's diphone voices concatenate real human recordings (English kal and ked; Czech dita,
machac, ph and krb, a boy; Finnish lj and mv) and its HTS voices are trained on a real speaker
(English slt, Catalan ona): they sound closer to real speech than espeak-ng's formant synthesis.
Festival knows where each phone of its output begins and ends (the Segment relation's end
times), so the labels are exact for the audio, with no alignment. A stop's segment already
begins at its closure (measured: the energy drops within 10-15 ms of the boundary, unlike
espeak-ng's events at the release), so espeak.attach_closures is not needed.

    syn = synthesize("Bob bought a pie.", "kal")
    syn.audio            # int16 mono at syn.sample_rate_hz (the voice's: 16000 kal, 32000 slt, ...)
    syn.phonemes         # [Phone("_", 0.0, 0.2), Phone("b", 0.2, 0.284), ...] in espeak-ng style IPA

Each voice has a language (engine.training.text's codes "en", "cs", "fi", "ca"), a Festival
phone set (English "radio", "czech", "finnish", Catalan "upc_catalan-central"), mapped phone by
phone to espeak-ng style IPA (:data:`PHONESETS`, :func:`ipa_of`), and a text encoding: the
Czech, Finnish and Catalan front ends read 8-bit text (ISO-8859-2, ISO-8859-1, ISO-8859-15), so
the text is sent in that encoding (characters it lacks are folded to ASCII), English as ASCII.

Each call runs ``festival --pipe`` once as a subprocess (a few tenths of a second: see
:func:`synthesize`); a fresh process also keeps the Czech voices' random duration and
intonation choices (Festival's unseeded ``rand()``) reproducible. :func:`plan_festival` /
:func:`make_festival` are the data engine's jobs (engine.training.build_data), like
engine.training.corpora's plan_real / make_real.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import unicodedata
import wave
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .espeak import Phone, Synthesis

__all__ = ["Voice", "VOICES", "IPA", "CZECH_IPA", "FINNISH_IPA", "CATALAN_IPA", "PHONESETS", "CODINGS",
           "available_voices", "synthesize", "plan_festival", "make_festival", "read_segs", "ipa_of",
           "scheme_string"]

VOICE_ROOT = Path("/usr/share/festival/voices")


class Voice(NamedTuple):
    """One Festival voice: how to select it, what it speaks and which package brings it."""
    command: str        # festival's voice function
    sex: str            # "m" / "f"
    subdir: str         # the voice's directory under VOICE_ROOT
    engine: str         # "diphone" or "hts"
    lang: str           # engine.training.text's language code
    phoneset: str       # Festival's phone set (a key of PHONESETS)
    package: str        # the Debian package


#: our name -> Voice. The order is part of the job seeds (VOICES_INDEX): append new voices.
VOICES: dict[str, Voice] = {
    "kal": Voice("voice_kal_diphone", "m", "english/kal_diphone", "diphone", "en", "radio", "festvox-kallpc16k"),
    "ked": Voice("voice_ked_diphone", "m", "english/ked_diphone", "diphone", "en", "radio", "festvox-kdlpc16k"),
    "slt": Voice("voice_cmu_us_slt_arctic_hts", "f", "us/cmu_us_slt_arctic_hts", "hts", "en", "radio",
                 "festvox-us-slt-hts"),
    "dita": Voice("voice_czech_dita", "f", "czech/czech_dita", "diphone", "cs", "czech", "festvox-czech-dita"),
    "machac": Voice("voice_czech_machac", "m", "czech/czech_machac", "diphone", "cs", "czech",
                    "festvox-czech-machac"),
    "ph": Voice("voice_czech_ph", "m", "czech/czech_ph", "diphone", "cs", "czech", "festvox-czech-ph"),
    "krb": Voice("voice_czech_krb", "m", "czech/czech_krb", "diphone", "cs", "czech", "festvox-czech-krb"),  # a boy
    "lj": Voice("voice_suo_fi_lj_diphone", "f", "finnish/suo_fi_lj_diphone", "diphone", "fi", "finnish",
                "festvox-suopuhe-lj"),
    "mv": Voice("voice_hy_fi_mv_diphone", "m", "finnish/hy_fi_mv_diphone", "diphone", "fi", "finnish",
                "festvox-suopuhe-mv"),
    "ona": Voice("voice_upc_ca_ona_hts", "f", "catalan/upc_ca_ona_hts", "hts", "ca", "upc_catalan-central",
                 "festvox-ca-ona-hts"),
}

#: the text encoding of each language's Festival front end (what its letter-to-sound rules read)
CODINGS: dict[str, str] = {"en": "ascii", "cs": "iso-8859-2", "fi": "iso-8859-1", "ca": "iso-8859-15"}
#: the non-ASCII letters each front end reads (lower case; tested one by one): others are folded
#: to ASCII (Czech reads an unknown letter as the word "neznámý", Finnish reads "å" as
#: "tuntematon merkki", Catalan drops "ñ")
_LETTERS: dict[str, str] = {"en": "", "cs": "áäčďéěíňóöřšßťúůüýž", "fi": "äöüéèáàíóúãõâêçñ",
                            "ca": "àèéíïòóúüç"}

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

#: festival-czech's "czech" phone set (czech.scm) -> espeak-ng cs IPA. "_" is not a pause but
#: the glottal stroke the front end puts before a word-initial vowel; "n*" is n before k/g.
CZECH_IPA: dict[str, str] = {
    "#": "_", "_": "ʔ",
    "a": "a", "a:": "aː", "e": "e", "e:": "eː", "i": "i", "i:": "iː", "o": "o", "o:": "oː", "u": "u", "u:": "uː",
    "b": "b", "c": "ts", "c~": "tʃ", "ch": "x", "d": "d", "d~": "ɟ", "dz": "dz", "dz~": "dʒ", "f": "f",
    "g": "ɡ", "h": "h", "j": "j", "k": "k", "l": "l", "m": "m", "n": "n", "n*": "ŋ", "n~": "ɲ", "p": "p",
    "r": "r", "r~": "r̝", "r~*": "r̝̊", "s": "s", "s~": "ʃ", "t": "t", "t~": "c", "v": "v", "z": "z", "z~": "ʒ",
}

#: Suopuhe's "finnish" phone set (suopuhe.common/finnish_phones.scm, a simplified WorldBet:
#: "@" ä, "7" ö, "&" schwa, "N" ng, "T"/"D" th, "S"/"Z" sh/zh, ":" long) -> espeak-ng fi IPA. Long
#: vowels keep "ː"; a long consonant is one segment spanning the geminate, named like the short
#: one as espeak-ng's phoneme events name it ("pappi": p a p ɪ), so a long p/b/m is "p"/"b"/"m".
FINNISH_IPA: dict[str, str] = {
    "#": "_", "##": "_",
    "a": "a", "e": "e", "i": "i", "o": "o", "u": "u", "y": "y", "@": "æ", "7": "ø", "&": "ə",
    "a:": "aː", "e:": "eː", "i:": "iː", "o:": "oː", "u:": "uː", "y:": "yː", "@:": "æː", "7:": "øː",
    "p": "p", "t": "t", "k": "k", "b": "b", "d": "d", "g": "ɡ", "f": "f", "T": "θ", "s": "s", "S": "ʃ",
    "h": "h", "v": "v", "m": "m", "n": "n", "N": "ŋ", "l": "l", "L": "l", "r": "r", "j": "j", "w": "w",
    "p:": "p", "t:": "t", "k:": "k", "b:": "b", "d:": "d", "g:": "ɡ", "f:": "f", "T:": "θ", "D:": "ð",
    "s:": "s", "z:": "z", "S:": "ʃ", "Z:": "ʒ", "h:": "h", "v:": "v", "m:": "m", "n:": "n", "N:": "ŋ",
    "w:": "w", "l:": "l", "L:": "l", "r:": "r", "j:": "j",
}

#: festival-ca's "upc_catalan-central" phone set (upc_catalan/upc_catalan_phones-central.scm;
#: a digit marks a stressed vowel, "ax" the neutral vowel, "rr" the trill) -> espeak-ng ca IPA.
#: The glides "j" and "w" stay consonants, as espeak-ng writes them.
CATALAN_IPA: dict[str, str] = {
    "pau": "_", "_": "_", "#": "_",
    "ax": "ə", "a": "a", "a1": "a", "e": "e", "e1": "e", "E": "ɛ", "E1": "ɛ", "i": "i", "i1": "i",
    "o": "o", "o1": "o", "O": "ɔ", "O1": "ɔ", "u": "u", "u1": "u", "j": "j", "w": "w",
    "b": "b", "d": "d", "f": "f", "g": "ɡ", "J": "ɲ", "k": "k", "l": "l", "L": "ʎ", "m": "m", "n": "n",
    "p": "p", "r": "ɾ", "rr": "r", "s": "s", "S": "ʃ", "t": "t", "z": "z", "Z": "ʒ",
}

#: Festival phone set name -> its phone -> IPA dict
PHONESETS: dict[str, dict[str, str]] = {"radio": IPA, "czech": CZECH_IPA, "finnish": FINNISH_IPA,
                                        "upc_catalan-central": CATALAN_IPA}

VOICES_INDEX = {name: k for k, name in enumerate(VOICES)}   # a voice's place in job seeds
_TIMEOUT_S = 120.0


def _festival() -> str | None:
    return shutil.which("festival")


def available_voices() -> list[str]:
    """Names (keys of :data:`VOICES`) of the voices installed, in :data:`VOICES` order; [] when
    festival is missing."""
    if _festival() is None:
        return []
    return [name for name, v in VOICES.items() if (VOICE_ROOT / v.subdir).is_dir()]


def _encodable(text: str, coding: str, letters: str | None = None) -> str:
    """``text`` (NFC) with every character ``coding`` lacks (and, when ``letters`` is given,
    every non-ASCII letter not in ``letters`` in either case) folded to ASCII: accents dropped,
    other characters removed; control characters as spaces."""
    out = []
    for c in unicodedata.normalize("NFC", text):
        if not c.isprintable():
            out.append(" ")
            continue
        try:
            c.encode(coding)
            ok = letters is None or c.isascii() or not c.isalpha() or c.lower() in letters
        except UnicodeEncodeError:
            ok = False
        out.append(c if ok else unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode("ascii"))
    return "".join(out)


def _speakable(text: str, lang: str) -> str:
    """``text`` reduced to what language ``lang``'s Festival front end reads (:data:`CODINGS`)."""
    return _encodable(text, CODINGS[lang], _LETTERS[lang])


def scheme_string(text: str, coding: str = "ascii") -> str:
    """``text`` as a Scheme string literal whose characters all exist in ``coding`` (default
    ASCII: accents folded, other characters dropped), control characters as spaces, quotes and
    backslashes escaped. The caller encodes the program in ``coding``."""
    s = _encodable(text, coding)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(text: str, voice: str, rate: float, wav: Path, segs: Path) -> str:
    """The Scheme program for ``festival --pipe``: voice, speed, synthesis, wave and segments.
    Its characters all exist in the voice's language's encoding (:data:`CODINGS`)."""
    v = VOICES[voice]
    if v.engine == "hts":       # HTS ignores Duration_Stretch; hts_engine's own speed is -r (ona: mostly pauses)
        speed = f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.6f}))))'
    else:                       # scale the voice's own stretch (1.1 for kal/ked, 1 for Czech/Finnish)
        speed = f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {rate:.6f}))"
    said = scheme_string(_speakable(text, v.lang), CODINGS[v.lang])
    return (f"({v.command})\n{speed}\n"
            f"(set! emote_utt (utt.synth (Utterance Text {said})))\n"
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


def ipa_of(name: str, stress: int = 1, phoneset: str = "radio") -> str:
    """A phone of Festival phone set ``phoneset`` (a key of :data:`PHONESETS`) -> espeak-ng style
    IPA, "_" for a pause (radio "er" in an unstressed syllable -> "ɚ", as espeak-ng writes
    "bitter"); RuntimeError for a phone with no mapping."""
    table = PHONESETS.get(phoneset)
    if table is None:
        raise ValueError(f"unknown festival phone set {phoneset!r}; known: {sorted(PHONESETS)}")
    if name not in table:
        raise RuntimeError(f"festival emitted phone {name!r} of phone set {phoneset!r}, which has no IPA "
                           "mapping: add it to festival.PHONESETS")
    return "ɚ" if phoneset == "radio" and name == "er" and not stress else table[name]


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono RIFF file -> (int16 samples, rate Hz)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError(f"festival wrote {w.getnchannels()} channels of {8 * w.getsampwidth()} bits, "
                               "expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16), w.getframerate()


def _phones(segs: list[tuple[str, float, int]], n: int, sr: int, phoneset: str = "radio") -> list[Phone]:
    """Festival segments (name, end s, stress) of ``phoneset`` -> contiguous IPA phones covering
    ``n`` samples at ``sr`` Hz; pauses merged, a tail after the last segment is a pause (the
    last segment is stretched when the tail is shorter than 5 ms)."""
    total = n / sr
    phones: list[Phone] = []
    t = 0.0
    for name, end, stress in segs:
        ipa = ipa_of(name, stress, phoneset)
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


def _check(text: str, voice: str, rate: float) -> str:
    """synthesize's argument checks; the festival executable."""
    if voice not in VOICES:
        raise ValueError(f"unknown festival voice {voice!r}; known: {sorted(VOICES)}")
    if not 0.5 <= rate <= 2.0:
        raise ValueError(f"rate {rate} out of range 0.5..2")
    lang = VOICES[voice].lang
    if not any(c.isalpha() for c in _speakable(text, lang)):
        raise ValueError(f"nothing to speak in {text!r} (no letters Festival's {lang!r} front end reads)")
    exe = _festival()
    if exe is None:
        raise RuntimeError("festival is not installed (Debian: apt-get install festival festvox-kallpc16k)")
    if voice not in available_voices():
        raise RuntimeError(f"festival voice {voice!r} is not installed ({VOICE_ROOT / VOICES[voice].subdir} "
                           f"missing; Debian: apt-get install {VOICES[voice].package})")
    return exe


def synthesize(text: str, voice: str, rate: float = 1.0) -> Synthesis:
    """Speak ``text`` (in the voice's language, ``VOICES[voice].lang``) with Festival voice
    ``voice`` (a key of :data:`VOICES`) at ``rate`` times the voice's own speed (0.5..2;
    durations scale by 1/rate). The text goes to Festival in the language's encoding
    (:data:`CODINGS`); characters that encoding or the front end's letter-to-sound rules lack are
    folded to ASCII ("š" -> "s" in Finnish, "ľ" -> "l" in Czech).

    Returns the audio (int16 mono at the voice's rate: 16000 Hz kal, ked, ona; 22050 Finnish;
    32000 slt, dita, machac, krb; 44100 ph) and its phonemes: a contiguous list covering the
    whole audio, espeak-ng style IPA, ``"_"`` for pauses (Festival puts a pause at both ends).
    Raises RuntimeError if festival or the voice is not installed or festival fails, ValueError
    for an unknown voice, a bad rate or a text with no letters.
    """
    exe = _check(text, voice, rate)
    v = VOICES[voice]
    with tempfile.TemporaryDirectory(prefix="emote-festival-") as tmp:
        wav, segs = Path(tmp) / "out.wav", Path(tmp) / "out.segs"
        program = _script(text, voice, rate, wav, segs).encode(CODINGS[v.lang])
        r = subprocess.run([exe, "--pipe"], input=program, capture_output=True, timeout=_TIMEOUT_S)
        err = (r.stdout + r.stderr).decode("latin-1").strip()
        if r.returncode != 0 or "SIOD ERROR" in err or not wav.is_file() or not segs.is_file():
            raise RuntimeError(f"festival failed (exit {r.returncode}) on {text[:60]!r} with voice {voice}: "
                               f"{err[-500:] or 'no output files'}")
        audio, sr = _read_wav(wav)
        phones = _phones(read_segs(segs), audio.size, sr, v.phoneset)
    return Synthesis(text, v.command, audio, sr, phones)


_MEAN_JOB_S = 9.0   # estimated mean duration of one job (1-3 sentences, padding included)


def plan_festival(seed: int, hours: float, voices: list[str] | None = None) -> list[dict]:
    """Jobs (dicts) for ``hours`` of Festival speech, spread evenly over ``voices`` (round robin;
    default: the installed ones; [] when there are none): 1-3 pseudo-sentences each in the
    voice's language (engine.training.text.sentences; job["lang"]), rate drawn uniformly in
    0.8..1.3. A pure function of the arguments (and of which voices are installed when
    ``voices`` is None); English-only plans are those of the English-only engine. The caller
    sets job["split"]."""
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
    langs = [VOICES[voices[k % len(voices)]].lang for k in range(n)]
    need: dict[str, int] = {}
    for lang, m in zip(langs, n_sent):
        need[lang] = need.get(lang, 0) + int(m)
    sents = {lang: iter(TX.sentences(lang, m, seed * 7919 + 6, (4, 14))) for lang, m in need.items()}
    per_voice = [0] * len(voices)
    jobs = []
    for k in range(n):
        vi = k % len(voices)
        i = per_voice[vi]
        per_voice[vi] += 1
        voice, lang = voices[vi], langs[k]
        jobs.append({"kind": "festival", "lang": lang, "speaker": f"festival-{voice}", "index": i,
                     "text": " ".join(next(sents[lang]) for _ in range(int(n_sent[k]))), "voice": voice,
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
    meta = {"id": f"festival-{job['voice']}-{job['index']:05d}", "split": job["split"],
            "language": job.get("lang", VOICES[job["voice"]].lang),
            "speaker": job["speaker"], "source": "festival", "voice": syn.voice, "variant": "normal",
            "rate": job["rate"], "text": job["text"], "timing": "exact"}
    style = speaker_style(job["speaker"], 0)
    effort = float(rng.uniform(0.9, 1.1))
    keep = cfg.audio == "all" or (cfg.audio == "heldout" and job["split"] != "train")
    return finish_utterance(meta, x16, phones, style, rng, effort, cfg.p_augment, keep, cfg.p_telephone)
