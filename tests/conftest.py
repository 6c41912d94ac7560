"""Shared fixtures. Media are made at test time in temporary directories (nothing is downloaded).

Helpers for making speech live in tests/speech.py (importable as ``speech`` from any test).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import speech as sp


@dataclass(frozen=True)
class SpeechClip:
    """One espeak-ng sentence: its language, voice, text, wav path (22050 Hz) and 16 kHz samples."""
    lang: str
    voice: str
    text: str
    path: Path
    samples: np.ndarray      # float32 mono, 16 kHz


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> dict[str, SpeechClip]:
    """The sentences of speech.SENTENCES (en, es, de, fr) rendered by espeak-ng at 150 wpm."""
    if not sp.have_espeak():
        pytest.skip("espeak-ng is not installed")
    from emote.engine.audio import load_audio
    d = tmp_path_factory.mktemp("speech")
    clips = {}
    for lang, text in sp.SENTENCES.items():
        path = sp.make_speech(text, lang, d / f"{lang}.wav")
        clips[lang] = SpeechClip(lang, lang, text, path, load_audio(path))
    return clips


@pytest.fixture(scope="session")
def speech_en(speech_clips) -> SpeechClip:
    """The English sentence."""
    return speech_clips["en"]
