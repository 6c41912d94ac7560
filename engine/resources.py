"""Paths of the data files shipped inside the package (``engine/assets/``, installed as package data)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["asset_path", "default_portrait_path", "demo_speech_path"]


def asset_path(name: str) -> Path:
    """Path of one file in ``emote/engine/assets`` (FileNotFoundError names a broken install)."""
    p = Path(str(files("emote.engine") / "assets" / name))
    if not p.is_file():
        raise FileNotFoundError(f"packaged asset {name} is missing at {p}: reinstall emote")
    return p


def default_portrait_path() -> Path:
    """The embedded default portrait: a 512x512 JPEG (NASA astronaut photo, public domain)."""
    return asset_path("portrait_astronaut.jpg")


def demo_speech_path() -> Path:
    """The embedded demo speech: about 6 s of English (espeak-ng), OGG/Opus."""
    return asset_path("demo_speech_en.ogg")
