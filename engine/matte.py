"""The person's alpha matte, for overlay output (OBS, chroma key, transparent video).

``person_matte(avatar) -> (S, S) float32`` in [0, 1], 1 = person, in the avatar's pixels.

* A portrait with its own transparency (an RGBA source) already says where the person is:
  its alpha is returned as it is (``avatar.alpha / 255``).
* Otherwise the matte comes from OpenCV's GrabCut, seeded from what the landmarks already tell us.
  GrabCut needs no model file (nothing to download, nothing to ship, runs on any CPU), and the
  seeds make it reliable: it only has to settle the hair, neck and shoulders, not find the person.

  - definite foreground: the face (convex hull of the 478 landmarks, eroded a little) and a narrow
    strip straight under the chin (neck, chest) down to the bottom edge;
  - probable foreground: the head region (``avatar.head_mask()``: head, hair, some background) and
    a trapezoid from the jaw line down to the bottom edge, widening to ~2.6 face widths (neck,
    shoulders: adult shoulders are ~3 face widths);
  - definite background: a band along the top border and the left/right borders above the chin
    (not lower, where shoulders often leave the frame; not where the head reaches the border);
  - probable background: everything else.

  The colour models are first learnt from the confident seeds only (the first cut uses them
  frozen), so clothes lying in the probable background do not teach the background their colours;
  later iterations relearn them from the cut, stopping once it no longer changes. Nearly flat
  images skip GrabCut (colour says nothing there) and use the seeds.

  GrabCut runs on a copy downscaled to ``work_px`` for speed (~0.3-1 s for 256 px on one core).
  The binary result is tidied (thin strands such as flag poles opened away; only parts touching the
  face or rising from the bottom edge kept; small holes filled), upsampled to the avatar's size
  and feathered with a Gaussian of ``feather_px`` (output pixels); the face itself (landmark hull)
  is kept opaque. The random seed is fixed, so the same avatar always gives the same matte.

The matte is computed once per avatar: the head moves only inside ring O (``head_mask``), which is
probable foreground here, so the still photo's matte stays valid for every frame as long as the
head stays roughly in place.

Compositing: ``composite_rgba`` (straight alpha, (S, S, 4) uint8) and ``over_background`` (over a
solid colour such as chroma-key green, ``parse_colour('#00ff00')``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from . import landmarks as L
from .avatar import Avatar
from .exceptions import ConfigError

MIN_SAMPLES = 16  # GrabCut's colour models (5 Gaussians each) need at least a few pixels on each side
MIN_CONTRAST = 6.0  # grey-level standard deviation below which an image is too flat for GrabCut


@dataclass(frozen=True)
class MatteSettings:
    """Settings of the person matte (GrabCut path; unused when the portrait has its own alpha)."""

    work_px: int = 256          # GrabCut runs on a copy downscaled to this side (never upscaled)
    iterations: int = 4         # GrabCut iterations
    feather_px: float = 2.0     # Gaussian sigma softening the edge, output pixels (0: hard edge)
    border_px: int = 4          # top/left/right border band taken as definite background, output pixels
    shoulder_width_faces: float = 2.6   # width of the neck/shoulder trapezoid at the bottom edge, face widths

    def __post_init__(self) -> None:
        if not isinstance(self.work_px, int) or not 32 <= self.work_px <= 2048:
            raise ConfigError(f"work_px must be an integer within 32..2048, got {self.work_px!r}")
        if not isinstance(self.iterations, int) or not 1 <= self.iterations <= 20:
            raise ConfigError(f"iterations must be an integer within 1..20, got {self.iterations!r}")
        if not (isinstance(self.feather_px, (int, float)) and math.isfinite(self.feather_px)
                and 0.0 <= self.feather_px <= 50.0):
            raise ConfigError(f"feather_px must be within 0..50 pixels, got {self.feather_px!r}")
        if not isinstance(self.border_px, int) or not 0 <= self.border_px <= 64:
            raise ConfigError(f"border_px must be an integer within 0..64 pixels, got {self.border_px!r}")
        if not (isinstance(self.shoulder_width_faces, (int, float)) and 0.5 <= self.shoulder_width_faces <= 6.0):
            raise ConfigError(f"shoulder_width_faces must be within 0.5..6, got {self.shoulder_width_faces!r}")


# ---------------------------------------------------------------- seeds

def _face_hull(avatar: Avatar) -> np.ndarray:
    """(S, S) uint8, 255 inside the convex hull of the landmarks."""
    m = np.zeros(avatar.image.shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(avatar.points[:, :2]).astype(np.int32))
    cv2.fillConvexPoly(m, hull, 255)
    return m


def _shoulders(avatar: Avatar, width_faces: float) -> np.ndarray:
    """(S, S) uint8, 255 in a trapezoid from the jaw line (ear to ear) down to the bottom edge."""
    s = avatar.size_px
    p = avatar.points[:, :2]
    fw = max(avatar.face_width_px, 1.0)
    left, right = sorted((p[L.EAR_R], p[L.EAR_L]), key=lambda q: float(q[0]))
    cx, cy = float(p[L.CHIN, 0]), float(p[L.CHIN, 1])
    half = 0.5 * width_faces * fw
    bottom = float(max(s - 1, cy))
    poly = np.array([left, (cx - 0.5 * fw, cy), (cx - half, bottom), (cx + half, bottom),
                     (cx + 0.5 * fw, cy), right])
    m = np.zeros((s, s), np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
    return m


def seed_mask(avatar: Avatar, settings: MatteSettings = MatteSettings()) -> np.ndarray:
    """(S, S) uint8 GrabCut labels (cv2.GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD) seeded from the face."""
    s = avatar.size_px
    hull = _face_hull(avatar)
    probable = cv2.bitwise_or(avatar.head_mask(), _shoulders(avatar, settings.shoulder_width_faces))
    k = max(1, int(round(0.04 * avatar.face_width_px)))
    sure = cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    if not sure.any():   # a face a few pixels wide: keep the hull itself
        sure = hull
    labels = np.full((s, s), cv2.GC_PR_BGD, np.uint8)
    labels[probable > 0] = cv2.GC_PR_FGD
    b = min(settings.border_px, s // 4)
    if b > 0:   # wide enough to survive the downscaling to work_px
        b = max(b, int(math.ceil(s / min(settings.work_px, s))))
    if b > 0:
        band = np.zeros((s, s), bool)
        side_end = int(np.clip(round(float(avatar.points[L.CHIN, 1])), 0, s))   # below the chin: shoulders
        band[:b, :] = True
        band[:side_end, :b] = True
        band[:side_end, s - b:] = True
        labels[band & (probable == 0)] = cv2.GC_BGD
    labels[sure > 0] = cv2.GC_FGD
    labels[_chest(avatar) > 0] = cv2.GC_FGD
    return labels


def _chest(avatar: Avatar) -> np.ndarray:
    """(S, S) uint8, 255 in a narrow strip straight under the chin (neck, chest) to the bottom edge:
    person in any portrait crop, and it gives GrabCut the clothes' colours as foreground."""
    s = avatar.size_px
    p = avatar.points[:, :2]
    fw = avatar.face_width_px
    fh = float(np.linalg.norm(p[L.CHIN] - p[L.FOREHEAD]))
    cx, cy = float(p[L.CHIN, 0]), float(p[L.CHIN, 1])
    m = np.zeros((s, s), np.uint8)
    top = int(round(cy + 0.12 * fh))
    if top < s:
        cv2.rectangle(m, (int(round(cx - 0.2 * fw)), top), (int(round(cx + 0.2 * fw)), s - 1), 255, -1)
    return m


# ---------------------------------------------------------------- matte

def _clean(fg: np.ndarray, sure: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary (h, w) uint8 foreground, tidied: thin strands (poles, cables) opened away, only the parts
    connected to the sure foreground kept, and small holes (buttons, badges, glare) filled."""
    h, w = fg.shape
    if radius_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, k) | (sure > 0).astype(np.uint8)
    # keep what touches the face, and large parts rising from the bottom edge (the body, even when a
    # dark collar or a shadow cut the neck)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    big_at_bottom = np.unique(comp[-1][stats[comp[-1], cv2.CC_STAT_AREA] >= 0.02 * h * w])
    keep = np.union1d(np.unique(comp[(sure > 0) & (fg > 0)]), big_at_bottom)
    keep = keep[keep > 0]
    if keep.size:
        fg = np.isin(comp, keep).astype(np.uint8)
    # the bottom edge is inside the person (the body continues): a gap open only there is a hole too
    padded = np.vstack([fg, np.ones((1, w), np.uint8)])
    _, holes, stats, _ = cv2.connectedComponentsWithStats(1 - padded, connectivity=4)
    holes = holes[:h]
    x, y, bw, area = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 4]
    fill = (x > 0) & (y > 0) & (x + bw < w) & (area <= 0.01 * h * w)
    fill[0] = False                      # label 0: the foreground itself
    fg[fill[holes]] = 1
    return fg


def _init_models(image_bgr: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GrabCut's colour models (bgd, fgd: (1, 65) float64) learnt from the confident seeds only.

    Foreground: the definite and probable foreground; background: the border band alone, so that
    clothes in the "probable background" (shoulders beyond the trapezoid) do not teach the
    background model their colours. Without enough band pixels the probable background joins it.
    """
    fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    bg = labels == cv2.GC_BGD
    if bg.sum() < MIN_SAMPLES:
        bg = ~fg
    samples = np.concatenate([image_bgr[fg], image_bgr[bg]])[None]
    strip = np.concatenate([np.full(int(fg.sum()), cv2.GC_FGD, np.uint8),
                            np.full(int(bg.sum()), cv2.GC_BGD, np.uint8)])[None]
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(samples), strip, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)
    return bgd, fgd


def _grabcut(image_rgb: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """(h, w) uint8 0/1 foreground from GrabCut (stopping early once the cut no longer changes).

    The first cut uses colour models frozen from the confident seeds; later ones relearn them from
    the cut, as usual. Falls back to the seeds when one side has too few pixels, or when the image
    is nearly flat: there colour says nothing, and the graph cut on uniform weights takes seconds.
    """
    fg_seed = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if fg_seed.sum() < MIN_SAMPLES or (~fg_seed).sum() < MIN_SAMPLES:
        return fg_seed.astype(np.uint8)
    if float(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).std()) < MIN_CONTRAST:
        return fg_seed.astype(np.uint8)
    mask = labels.copy()
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    cv2.setRNGSeed(0)
    try:
        bgd, fgd = _init_models(bgr, labels)
        cv2.grabCut(bgr, mask, None, bgd, fgd, 1, cv2.GC_EVAL_FREEZE_MODEL)
        for _ in range(iterations - 1):
            before = mask.copy()
            cv2.grabCut(bgr, mask, None, bgd, fgd, 1, cv2.GC_EVAL)
            if np.array_equal(before, mask):
                break
    except cv2.error:    # degenerate colour models (e.g. a handful of pixels): fall back to the seeds
        return fg_seed.astype(np.uint8)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)


def person_matte(avatar: Avatar, settings: MatteSettings = MatteSettings()) -> np.ndarray:
    """(S, S) float32 matte in [0, 1], 1 = person.

    With the portrait's own transparency (``avatar.alpha``, (S, S) uint8) that alpha / 255;
    otherwise GrabCut seeded from the landmarks (see the module docstring). Deterministic.
    """
    s = avatar.size_px
    if avatar.alpha is not None:
        return (avatar.alpha.astype(np.float32) / 255.0).astype(np.float32)
    labels = seed_mask(avatar, settings)
    w = min(settings.work_px, s)
    if w < s:
        img = cv2.resize(avatar.image, (w, w), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(labels, (w, w), interpolation=cv2.INTER_NEAREST)
    else:
        img, lab = avatar.image, labels
    fg = _grabcut(np.ascontiguousarray(img), lab, settings.iterations)
    radius = int(round(0.02 * avatar.face_width_px * w / s))
    fg = _clean(fg, (lab == cv2.GC_FGD).astype(np.uint8), radius)
    matte = fg.astype(np.float32)
    if w < s:
        matte = cv2.resize(matte, (s, s), interpolation=cv2.INTER_LINEAR)
    matte = np.maximum(_feather(matte, settings.feather_px), _face_soft(avatar, settings.feather_px))
    return np.clip(matte, 0.0, 1.0).astype(np.float32)


def _feather(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=float(sigma_px), borderType=cv2.BORDER_REPLICATE)


def _face_soft(avatar: Avatar, sigma_px: float) -> np.ndarray:
    """(S, S) float32: 1 on the whole face (landmark hull), fading out just outside it.

    The face is person by construction, so its feathered edge is pushed 2 sigma outwards: the
    jaw and cheeks stay opaque (>= 0.97) where they meet the background.
    """
    hull = _face_hull(avatar)
    d = int(math.ceil(2 * sigma_px))
    if d > 0:
        hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    return _feather(hull.astype(np.float32) / 255.0, sigma_px)


# ---------------------------------------------------------------- compositing

def _check(frame_rgb: np.ndarray, matte: np.ndarray) -> None:
    if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame_rgb.dtype} {frame_rgb.shape}")
    if matte.shape != frame_rgb.shape[:2]:
        raise ValueError(f"matte {matte.shape} must match the frame's (H, W) {frame_rgb.shape[:2]}: "
                         "compute it on the avatar the frames are rendered from")


def composite_rgba(frame_rgb: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA: the frame's colours unchanged (straight alpha), alpha = round(255 * matte).

    frame_rgb: (H, W, 3) uint8; matte: (H, W) float in [0, 1].
    """
    _check(frame_rgb, matte)
    alpha = np.clip(np.asarray(matte, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.dstack([frame_rgb, alpha])


def over_background(frame_rgb: np.ndarray, matte: np.ndarray, colour_rgb: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8: the frame over a solid colour (e.g. (0, 255, 0) for a chroma key).

    frame_rgb: (H, W, 3) uint8; matte: (H, W) float in [0, 1]; colour_rgb: three ints 0..255.
    """
    _check(frame_rgb, matte)
    if len(colour_rgb) != 3 or not all(0 <= int(c) <= 255 for c in colour_rgb):
        raise ConfigError(f"background colour must be three values within 0..255, got {colour_rgb!r}")
    m = np.clip(np.asarray(matte, np.float32), 0.0, 1.0)[..., None]
    bg = np.asarray(colour_rgb, np.float32).reshape(1, 1, 3)
    out = frame_rgb.astype(np.float32) * m + bg * (1.0 - m)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def parse_colour(text: str) -> tuple[int, int, int]:
    """'#00ff00', '00ff00' or '#0f0' -> (0, 255, 0). Raises ConfigError otherwise."""
    m = _HEX.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(f"cannot read colour {text!r}: give it as hex RGB, e.g. '#00ff00' (green), "
                          "'00ff00' or '#0f0'")
    h = m.group(1)
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
