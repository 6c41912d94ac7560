"""Real speech with transcripts, from Debian packages (nothing downloaded).

* asterisk-core-sounds-{en,es,fr,it,ru}-wav: telephone prompts (8 kHz), one voice per language
  (en and es: Allison, fr: June, it: Carlo, ru: IvrvoiceRU); transcripts in
  /usr/share/doc/asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz ("name: text").
* fillets-ng-data-{cs,nl}: the game's dialogue (Ogg, 22 kHz), several actors (the small fish,
  the big fish, and other characters, told apart by the line's font); text in fillets-ng-data's
  script/<level>/dialogs_<lang>.lua (dialogId("id", "font_x", "english") + dialogStr("text")).

:data:`DEFAULT_SOURCES` holds the five asterisk voices only; fillets is opt-in (``sources=SOURCES``):
the closure audit (``python -m emote.engine.training.align --closure-audit DATA``) finds no energy
dip at its DTW-aligned bilabials (a flat profile over +-300 ms: contrast -0.5 to -2.4 dB, where
the asterisk voices give -3 to -18 dB and espeak-ng's exact labels -9 dB), so its labels would teach
the model that closures come at random.

:func:`plan_real` lists the jobs; :func:`make_real` aligns one (engine.training.align.dtw_align
against espeak-ng's synthesis of the transcript) and computes its features and targets.
Lines whose text is a sound description ("[beep]", "<tone>"), that have no letters, or whose
DTW cost says the text does not match the audio are skipped.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Item", "asterisk_items", "fillets_items", "plan_real", "make_real", "SOURCES", "DEFAULT_SOURCES",
           "available_sources"]

ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
ASTERISK_DOC = Path("/usr/share/doc")
FILLETS_ROOT = Path("/usr/share/games/fillets-ng")

#: language -> (sound dir, espeak voice, espeak variant for the DTW reference, speaker id)
ASTERISK = {
    "en": ("en_US_f_Allison", "en-us", "f2", "asterisk-en-Allison"),
    "es": ("es_MX_f_Allison", "es-419", "f2", "asterisk-es-Allison"),
    "fr": ("fr_CA_f_June", "fr", "f2", "asterisk-fr-June"),
    "it": ("it_IT_m_Carlo", "it", "m2", "asterisk-it-Carlo"),
    "ru": ("ru_RU_f_IvrvoiceRU", "ru", "f2", "asterisk-ru-IvrvoiceRU"),
}
FILLETS = {"cs": "cs", "nl": "nl"}
#: every source, in a fixed order (a job's seed holds its source's index here)
SOURCES = tuple(f"asterisk-{l}" for l in ASTERISK) + tuple(f"fillets-{l}" for l in FILLETS)
#: the sources a build uses unless told otherwise: those whose labels pass the closure audit
DEFAULT_SOURCES = tuple(f"asterisk-{l}" for l in ASTERISK)
MAX_DTW_COST = 5.5     # mean per-step cost above which the transcript is taken not to match


@dataclass(frozen=True)
class Item:
    source: str
    lang: str
    name: str
    path: Path
    text: str
    speaker: str
    voice: str
    variant: str | None


def _asterisk_dir(lang: str) -> Path:
    return ASTERISK_ROOT / ASTERISK[lang][0]


def asterisk_items(lang: str) -> list[Item]:
    sub, voice, var, spk = ASTERISK[lang]
    doc = ASTERISK_DOC / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
    root = _asterisk_dir(lang)
    if not doc.is_file() or not root.is_dir():
        return []
    out = []
    with gzip.open(doc, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip().lstrip("\ufeff")
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = (s.strip() for s in line.split(":", 1))
            text = re.sub(r"\s+", " ", text)
            if not text or text[0] in "[<(" or not re.search(r"[^\W\d_]", text):
                continue
            text = re.sub(r"[\[<(].*?[\]>)]", " ", text).strip()
            wav = root / f"{name}.wav"
            if text and wav.is_file():
                out.append(Item(f"asterisk-{lang}", lang, name, wav, text, spk, voice, var))
    return out


_DIALOG = re.compile(r'dialogId\(\s*"((?:[^"\\]|\\.)*)"\s*,\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:[^"\\]|\\.)*"\s*\)\s*'
                     r'dialogStr\(\s*"((?:[^"\\]|\\.)*)"\s*\)', re.S)


def _unlua(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), s)


def fillets_items(lang: str) -> list[Item]:
    out = []
    script = FILLETS_ROOT / "script"
    if not script.is_dir():
        return []
    for lua in sorted(script.glob(f"*/dialogs_{lang}.lua")):
        level = lua.parent.name
        text = lua.read_text(encoding="utf-8", errors="replace")
        for did, font, line in _DIALOG.findall(text):
            ogg = FILLETS_ROOT / "sound" / level / lang / f"{did}.ogg"
            line = re.sub(r"\s+", " ", _unlua(line)).strip()
            if not ogg.is_file() or not re.search(r"[^\W\d_]", line):
                continue
            role = font.replace("font_", "") or "other"
            role = role if role in ("small", "big") else "other"
            voice = {"cs": "cs", "nl": "nl"}[lang]
            variant = "f2" if role == "small" else "m2"
            out.append(Item(f"fillets-{lang}", lang, f"{level}/{did}", ogg, line, f"fillets-{lang}-{role}", voice,
                            variant))
    return out


def available_sources() -> dict[str, int]:
    """Installed real sources and their item counts."""
    out = {}
    for lang in ASTERISK:
        n = len(asterisk_items(lang))
        if n:
            out[f"asterisk-{lang}"] = n
    for lang in FILLETS:
        n = len(fillets_items(lang))
        if n:
            out[f"fillets-{lang}"] = n
    return out


def _items(source: str) -> list[Item]:
    kind, lang = source.split("-", 1)
    return asterisk_items(lang) if kind == "asterisk" else fillets_items(lang)


def plan_real(seed: int, max_per_source: int | None = None, sources: tuple[str, ...] = DEFAULT_SOURCES) -> list[dict]:
    """Jobs for the real utterances of ``sources`` (names from SOURCES), at most
    ``max_per_source`` each. A job's "seed" is [seed, 5, SOURCES.index(source), item index],
    whatever ``sources`` holds. The caller sets job["split"]."""
    unknown = [s for s in sources if s not in SOURCES]
    if isinstance(sources, str) or unknown:
        raise ValueError(f"unknown real sources {unknown or sources!r}; known: {', '.join(SOURCES)}")
    jobs = []
    for source in (s for s in SOURCES if s in sources):
        items = _items(source)
        if max_per_source is not None:
            items = items[:max_per_source]
        for i, it in enumerate(items):
            jobs.append({"kind": "real", "source": source, "lang": it.lang, "speaker": it.speaker, "index": i,
                         "name": it.name, "path": str(it.path), "text": it.text, "voice": it.voice,
                         "variant": it.variant, "seed": [seed, 5, SOURCES.index(source), i]})
    return jobs


def make_real(job: dict, cfg):
    """One real utterance: DTW phoneme times, features of the recording, targets."""
    from emote.engine.audio import load_audio

    from . import align
    from .build_data import SR, finish_utterance, speaker_style

    rng = np.random.default_rng(job["seed"])
    x = load_audio(job["path"], SR)
    if x.size < int(0.25 * SR):
        return None
    lead = np.zeros(int(rng.uniform(0.1, 0.4) * SR), np.float32)
    x = np.concatenate([lead, x, np.zeros(int(0.2 * SR), np.float32)])
    al = align.dtw_align(x, SR, job["text"], job["voice"], job["variant"])
    if al.cost > MAX_DTW_COST or len(al.phonemes) < 2:
        return None
    meta = {"id": f"{job['source']}-{job['index']:05d}", "split": job["split"], "language": job["lang"],
            "speaker": job["speaker"], "source": job["source"], "variant": "real", "file": job["name"],
            "text": job["text"], "timing": "dtw", "dtw_cost": round(al.cost, 3), "dtw_rate_wpm": al.rate_wpm}
    style = speaker_style(job["speaker"], 0)
    keep = cfg.audio == "all" or (cfg.audio == "heldout" and job["split"] != "train")
    return finish_utterance(meta, x, al.phonemes, style, rng, float(rng.uniform(0.9, 1.1)), cfg.p_augment, keep)
