"""Portraits in many styles, for tests: each made from an image nobody here drew.

* photo:      skimage's astronaut (public domain).
* old_bw:     matplotlib's grace_hopper.jpg (public domain) in greyscale, contrast reduced to about
              half, a yellowed-paper lift of the blacks, film grain and a little blur.
* painting_*: Battle for Wesnoth's painted unit portraits (Debian package ``wesnoth-1.16-data``,
              GPL-2+), transparent RGBA PNGs of 400 x 400 px with the face ~60-80 px tall.
* drawing:    cv2.pencilSketch of grace_hopper (greyscale pencil strokes).
* cartoon:    cv2.stylization of the astronaut, then its colours quantised to 6 levels per channel
              (flat colour areas), with dark adaptive-threshold outlines drawn on top.
* digital:    Flare's semi-realistic digital-painted hero portraits (Debian package ``flare-game``,
              CC-BY-SA-3.0+), RGBA PNGs of 320 x 320 px, face ~120-150 px. No 3D-rendered human face
              was found in a Debian package under 200 MB (see docs/styles.md).

Every loader returns what ``emote.engine.avatar.prepare`` takes: an RGB uint8 (H, W, 3) array or a
file path (the Wesnoth/Flare PNGs keep their alpha, which prepare composites over grey). Loaders
of packaged images return None when the package is not installed.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from portraits import astronaut, grace_hopper

WESNOTH_DIR = Path("/usr/share/games/wesnoth/1.16/data/core/images/portraits")
FLARE_DIR = Path("/usr/share/games/flare/mods/fantasycore/images/portraits")

#: Wesnoth human portraits with a frontal-ish, unmasked face that the landmarker finds directly
#: (the survey of all 63 human portraits is in docs/styles.md).
WESNOTH_PORTRAITS = ("humans/peasant.png", "humans/mage-silver+female.png", "humans/thug.png",
                     "humans/dark-adept.png")
#: Flare's painted heads (frontal, mouth visible): the first one installed is used.
FLARE_PORTRAITS = ("male02.png", "female05.png", "male15.png")


def have_wesnoth() -> bool:
    """The Wesnoth portraits are installed (apt-get install wesnoth-1.16-data)."""
    return all((WESNOTH_DIR / p).is_file() for p in WESNOTH_PORTRAITS)


def have_flare() -> bool:
    """Flare's portraits are installed (apt-get install flare-game)."""
    return digital_painting() is not None


def photo() -> np.ndarray:
    """(512, 512, 3) uint8 RGB colour photograph."""
    return astronaut()


def old_bw(seed: int = 0) -> np.ndarray:
    """grace_hopper as an old black-and-white print: (H, W, 3) uint8 RGB, R = G = B.

    Luma mapped to 60..190 (about half the contrast), Gaussian grain of sigma 9 grey levels
    (clumped over 2 px, as film grain is), then a 3 x 3 blur of a worn print.
    """
    g = cv2.cvtColor(grace_hopper(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = 60.0 + g * (130.0 / 255.0)
    rng = np.random.default_rng(seed)
    h, w = g.shape
    grain = rng.normal(0.0, 9.0, (h // 2 + 1, w // 2 + 1)).astype(np.float32)
    grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR)
    g = cv2.GaussianBlur(g + grain, (3, 3), 0)
    g8 = np.clip(g + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(g8[..., None], 3, axis=2)


def drawing(colour: bool = False) -> np.ndarray:
    """Pencil sketch of grace_hopper with OpenCV's default settings: (600, 512, 3) uint8 RGB.

    colour=False: the greyscale sketch (R = G = B, dark hatching on the navy uniform);
    colour=True: pencilSketch's colour-pencil output.
    """
    bgr = cv2.cvtColor(grace_hopper(), cv2.COLOR_RGB2BGR)
    gray, col = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.02)
    return cv2.cvtColor(col, cv2.COLOR_BGR2RGB) if colour else np.repeat(gray[..., None], 3, axis=2)


def cartoon() -> np.ndarray:
    """Cartoon astronaut: (512, 512, 3) uint8 RGB with flat colours and dark outlines.

    cv2.stylization (edge-preserving smoothing), colours quantised to 6 levels per channel,
    and an adaptive-threshold edge map of the original drawn in black.
    """
    bgr = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    st = cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)
    step = 256 // 6
    q = (st // step) * step + step // 2
    gray = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 7)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    out = cv2.bitwise_and(q.astype(np.uint8), q.astype(np.uint8), mask=edges)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def painting(name: str) -> Path | None:
    """Path of one Wesnoth portrait (RGBA PNG), e.g. "humans/peasant.png"; None if not installed."""
    p = WESNOTH_DIR / name
    return p if p.is_file() else None


def digital_painting() -> Path | None:
    """Path of a Flare digital-painted portrait (RGBA PNG); None if flare-game is not installed."""
    for name in FLARE_PORTRAITS:
        p = FLARE_DIR / name
        if p.is_file():
            return p
    return None


#: FreedroidRPG's character portraits are 3D renders (Blender models, rendered with alpha), GPL-2+.
FREEDROID_DIR = Path("/usr/share/freedroidrpg/data/graphics/droids")
FREEDROID_PORTRAITS = ("female_scientist", "professor", "kevin")


def render_3d(name: str = FREEDROID_PORTRAITS[0]) -> Path | None:
    """Path of a FreedroidRPG 3D-rendered portrait (RGBA PNG, ~211 x 282); None if
    freedroidrpg-data is not installed."""
    p = FREEDROID_DIR / name / "portrait.png"
    return p if p.is_file() else None


def have_freedroid() -> bool:
    """The 3D-rendered portraits are installed (apt-get install freedroidrpg-data)."""
    return render_3d() is not None
