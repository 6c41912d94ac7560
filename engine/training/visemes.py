"""Phonemes (IPA, as espeak-ng names them) -> visemes -> articulatory targets for the mouth.

A phoneme's IPA string is reduced to its base symbols (length, aspiration, nasalisation, tone and
stress marks are dropped; ``ʷ`` adds rounding, ``ʲ`` adds spreading). Each base symbol belongs to
one viseme class; a diphthong or affricate ("aɪ", "tʃ", "pf") becomes a sequence of sub-segments
that split the phoneme's time equally.

A viseme is a target for each articulatory parameter of :data:`PARAMS` plus a *dominance*
(how strongly the segment imposes that parameter on its neighbourhood, Cohen & Massaro 1993):
lips are dominant on bilabials (closure) and labiodentals (lower lip to the teeth), rounding on
rounded vowels and w, the jaw on vowels (by height); consonants made with the tongue leave the
lips and the jaw mostly to their neighbours (low dominance), so "s" between two "u" is rounded.

The parameters map to engine.motion channels in :func:`engine.training.targets.mouth_channels`.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["PARAMS", "Viseme", "VISEMES", "segments", "viseme_of", "is_bilabial", "is_vowel", "base_symbols"]

#: Articulatory parameters, each 0..1 (0 = the photo's rest).
PARAMS: tuple[str, ...] = ("jaw", "close", "funnel", "pucker", "spread", "roll", "upper", "lower")
P = {n: i for i, n in enumerate(PARAMS)}


@dataclass(frozen=True)
class Viseme:
    name: str
    target: tuple[float, ...]      # per PARAMS
    dominance: tuple[float, ...]   # per PARAMS (alpha of the dominance function)
    spread_ms: float = 60.0        # how far the dominance reaches beyond the segment's half-length
    close_spread_ms: float | None = None   # the lip closure's own (shorter) reach; None: spread_ms


def _v(name: str, spread_ms: float = 60.0, close_spread_ms: float | None = None, **kw) -> Viseme:
    t = [0.0] * len(PARAMS)
    d = [0.3] * len(PARAMS)
    for k, val in kw.items():
        if k.startswith("d_"):
            d[P[k[2:]]] = val
        else:
            t[P[k]] = val
    return Viseme(name, tuple(t), tuple(d), spread_ms, close_spread_ms)


# dominance levels: 0.15 weak (the neighbours decide), 1 normal, 4 strong, 40 imposed
VISEMES: dict[str, Viseme] = {
    # vowels, by height (jaw) and rounding/spreading
    "V_open": _v("V_open", jaw=0.75, lower=0.45, upper=0.10, d_jaw=1.5, d_lower=1.2, d_funnel=1, d_pucker=1,
                 d_spread=1, d_close=0.5),
    "V_open_round": _v("V_open_round", jaw=0.65, funnel=0.45, pucker=0.1, lower=0.35, d_jaw=1.5, d_funnel=2,
                       d_pucker=1.5, d_lower=1.2, d_close=0.5, d_spread=1.5),
    "V_openmid": _v("V_openmid", jaw=0.52, spread=0.15, lower=0.3, upper=0.08, d_jaw=1.5, d_lower=1.2, d_funnel=1,
                    d_pucker=1, d_spread=1, d_close=0.5),
    "V_openmid_round": _v("V_openmid_round", jaw=0.48, funnel=0.5, pucker=0.2, lower=0.25, d_jaw=1.5, d_funnel=2,
                          d_pucker=1.5, d_lower=1.2, d_close=0.5, d_spread=1.5),
    "V_mid": _v("V_mid", jaw=0.35, lower=0.18, d_jaw=1.0, d_lower=1.0, d_close=0.5, d_funnel=0.5, d_pucker=0.5,
                d_spread=0.5),
    "V_closemid": _v("V_closemid", jaw=0.32, spread=0.35, lower=0.15, d_jaw=1.5, d_spread=1.5, d_close=0.5,
                     d_funnel=1, d_pucker=1, d_lower=1),
    "V_closemid_round": _v("V_closemid_round", jaw=0.3, funnel=0.45, pucker=0.45, lower=0.1, d_jaw=1.5,
                           d_funnel=2.5, d_pucker=2.5, d_close=0.5, d_spread=2, d_lower=1),
    "V_close": _v("V_close", jaw=0.16, spread=0.55, lower=0.08, d_jaw=1.5, d_spread=2, d_close=0.5, d_funnel=1.5,
                  d_pucker=1.5, d_lower=1),
    "V_close_round": _v("V_close_round", jaw=0.14, funnel=0.25, pucker=0.8, d_jaw=1.5, d_funnel=2.5, d_pucker=3,
                        d_close=0.5, d_spread=2, d_lower=1),
    "V_close_central": _v("V_close_central", jaw=0.18, spread=0.2, d_jaw=1.5, d_spread=1, d_close=0.5),
    # consonants
    "bilabial": _v("bilabial", 30.0, 12.0, close=1.0, jaw=0.06, d_close=8, d_jaw=2, d_funnel=0.5, d_pucker=0.5,
                   d_spread=0.8, d_lower=3, d_roll=2, d_upper=3),
    "bilabial_fric": _v("bilabial_fric", 35.0, 15.0, close=0.65, jaw=0.08, d_close=4, d_jaw=2, d_lower=2, d_upper=2),
    "labiodental": _v("labiodental", 35.0, roll=0.85, upper=0.25, jaw=0.09, d_roll=8, d_upper=3, d_jaw=2,
                      d_close=3, d_lower=3),
    "labiovelar": _v("labiovelar", 60.0, pucker=0.8, funnel=0.35, jaw=0.12, d_pucker=6, d_funnel=4, d_jaw=1,
                     d_spread=4, d_close=0.5),
    "labial_palatal": _v("labial_palatal", 60.0, pucker=0.6, funnel=0.2, spread=0.0, jaw=0.12, d_pucker=5,
                         d_funnel=3, d_spread=3, d_jaw=1),
    "dental": _v("dental", 45.0, jaw=0.16, lower=0.12, d_jaw=1.2, d_lower=1, d_close=2),
    "alveolar": _v("alveolar", 40.0, jaw=0.13, d_jaw=0.6, d_close=2, d_funnel=0.15, d_pucker=0.15, d_spread=0.15,
                   d_lower=0.4, d_upper=0.3),
    "sibilant": _v("sibilant", 40.0, jaw=0.08, spread=0.25, upper=0.12, lower=0.12, d_jaw=2.5, d_spread=0.5,
                   d_upper=1, d_lower=1, d_close=3, d_funnel=0.3, d_pucker=0.3),
    "postalveolar": _v("postalveolar", 55.0, jaw=0.1, funnel=0.5, pucker=0.35, upper=0.15, lower=0.12,
                       d_jaw=2, d_funnel=4, d_pucker=3, d_spread=3, d_close=3, d_upper=1, d_lower=1),
    "liquid": _v("liquid", 45.0, jaw=0.2, d_jaw=0.5, d_close=1.5, d_funnel=0.2, d_pucker=0.2, d_spread=0.2,
                 d_lower=0.3),
    "rhotic_approx": _v("rhotic_approx", 50.0, jaw=0.15, funnel=0.3, pucker=0.2, d_jaw=0.6, d_funnel=1.5,
                        d_pucker=1, d_close=1.5),
    "palatal": _v("palatal", 45.0, jaw=0.12, spread=0.35, d_jaw=0.8, d_spread=1, d_close=2),
    "velar": _v("velar", 40.0, jaw=0.18, d_jaw=0.5, d_close=2, d_funnel=0.15, d_pucker=0.15, d_spread=0.15,
                d_lower=0.3, d_upper=0.3),
    "glottal": _v("glottal", 40.0, jaw=0.25, d_jaw=0.1, d_close=0.5, d_funnel=0.05, d_pucker=0.05, d_spread=0.05,
                  d_lower=0.1, d_upper=0.1, d_roll=0.05),
    "pause": _v("pause", 90.0, d_jaw=0.6, d_close=0.6, d_funnel=0.6, d_pucker=0.6, d_spread=0.6, d_roll=0.6,
                d_upper=0.6, d_lower=0.6),
}

_VOWELS: dict[str, str] = {}
for chars, cls in (("aäɶ", "V_open"), ("ɑæɐ", "V_open"), ("ɒ", "V_open_round"),
                   ("ɛɜʌ", "V_openmid"), ("œɞɔ", "V_openmid_round"),
                   ("əɘɵɚɝ", "V_mid"), ("eɤ", "V_closemid"), ("øo", "V_closemid_round"),
                   ("iɪɯ", "V_close"), ("yʏuʊʉ", "V_close_round"), ("ɨ", "V_close_central")):
    for ch in chars:
        _VOWELS[ch] = cls
_VOWELS["ɵ"] = "V_closemid_round"

_CONS: dict[str, str] = {}
for chars, cls in (("pbmɓʙ", "bilabial"), ("ɸβ", "bilabial_fric"), ("fvɱʋ", "labiodental"),
                   ("wʍ", "labiovelar"), ("ɥ", "labial_palatal"), ("θð", "dental"),
                   ("tdnɗɳʈɖɾɽr", "alveolar"), ("szɬɮʂʐ", "sibilant"), ("ʃʒɕʑ", "postalveolar"),
                   ("lɭʎɫ", "liquid"), ("ɹɻ", "rhotic_approx"), ("jçʝɲcɟ", "palatal"),
                   ("kgɡŋxɣχʁqɢɴʀɰħʕ", "velar"), ("hɦʔ", "glottal")):
    for ch in chars:
        _CONS[ch] = cls

_DROP = set("ːˑˈˌ'ʰʱ̩̯̃͡‿-̪̥̬̺̻̞̝̟̠ʼ˞|#:.;,!?()123456789")


def base_symbols(ipa: str) -> list[str]:
    """The base IPA letters of a phoneme name, modifiers dropped ("tʃʰ" -> ["t", "ʃ"])."""
    out = []
    for ch in unicodedata.normalize("NFD", ipa):
        if ch in _DROP or unicodedata.category(ch) == "Mn":
            continue
        if ch in "ʷʲˠˤ":
            out.append(ch)
            continue
        low = ch.lower()
        if low in _VOWELS or low in _CONS:
            out.append(low)
    return out


def viseme_of(symbol: str) -> Viseme:
    """The viseme of one base symbol (unknown symbols: alveolar-like, weak)."""
    if symbol in _VOWELS:
        return VISEMES[_VOWELS[symbol]]
    return VISEMES[_CONS.get(symbol, "alveolar")]


def segments(ipa: str, start_s: float, end_s: float) -> list[tuple[Viseme, float, float, str]]:
    """Sub-segments (viseme, start, end, symbol) of one phoneme; pauses -> one "pause" segment.

    Affricates keep more time on their second part ("tʃ": t 35 %, ʃ 65 %); a secondary
    articulation (ʷ, ʲ) modifies the previous symbol's target instead of taking time.
    """
    if ipa in ("_", ""):
        return [(VISEMES["pause"], start_s, end_s, "_")]
    syms = base_symbols(ipa)
    if not syms:
        return [(VISEMES["alveolar"], start_s, end_s, ipa)]
    parts: list[tuple[Viseme, str]] = []
    for s in syms:
        if s in "ʷʲˠˤ":
            if parts and s in "ʷʲ":
                v, name = parts[-1]
                t, d = list(v.target), list(v.dominance)
                if s == "ʷ":
                    t[P["pucker"]] = max(t[P["pucker"]], 0.55)
                    d[P["pucker"]] = max(d[P["pucker"]], 3.0)
                else:
                    t[P["spread"]] = max(t[P["spread"]], 0.3)
                    d[P["spread"]] = max(d[P["spread"]], 1.5)
                parts[-1] = (Viseme(v.name + s, tuple(t), tuple(d), v.spread_ms), name + s)
            continue
        parts.append((viseme_of(s), s))
    if not parts:
        return [(VISEMES["alveolar"], start_s, end_s, ipa)]
    if len(parts) > 1 and all(p[1][0] not in _VOWELS for p in parts):
        weights = [0.35] + [0.65 / (len(parts) - 1)] * (len(parts) - 1)    # affricate
    else:
        weights = [1.0 / len(parts)] * len(parts)
    out, t = [], start_s
    dur = end_s - start_s
    for (v, name), w in zip(parts, weights):
        out.append((v, t, t + w * dur, name))
        t += w * dur
    return out


def is_bilabial(ipa: str) -> bool:
    """A phoneme whose articulation closes the lips (p, b, m and their variants)."""
    syms = [s for s in base_symbols(ipa) if s not in "ʷʲˠˤ"]
    return bool(syms) and any(_CONS.get(s) == "bilabial" for s in syms)


def is_vowel(ipa: str) -> bool:
    syms = base_symbols(ipa)
    return bool(syms) and syms[0] in _VOWELS
