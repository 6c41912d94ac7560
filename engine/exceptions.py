"""emote's own errors. Each message says what is wrong and what to do; the CLI prints it on one line."""
from __future__ import annotations


class EmoteError(Exception):
    """Base of every error that a user can cause and fix."""


class InputFileError(EmoteError):
    """A file that does not exist, is empty, truncated, or not of the expected kind."""


class AudioError(InputFileError):
    """Audio that cannot be read or used."""


class ImageError(InputFileError):
    """An image that cannot be read or used."""


class FaceNotFoundError(EmoteError):
    """No usable face in the portrait."""


class ModelFileError(EmoteError):
    """A model file that is missing or does not match its checksum."""


class ConfigError(EmoteError, ValueError):
    """Settings that are out of range or inconsistent."""
