"""Text sources per language: sentences for espeak-ng to speak.

Each :class:`Language` names its espeak-ng voice and, when faker has the locale, its faker locale.
Sentences are drawn from a word pool made of the locale's own faker data (its lorem words where
it has them, and city, street, first/last names, jobs, companies), with words also found in
en_US's pool removed (faker falls back to English for what a locale lacks); a language without
a faker locale (or whose pool is too small) speaks pronounceable random words made from its
orthography's syllables. Mandarin is given as tone-numbered pinyin to voice cmn-latn-pinyin
(this espeak-ng reads Chinese characters wrongly).

Everything is a pure function of the seed: ``sentences(lang, n, seed)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Language", "LANGUAGES", "language", "sentences", "word_pool", "have_faker"]


@dataclass(frozen=True)
class Language:
    code: str               # our code (BCP-47-like)
    voice: str              # espeak-ng voice
    locale: str | None      # faker locale, or None
    syllables: str = ""     # "onsets|nuclei|codas" for the random-word fallback (space separated)


_LATIN = "p b t d k g m n f v s z l r h j w ch sh st tr pr kr bl|a e i o u a e o|n s r l m t k"

LANGUAGES: tuple[Language, ...] = (
    Language("af", "af", None, "b d f g h k l m n p r s t v w sk st|a e i o u ee oo ie oe|n s r k l t"),
    Language("ar", "ar", "ar_AA"),
    Language("bg", "bg", "bg_BG"),
    Language("bn", "bn", "bn_BD"),
    Language("bs", "bs", "bs_BA"),
    Language("ca", "ca", None, "b c d f g l m n p r s t v ll ny qu|a e i o u à è|n s r l t"),
    Language("cmn", "cmn-latn-pinyin", None),
    Language("cs", "cs", "cs_CZ"),
    Language("cy", "cy", None, "b c d dd f ff g h l ll m n p r s t th|a e i o u w y|n r l d s"),
    Language("da", "da", "da_DK"),
    Language("de", "de", "de_DE"),
    Language("el", "el", "el_GR"),
    Language("en", "en-us", "en_US"),
    Language("en-gb", "en", "en_GB"),
    Language("es", "es", "es_ES"),
    Language("et", "et", "et_EE"),
    Language("eu", "eu", None, "b d g k l m n p r s t x z tx ts|a e i o u|n r s k"),
    Language("fa", "fa", "fa_IR"),
    Language("fi", "fi", "fi_FI"),
    Language("fr", "fr", "fr_FR"),
    Language("he", "he", "he_IL"),
    Language("hi", "hi", "hi_IN"),
    Language("hr", "hr", "hr_HR"),
    Language("hu", "hu", "hu_HU"),
    Language("hy", "hy", "hy_AM"),
    Language("id", "id", "id_ID"),
    Language("is", "is", "is_IS"),
    Language("it", "it", "it_IT"),
    Language("ka", "ka", "ka_GE"),
    Language("ko", "ko", "ko_KR"),
    Language("lt", "lt", "lt_LT"),
    Language("lv", "lv", "lv_LV"),
    Language("mk", "mk", "mk_MK"),
    Language("ms", "ms", None, "b d g h j k l m n p r s t w ng ny|a e i o u|n ng k r s t"),
    Language("nb", "nb", "no_NO"),
    Language("ne", "ne", "ne_NP"),
    Language("nl", "nl", "nl_NL"),
    Language("pl", "pl", "pl_PL"),
    Language("pt", "pt", "pt_PT"),
    Language("pt-br", "pt-br", "pt_BR"),
    Language("ro", "ro", "ro_RO"),
    Language("ru", "ru", "ru_RU"),
    Language("sk", "sk", "sk_SK"),
    Language("sl", "sl", "sl_SI"),
    Language("sq", "sq", "sq_AL"),
    Language("sv", "sv", "sv_SE"),
    Language("sw", "sw", None, "b ch d f g h j k l m n p s t v w y z mb nd ng|a e i o u|"),
    Language("ta", "ta", "ta_IN"),
    Language("th", "th", "th_TH"),
    Language("tr", "tr", "tr_TR"),
    Language("uk", "uk", "uk_UA"),
    Language("vi", "vi", "vi_VN"),
)
_BY_CODE = {l.code: l for l in LANGUAGES}

_PINYIN_INITIALS = "b p m f d t n l g k h j q x zh ch sh r z c s y w".split()
_PINYIN_FINALS = "a o e ai ei ao ou an en ang eng ong i ia ie iao iu ian in iang ing u ua uo uai ui uan un".split()


def language(code: str) -> Language:
    try:
        return _BY_CODE[code]
    except KeyError:
        raise KeyError(f"unknown language {code!r}; known: {', '.join(_BY_CODE)}") from None


_PUNCT = "\"'’‘“”.,;:!?()[]{}«»/\\&+*#%@-–—·"


def _tokens(s: str) -> list[str]:
    """Whitespace-separated words, punctuation stripped (combining marks kept: Indic scripts)."""
    out = []
    for w in s.split():
        w = w.strip(_PUNCT)
        if w and not any(c.isdigit() for c in w) and not any(c in _PUNCT for c in w):
            out.append(w)
    return out


_PROVIDERS = ("lorem", "person", "address", "job", "company", "color", "date_time")


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


@functools.lru_cache(maxsize=None)
def _raw_pool(locale: str) -> tuple[str, ...]:
    """Every word of the locale's own faker data (static word lists of its lorem, person,
    address, job, company ... providers; format strings skipped). Reading the lists instead of
    sampling faker keeps the pool independent of Python's per-process hash seed."""
    import importlib

    words: set[str] = set()
    for kind in _PROVIDERS:
        try:
            mod = importlib.import_module(f"faker.providers.{kind}.{locale}")
        except ImportError:
            continue
        prov = getattr(mod, "Provider", None)
        if prov is None:
            continue
        for name, value in vars(prov).items():
            if name.startswith("_") or "format" in name:
                continue
            for item in _strings(value):
                if "{" in item or "#" in item or "%" in item:
                    continue
                words.update(_tokens(item))
    return tuple(sorted(words))


@functools.lru_cache(maxsize=None)
def have_faker() -> bool:
    """faker (the ``train`` extra) is installed; without it every language speaks random words."""
    try:
        import faker  # noqa: F401
    except ImportError:
        return False
    return True


_NON_LATIN = {"ar", "bg", "bn", "el", "fa", "he", "hi", "hy", "ka", "ko", "mk", "ne", "ru", "ta", "th", "uk"}


@functools.lru_cache(maxsize=None)
def _foreign() -> frozenset[str]:
    """English and Latin words (faker's fallbacks) in lower and original case."""
    from faker.providers.lorem.la import Provider as La

    words = set(_raw_pool("en_US")) | set(La.word_list)
    return frozenset(words | {w.lower() for w in words} | {w.capitalize() for w in words})


@functools.lru_cache(maxsize=None)
def word_pool(lang: str) -> tuple[str, ...]:
    """The words a language's sentences are drawn from (empty: use random syllables)."""
    lg = language(lang)
    if lg.locale is None or not have_faker():
        return ()
    pool = set(_raw_pool(lg.locale))
    if lg.locale not in ("en_US", "en_GB"):
        pool -= _foreign()
        pool = {w for w in pool if w.lower() not in _foreign()}
        if lg.code in _NON_LATIN:
            pool = {w for w in pool if not any(c.isascii() and c.isalpha() for c in w)}   # no mixed scripts
    pool = {w for w in pool if len(w) > 1}
    return tuple(sorted(pool)) if len(pool) >= 150 else ()


def _random_words(lg: Language, rng: np.random.Generator, n: int) -> list[str]:
    if lg.code == "cmn":
        out = []
        for _ in range(n):
            syl = []
            for _ in range(int(rng.integers(1, 3))):
                ini = _PINYIN_INITIALS[int(rng.integers(len(_PINYIN_INITIALS)))] if rng.random() < 0.85 else ""
                fin = _PINYIN_FINALS[int(rng.integers(len(_PINYIN_FINALS)))]
                if ini in ("j", "q", "x") and not fin.startswith("i"):
                    fin = "i" + fin.lstrip("iu") if fin[0] in "aoe" else "i"
                syl.append(f"{ini}{fin}{int(rng.integers(1, 5))}")
            out.append("".join(syl))
        return out
    spec = lg.syllables or _LATIN
    ons, nuc, cod = (part.split() for part in spec.split("|"))
    out = []
    for _ in range(n):
        w = ""
        for _ in range(int(rng.integers(1, 4))):
            w += ons[int(rng.integers(len(ons)))] if rng.random() < 0.85 else ""
            w += nuc[int(rng.integers(len(nuc)))]
            if cod and rng.random() < 0.3:
                w += cod[int(rng.integers(len(cod)))]
        out.append(w)
    return out


def sentences(lang: str, n: int, seed: int, words_per_sentence: tuple[int, int] = (4, 14)) -> list[str]:
    """``n`` sentences in ``lang`` (a pure function of the seed); a few are questions or exclamations,
    some have commas (pauses)."""
    lg = language(lang)
    rng = np.random.default_rng([seed, sum(map(ord, lang))])
    pool = word_pool(lang)
    out = []
    for _ in range(n):
        k = int(rng.integers(words_per_sentence[0], words_per_sentence[1] + 1))
        if pool:
            words = [pool[int(i)] for i in rng.integers(len(pool), size=k)]
        else:
            words = _random_words(lg, rng, k)
        if k > 6 and rng.random() < 0.5:
            j = int(rng.integers(2, k - 2))
            words[j] = words[j] + ","
        end = "." if rng.random() < 0.75 else ("?" if rng.random() < 0.6 else "!")
        s = " ".join(words)
        if lg.code != "cmn":
            s = s[:1].upper() + s[1:]
        out.append(s + end)
    return out
