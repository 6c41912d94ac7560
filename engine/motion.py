"""The one definition of the motion vector.

A motion vector is one float32 row per video frame, with the named channels below.
Every other module reads channel names and indices from here; nothing else hard-codes them.

Semantics (what the rig does with a value):

* Every channel's ``rest`` value (0 for all of them) reproduces the reference photo exactly:
  motion is relative to the portrait's own expression and pose.
* Blendshape-like channels use ARKit names where one fits and range 0..1
  (``jawOpen`` = 1 is a wide-open jaw; ``eyeBlinkLeft`` = 1 is the subject's left eye shut;
  ``mouthClose`` = 1 presses the lips together whatever the jaw does, as on p/b/m).
  "Left" is the subject's left, which is image right on a frontal photo (as in ARKit and MediaPipe).
* Gaze and head angles are in degrees; yaw > 0 turns towards image right (the subject's left),
  pitch > 0 looks down, roll > 0 tilts clockwise in the image.
* Head translation is in face widths (the reference face's width in the image), x to image right,
  y down; ``headScale`` is a relative scale change (0 = same size, 0.05 = 5 % larger).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Channel", "CHANNELS", "NAMES", "INDEX", "NUM_CHANNELS", "idx", "rest", "clip", "as_dict",
           "MOUTH", "EYES", "BROWS", "GAZE", "HEAD"]


@dataclass(frozen=True)
class Channel:
    name: str
    group: str  # mouth | eyes | brows | gaze | head
    unit: str   # "1" for 0..1 activations, "deg", "face_width", "ratio"
    lo: float
    hi: float
    rest: float = 0.0

    def __post_init__(self) -> None:
        if not self.lo <= self.rest <= self.hi:
            raise ValueError(f"channel {self.name}: rest {self.rest} outside [{self.lo}, {self.hi}]")


def _act(name: str, group: str) -> Channel:
    return Channel(name, group, "1", 0.0, 1.0)


CHANNELS: tuple[Channel, ...] = (
    # mouth (ARKit names)
    _act("jawOpen", "mouth"),
    _act("mouthClose", "mouth"),
    _act("mouthFunnel", "mouth"),
    _act("mouthPucker", "mouth"),
    _act("mouthSmileLeft", "mouth"),
    _act("mouthSmileRight", "mouth"),
    _act("mouthStretchLeft", "mouth"),
    _act("mouthStretchRight", "mouth"),
    _act("mouthUpperUpLeft", "mouth"),
    _act("mouthUpperUpRight", "mouth"),
    _act("mouthLowerDownLeft", "mouth"),
    _act("mouthLowerDownRight", "mouth"),
    _act("mouthRollLower", "mouth"),     # lower lip tucked to the upper teeth (f, v)
    # eyes
    _act("eyeBlinkLeft", "eyes"),
    _act("eyeBlinkRight", "eyes"),
    # brows
    _act("browInnerUp", "brows"),
    _act("browOuterUpLeft", "brows"),
    _act("browOuterUpRight", "brows"),
    _act("browDownLeft", "brows"),
    _act("browDownRight", "brows"),
    # gaze (both eyes together), degrees
    Channel("gazeYaw_deg", "gaze", "deg", -25.0, 25.0),
    Channel("gazePitch_deg", "gaze", "deg", -20.0, 20.0),
    # head pose relative to the photo, degrees, and translation in face widths
    Channel("headYaw_deg", "head", "deg", -30.0, 30.0),
    Channel("headPitch_deg", "head", "deg", -25.0, 25.0),
    Channel("headRoll_deg", "head", "deg", -20.0, 20.0),
    Channel("headTx", "head", "face_width", -0.2, 0.2),
    Channel("headTy", "head", "face_width", -0.2, 0.2),
    Channel("headScale", "head", "ratio", -0.1, 0.1),
)

NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
NUM_CHANNELS: int = len(CHANNELS)
_LO = np.array([c.lo for c in CHANNELS], np.float32)
_HI = np.array([c.hi for c in CHANNELS], np.float32)


def _group(g: str) -> tuple[str, ...]:
    return tuple(c.name for c in CHANNELS if c.group == g)


MOUTH, EYES, BROWS, GAZE, HEAD = (_group(g) for g in ("mouth", "eyes", "brows", "gaze", "head"))


def idx(*names: str) -> list[int]:
    """Column indices of the named channels (KeyError names the unknown one)."""
    try:
        return [INDEX[n] for n in names]
    except KeyError as e:
        raise KeyError(f"unknown motion channel {e.args[0]!r}; known: {', '.join(NAMES)}") from None


def rest(frames: int = 1) -> np.ndarray:
    """Motion that reproduces the photo: (frames, C) float32."""
    return np.tile(np.array([c.rest for c in CHANNELS], np.float32), (frames, 1))


def clip(motion: np.ndarray) -> np.ndarray:
    """Clamp (T, C) or (C,) motion to every channel's range; returns float32."""
    return np.clip(np.asarray(motion, np.float32), _LO, _HI)


def as_dict(row: np.ndarray) -> dict[str, float]:
    """One motion row (C,) as {name: value}."""
    return {n: float(v) for n, v in zip(NAMES, row)}
