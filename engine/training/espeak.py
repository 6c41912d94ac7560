"""espeak-ng synthesis with exact phoneme timing, through libespeak-ng (ctypes).

The library is initialised once per process in synchronous mode with phoneme events in IPA
(``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, NULL, PHONEME_EVENTS | PHONEME_IPA)``); the
synth callback receives the audio blocks and the events, and each event carries the sample
position at which its phoneme starts in that very audio. So the phoneme times of a
:class:`Synthesis` are exact for its audio, by construction (no alignment involved).

    syn = synthesize("Bob bought a pie.", "en-us", rate_wpm=170, pitch=50, variant="f3")
    syn.audio            # int16 mono at syn.sample_rate_hz (22050)
    syn.phonemes         # [Phone("b", 0.013, 0.042), ...]; "_" is a pause
    syn.words            # [(start_s, text), ...]

libespeak-ng keeps global state: one synthesis at a time per process (a lock guards it); build
in parallel with processes, not threads.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Phone", "Synthesis", "synthesize", "phoneme_events", "attach_closures", "available", "voices", "VARIANTS", "SAMPLE_RATE_HZ"]

SAMPLE_RATE_HZ = 22050
#: espeak-ng voice variants used as "speakers" (male m1..m7, female f1..f5, and others).
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                             "klatt", "klatt2", "klatt3", "croak", "whisper", "whisperf")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA, _INIT_DONT_EXIT = 0x0001, 0x0002, 0x8000
_EV_END, _EV_WORD, _EV_SENTENCE, _EV_PHONEME = 0, 1, 2, 7
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_CHARS_UTF8 = 1


@dataclass(frozen=True)
class Phone:
    """One phoneme: IPA (``"_"`` for a pause), start and end in seconds."""
    ipa: str
    start_s: float
    end_s: float

    @property
    def dur_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Synthesis:
    text: str
    voice: str
    audio: np.ndarray                    # int16 mono
    sample_rate_hz: int
    phonemes: list[Phone]
    words: list[tuple[float, str]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate_hz

    def float_audio(self) -> np.ndarray:
        return self.audio.astype(np.float32) / 32768.0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """The process's one binding of libespeak-ng (the library is a process-wide singleton).

    ``ipa`` selects the phoneme events' names: IPA (True) or espeak-ng's own mnemonics (False);
    the library fixes that at initialisation, so a call in the other mode initialises it again.
    """

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = lib = ctypes.CDLL(name)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lock = threading.Lock()
        self.ipa: bool | None = None
        self._blocks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, str]] = []
        self._cb = _CALLBACK(self._on_synth)          # keep a reference: the library calls it
        self._initialise(True)

    def _initialise(self, ipa: bool) -> None:
        flags = _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT | (_INIT_PHONEME_IPA if ipa else 0)
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, flags)
        if rate != SAMPLE_RATE_HZ:
            raise RuntimeError(f"libespeak-ng initialised at {rate} Hz, expected {SAMPLE_RATE_HZ}")
        self.lib.espeak_SetSynthCallback(self._cb)
        self.ipa = ipa

    def _on_synth(self, wav, n, ev) -> int:
        if n > 0 and wav:
            self._blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while ev[i].type != _EV_END:
            e = ev[i]
            name = ""
            if e.type == _EV_PHONEME:
                name = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace")
            self._events.append((e.type, e.sample, e.text_position, e.length, name))
            i += 1
        return 0

    def run(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int,
            word_gap: int, ipa: bool = True) -> tuple[np.ndarray, list]:
        lib = self.lib
        if ipa != self.ipa:
            self._initialise(ipa)
        lib.espeak_SetSynthCallback(self._cb)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_RANGE, int(pitch_range), 0)
        lib.espeak_SetParameter(_WORDGAP, int(word_gap), 0)
        lib.espeak_SetParameter(_VOLUME, 100, 0)
        self._blocks, self._events = [], []
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        audio = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.int16)
        return audio.astype(np.int16), list(self._events)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def phoneme_events(text: str, voice: str, rate_wpm: int = 170, pitch: int = 50, pitch_range: int = 50,
                   word_gap: int = 0, ipa: bool = True) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The raw synthesis: (int16 mono audio at 22050 Hz, [(start sample, phoneme name), ...]) in
    event order; names in IPA or, with ``ipa=False``, espeak-ng's mnemonics ("a:", "@", "p")."""
    eng = _get()
    with eng.lock:
        audio, events = eng.run(text, voice, rate_wpm, pitch, pitch_range, word_gap, ipa)
    return audio, [(sample, name) for typ, sample, _, _, name in events if typ == _EV_PHONEME]


def available() -> bool:
    """libespeak-ng loads and initialises."""
    try:
        _get()
    except (OSError, RuntimeError):
        return False
    return True


def synthesize(text: str, voice: str, rate_wpm: int = 170, pitch: int = 50, pitch_range: int = 50,
               variant: str | None = None, word_gap: int = 0) -> Synthesis:
    """Speak ``text`` with espeak-ng voice ``voice`` (e.g. "en-us", "cmn-latn-pinyin"), optional
    variant ("f3", "whisper", ...); rate in words/min (80..450), pitch and range 0..100.

    Returns the audio (int16, 22050 Hz) and its phonemes: a contiguous list covering the whole
    audio, IPA names, ``"_"`` for pauses (leading/trailing silence included).
    """
    full = voice + (f"+{variant}" if variant else "")
    eng = _get()
    with eng.lock:
        audio, events = eng.run(text, full, rate_wpm, pitch, pitch_range, word_gap)
    sr = SAMPLE_RATE_HZ
    n = audio.size
    starts: list[tuple[int, str]] = []
    words: list[tuple[float, str]] = []
    for typ, sample, pos, length, name in events:
        if typ == _EV_PHONEME:
            starts.append((min(max(sample, 0), n), name or "_"))
        elif typ == _EV_WORD and length > 0:
            words.append((sample / sr, text[pos - 1:pos - 1 + length]))
    starts.sort(key=lambda s: s[0])
    phones: list[Phone] = []
    prev_end = 0
    for k, (s, name) in enumerate(starts):
        e = starts[k + 1][0] if k + 1 < len(starts) else n
        if s > prev_end:                          # a gap before the first phoneme: silence
            phones.append(Phone("_", prev_end / sr, s / sr))
        if e <= s:
            continue
        if name == "_" and phones and phones[-1].ipa == "_":
            phones[-1] = Phone("_", phones[-1].start_s, e / sr)
        else:
            phones.append(Phone(name, s / sr, e / sr))
        prev_end = e
    if prev_end < n:
        phones.append(Phone("_", prev_end / sr, n / sr))
    return Synthesis(text, full, audio, sr, attach_closures(phones, audio, sr), words)


_STOPS = set("pbtdkgɡqcɟʈɖɢʔ")


def attach_closures(phones: list[Phone], audio: np.ndarray, sr: int, max_closure_s: float = 0.12,
                    silence: int = 8) -> list[Phone]:
    """Give each stop its closure.

    espeak-ng emits a stop's phoneme event at its release: the silent closure before it is
    counted in the previous phoneme (or pause). For every stop (p b t d k g ...) preceded by
    digital silence (|sample| <= ``silence``, int16) that reaches up to its event, the boundary
    moves back to the start of that silence (at most ``max_closure_s`` and never past the
    middle of the previous phoneme), so the stop's span is closure + release, as in phonetics.
    """
    quiet = np.abs(audio.astype(np.int32)) <= silence
    out = list(phones)
    for k in range(1, len(out)):
        p, prev = out[k], out[k - 1]
        if not p.ipa or p.ipa[0] not in _STOPS:
            continue
        i = int(round(p.start_s * sr))
        lo = int(round(max(prev.start_s + 0.5 * prev.dur_s if prev.ipa != "_" else prev.start_s,
                           p.start_s - max_closure_s) * sr))
        i = min(i, quiet.size)
        loud = np.flatnonzero(~quiet[lo:i])           # the silence reaching up to the event
        j = lo + int(loud[-1]) + 1 if loud.size else lo
        if i - j >= int(0.01 * sr):
            t = j / sr
            out[k - 1] = Phone(prev.ipa, prev.start_s, t)
            out[k] = Phone(p.ipa, t, p.end_s)
    return [p for p in out if p.end_s > p.start_s]


def voices() -> list[str]:
    """Voice names known to this espeak-ng (``espeak-ng --voices`` language column)."""
    import subprocess
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
    return [line.split()[1] for line in out.splitlines()[1:] if line.strip()]
