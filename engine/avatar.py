"""Reference encoding of one portrait: ``prepare(image) -> Avatar``, cached on disk.

Steps: read the image (any format OpenCV reads, EXIF orientation applied; RGBA keeps its alpha),
find the largest face on a downscaled copy, crop a square around it (head and some shoulders),
resize to ``size_px``, detect the landmarks again on the final image, and build the head region:

* ring H (the head's outline: hair, ears, just under the chin) moves rigidly with the head;
* ring O (outer outline) stays fixed, so everything outside it is the photo, pixel for pixel;
  between H and O the motion fades out smoothly (upper neck, hair edges, a little background).

The result is cached as ``<cache_dir>/<sha256 of image bytes>-<size>-v<N>.npz``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import landmarks as L
from .exceptions import ConfigError, FaceNotFoundError, ImageError

log = logging.getLogger(__name__)

CACHE_VERSION = 5
CACHE_ENV = "EMOTE_CACHE_DIR"
MIN_FACE_PX = 48  # landmarker's face box below this (in the source image) is too small to animate


@dataclass(frozen=True)
class AvatarSettings:
    """Settings of the reference encoding."""

    size_px: int = 512                 # output frames are size_px x size_px
    face_fraction: float = 0.42        # face height (forehead-chin) / crop side, when the photo allows
    ring_segments: int = 28            # points on each head ring
    landmarker_model: str | None = None
    landmarks_file: str | None = None  # user-supplied landmarks (.npy/.json, 478 x 2|3 source pixels): last resort
    cache_dir: str | None = None       # None: $EMOTE_CACHE_DIR or ~/.cache/emote

    def __post_init__(self) -> None:
        if not 64 <= self.size_px <= 4096 or self.size_px % 2:
            raise ConfigError(f"size_px must be even and within 64..4096, got {self.size_px}")
        if not 0.15 <= self.face_fraction <= 0.9:
            raise ConfigError(f"face_fraction must be within 0.15..0.9, got {self.face_fraction}")
        if not 8 <= self.ring_segments <= 128:
            raise ConfigError(f"ring_segments must be within 8..128, got {self.ring_segments}")


@dataclass
class Avatar:
    """A prepared portrait. Coordinates are pixels of ``image``; z as in FaceLandmarks.

    image: (S, S, 3) uint8 RGB; alpha: (S, S) uint8 or None (from an RGBA source)
    points: (478, 3) float32 landmarks; ring_head, ring_outer: (R, 3) float32 (z = depth for rotation)
    blendshapes: the photo's own ARKit scores; pose: (4, 4) float32
    """

    image: np.ndarray
    alpha: np.ndarray | None
    points: np.ndarray
    ring_head: np.ndarray
    ring_outer: np.ndarray
    blendshapes: dict[str, float]
    pose: np.ndarray
    source_sha256: str
    notes: list[str] = field(default_factory=list)

    @property
    def size_px(self) -> int:
        return int(self.image.shape[0])

    @property
    def eye_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye, image-right eye) centres, (2,) float32 pixels."""
        p = self.points[:, :2]
        return (p[list(L.EYE_R_UPPER + L.EYE_R_LOWER)].mean(0), p[list(L.EYE_L_UPPER + L.EYE_L_LOWER)].mean(0))

    @property
    def iod_px(self) -> float:
        """Inter-ocular distance (eye centre to eye centre), pixels: the rig's unit of length."""
        a, b = self.eye_centers
        return float(np.linalg.norm(b - a))

    @property
    def face_width_px(self) -> float:
        p = self.points
        return float(np.linalg.norm(p[L.EAR_L, :2] - p[L.EAR_R, :2]))

    def head_mask(self) -> np.ndarray:
        """(S, S) uint8, 255 inside ring O: the only pixels that ever change."""
        m = np.zeros(self.image.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(self.ring_outer[:, :2]).astype(np.int32)], 255)
        return m

    def region_mask(self, region: str) -> np.ndarray:
        """(S, S) uint8 mask of 'head', 'face', 'mouth', 'eyes'."""
        if region == "head":
            return self.head_mask()
        polys = {"face": [L.FACE_OVAL],
                 "mouth": [L.LIPS_OUTER_UPPER + L.LIPS_OUTER_LOWER[::-1]],
                 "eyes": [L.EYE_R_UPPER + L.EYE_R_LOWER[::-1], L.EYE_L_UPPER + L.EYE_L_LOWER[::-1]]}
        if region not in polys:
            raise ValueError(f"unknown region {region!r}: head, face, mouth or eyes")
        m = np.zeros(self.image.shape[:2], np.uint8)
        for chain in polys[region]:
            cv2.fillPoly(m, [np.round(self.points[list(chain), :2]).astype(np.int32)], 255)
        return m


# ---------------------------------------------------------------- reading

def read_image(source: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bytes]:
    """Image file or array -> (RGB uint8 (H, W, 3), alpha uint8 (H, W) or None, bytes to hash).

    Arrays: uint8 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA. Files: whatever OpenCV decodes; 16-bit,
    signed and floating-point samples (TIFF, PNG-16, PFM, HDR) are brought to 8 bits."""
    if isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) \
                or min(arr.shape[:2], default=0) < 1:
            raise ImageError(f"image array must be uint8 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA with H, W >= 1, "
                             f"got {arr.dtype} {arr.shape}")
        raw = arr.tobytes() + str(arr.shape).encode()
        bgr_like = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, 2)
        rgb, alpha = bgr_like[..., :3], (bgr_like[..., 3] if bgr_like.shape[2] == 4 else None)
        return np.ascontiguousarray(rgb), alpha, raw
    path = Path(source)
    if not path.exists():
        raise ImageError(f"image {path} does not exist")
    if path.is_dir():
        raise ImageError(f"image {path} is a directory, not an image file")
    raw = path.read_bytes()
    if not raw:
        raise ImageError(f"image {path} is empty (0 bytes): use a JPEG, PNG, WebP, BMP or TIFF photo")
    _check_png_chunks(raw, path)
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise ImageError(f"cannot read {path} as an image: use a JPEG, PNG, WebP, BMP or TIFF file")
    img = _to_uint8(img)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] not in (3, 4):
        raise ImageError(f"{path} has {img.shape[2]} channels: use an RGB or RGBA image")
    alpha = img[..., 3].copy() if img.shape[2] == 4 else None
    rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    return rgb, alpha, raw


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Decoded samples of any depth -> uint8: 16-bit shifted; other integers clipped at 0 and, above
    the 8-bit range, scaled by their 99.5th percentile; floats (0..1, HDR above that) likewise."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    x = img.astype(np.float32)
    if img.dtype.kind in "iu":                  # signed or wide ints: negatives are 0, 8-bit range kept
        x = np.maximum(x, 0.0)
        top = float(np.percentile(x, 99.5)) if x.size else 255.0
        x = x / (top if top > 255.0 else 255.0)
    else:
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(np.percentile(x, 99.5)) if x.size else 1.0
        x = x / top if top > 1.0 else x
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check_png_chunks(raw: bytes, path: Path) -> None:
    """A PNG whose chunk says it is longer than the file is truncated or damaged; OpenCV's decoder
    would allocate the declared length first (up to 4 GB)."""
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    pos = 8
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 4], "big")
        if pos + 12 + length > len(raw):
            raise ImageError(f"{path} is a damaged or truncated PNG: open and save it again, or use a JPEG")
        if raw[pos + 4:pos + 8] == b"IEND":
            return
        pos += 12 + length


# ---------------------------------------------------------------- cropping

def _crop_box(face: L.FaceLandmarks, shape: tuple[int, int], face_fraction: float) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the face, inside the image."""
    h, w = shape
    p = face.points
    face_h = float(np.linalg.norm(p[L.CHIN, :2] - p[L.FOREHEAD, :2])) * 1.15
    side = int(round(min(face_h / face_fraction, h, w)))
    cx = float((p[L.EAR_L, 0] + p[L.EAR_R, 0]) / 2)
    cy = float((p[L.CHIN, 1] + p[L.FOREHEAD, 1]) / 2) + 0.05 * face_h
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, side


def _variants(rgb: np.ndarray):
    """Copies of an image for the landmarker to retry on: (name, image, scale, (ox, oy)).

    A point p found in a copy maps back to the source as p / scale - (ox, oy). Stylised portraits
    (paintings, drawings, old photos) are often missed at first and found on one of these.
    """
    h, w = rgb.shape[:2]
    yield "direct", rgb, 1.0, (0, 0)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.5, tileGridSize=(8, 8)).apply(lab[..., 0])
    contrast = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    yield "contrast", contrast, 1.0, (0, 0)
    pad = int(0.3 * max(h, w))
    fill = [int(v) for v in np.median(rgb.reshape(-1, 3), 0)]
    yield "padded", cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill), 1.0, (pad, pad)
    if max(h, w) < 900:
        k = 2.0
        yield "upscaled", cv2.resize(contrast, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC), k, (0, 0)
    k = 2 * round(max(h, w) / 128) + 1          # pencil hatching hides a drawn face from the
    yield "smoothed", cv2.medianBlur(contrast, max(3, k)), 1.0, (0, 0)   # detector; a median blur removes it
    gray = cv2.cvtColor(cv2.cvtColor(contrast, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    yield "grayscale", cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill), 1.0, (pad, pad)


def detect_with_fallbacks(rgb: np.ndarray, lm: L.Landmarker) -> tuple[list[L.FaceLandmarks], str]:
    """Faces (largest first, source pixel coordinates) and the name of the variant that found them."""
    for name, img, k, (ox, oy) in _variants(rgb):
        faces = lm.detect(img)
        if faces:
            out = []
            for f in faces:
                pts = f.points / k
                pts[:, 0] -= ox
                pts[:, 1] -= oy
                out.append(L.FaceLandmarks(pts.astype(np.float32), f.blendshapes, f.pose))
            return out, name
    return [], "none"


def detect_in_tiles(rgb: np.ndarray, lm: L.Landmarker, tile_px: tuple[int, ...] = (512, 192)) -> list[L.FaceLandmarks]:
    """Faces too small for a whole-image pass (under ~1/10 of the image): the landmarker on
    overlapping square tiles of each side in ``tile_px`` (stride 2/3 of a tile), flat tiles skipped.

    rgb: (H, W, 3) uint8. Returns faces in ``rgb``'s pixels, largest first, one per face (a face
    seen in several tiles is kept once). Costs one detection per tile: a last resort.
    """
    h, w = rgb.shape[:2]
    found: list[L.FaceLandmarks] = []
    for side in tile_px:
        if side >= max(h, w):
            continue
        step = max(1, side * 2 // 3)
        ys = sorted({*range(0, max(h - side, 0) + 1, step), max(h - side, 0)})
        xs = sorted({*range(0, max(w - side, 0) + 1, step), max(w - side, 0)})
        for y in ys:
            for x in xs:
                tile = rgb[y:y + side, x:x + side]
                if float(tile.std()) < 4.0:      # a flat background holds no face
                    continue
                for f in lm.detect(np.ascontiguousarray(tile)):
                    pts = f.points.copy()
                    pts[:, 0] += x
                    pts[:, 1] += y
                    face = L.FaceLandmarks(pts, f.blendshapes, f.pose)
                    c = pts[:, :2].mean(0)
                    if not any(g.bbox[0] <= c[0] <= g.bbox[2] and g.bbox[1] <= c[1] <= g.bbox[3] for g in found) \
                            and _confirmed(rgb, face, lm):
                        found.append(face)
    return sorted(found, key=lambda f: -f.size_px)


def _confirmed(rgb: np.ndarray, face: L.FaceLandmarks, lm: L.Landmarker) -> bool:
    """A tile's face is found again in a 4x-face-size crop around it, enlarged to 384 px (cats,
    textures and faces cut by a tile's border mostly are not)."""
    x0, y0, x1, y1 = face.bbox
    half = int(2 * face.size_px) + 1
    pad = cv2.copyMakeBorder(rgb, half, half, half, half, cv2.BORDER_REPLICATE)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    crop = cv2.resize(pad[cy:cy + 2 * half, cx:cx + 2 * half], (384, 384), interpolation=cv2.INTER_CUBIC)
    return any(abs(g.size_px * 2 * half / 384 - face.size_px) < 0.35 * face.size_px for g in lm.detect(crop))


def load_landmarks_file(path: str | os.PathLike) -> np.ndarray:
    """User-supplied landmarks: .npy or .json of (478, 2|3) pixel coordinates in the source image."""
    p = Path(path)
    try:
        pts = np.load(p) if p.suffix == ".npy" else np.array(json.loads(p.read_text()), np.float32)
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read landmarks file {p}: {e}") from None
    pts = np.asarray(pts, np.float32)
    if pts.ndim != 2 or pts.shape[0] != L.NUM_LANDMARKS or pts.shape[1] not in (2, 3) or not np.isfinite(pts).all():
        raise ImageError(f"landmarks file {p} must hold {L.NUM_LANDMARKS} rows of (x, y[, z]) pixels, got {pts.shape}")
    return pts if pts.shape[1] == 3 else np.hstack([pts, np.zeros((len(pts), 1), np.float32)])


def _no_face_error(what: str, tile_sizes_px: list[float]) -> FaceNotFoundError:
    """The error for a photo where no whole-image pass found a face; ``tile_sizes_px`` are the sizes
    (source pixels, largest first) of faces that only :func:`detect_in_tiles` saw. They only choose
    the message and are never rendered: a tile pass sometimes sees faces in textures."""
    if tile_sizes_px and tile_sizes_px[0] < MIN_FACE_PX:
        return FaceNotFoundError(f"the face in {what} is too small ({tile_sizes_px[0]:.0f} px): use a photo where "
                                 f"the face is at least {MIN_FACE_PX} px tall, ideally 200 px or more")
    return FaceNotFoundError(f"no face found in {what}: use a photo with one clearly visible, roughly frontal "
                             "face (crop a distant shot around the face), or give its landmarks with --landmarks FILE")


def _detect_on_source(rgb: np.ndarray, lm: L.Landmarker, what: str) -> tuple[L.FaceLandmarks, list[str]]:
    """Largest face on a copy no bigger than 1024 px, coordinates in the source's pixels."""
    h, w = rgb.shape[:2]
    scale = min(1.0, 1024.0 / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    faces, method = detect_with_fallbacks(small, lm)
    if not faces:
        raise _no_face_error(what, [f.size_px / scale for f in detect_in_tiles(small, lm)])
    notes = [f"landmarks: {method}"]
    if len(faces) > 1:
        notes.append(f"{len(faces)} faces found in {what}: using the largest")
        log.warning(notes[-1])
    f = faces[0]
    face = L.FaceLandmarks(f.points / scale, f.blendshapes, f.pose)
    if face.size_px < MIN_FACE_PX:
        raise FaceNotFoundError(f"the face in {what} is too small ({face.size_px:.0f} px): use a photo "
                                f"where the face is at least {MIN_FACE_PX} px tall, ideally 200 px or more")
    return face, notes


# ---------------------------------------------------------------- head rings

def _ellipse(center: np.ndarray, axes: tuple[float, float], angle: float, n: int, bottom_stretch: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = axes[0] * np.cos(t)
    y = axes[1] * np.sin(t)
    y = np.where(y > 0, y * bottom_stretch, y)  # downwards (the neck) reaches further
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], 1)


def head_rings(points: np.ndarray, size_px: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ring H (moves with the head) and ring O (fixed), (n, 3) float32 each, inside the image."""
    p = points
    fw = float(np.linalg.norm(p[L.EAR_L, :2] - p[L.EAR_R, :2]))
    top, chin = p[L.FOREHEAD, :2], p[L.CHIN, :2]
    fh = float(np.linalg.norm(chin - top))
    axis = p[L.EAR_L, :2] - p[L.EAR_R, :2]
    roll = float(np.arctan2(axis[1], axis[0]))
    up = np.array([np.sin(roll), -np.cos(roll)])  # towards the top of the head
    center = (top + chin) / 2 + up * 0.08 * fh
    ring_h = _ellipse(center, (0.70 * fw, 0.72 * fh), roll, n, bottom_stretch=1.2)
    ring_o = _ellipse(center + up * 0.02 * fh, (1.06 * fw, 1.06 * fh), roll, n, bottom_stretch=1.18)
    margin = 2.0
    ring_h = np.clip(ring_h, margin + 2, size_px - 1 - margin - 2)
    ring_o = np.clip(ring_o, 0, size_px - 1)
    z_ear = float((p[L.EAR_L, 2] + p[L.EAR_R, 2]) / 2)
    zh = np.full((n, 1), z_ear, np.float32)
    return (np.hstack([ring_h, zh]).astype(np.float32), np.hstack([ring_o, zh]).astype(np.float32))


# ---------------------------------------------------------------- prepare + cache

def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "emote")


def _cache_file(settings: AvatarSettings, sha: str) -> Path:
    root = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    extra = ""
    if settings.landmarks_file:
        if not Path(settings.landmarks_file).is_file():
            raise ImageError(f"landmarks file {settings.landmarks_file} does not exist")
        extra = "-" + hashlib.sha256(Path(settings.landmarks_file).read_bytes()).hexdigest()[:12]
    return root / f"{sha[:32]}-{settings.size_px}-{settings.face_fraction:.3f}{extra}-v{CACHE_VERSION}.npz"


def _save(path: Path, av: Avatar) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=av.image, alpha=av.alpha if av.alpha is not None else np.zeros(0, np.uint8),
                            points=av.points, ring_head=av.ring_head, ring_outer=av.ring_outer, pose=av.pose,
                            meta=np.frombuffer(json.dumps({"blendshapes": av.blendshapes, "sha": av.source_sha256,
                                                           "notes": av.notes}).encode(), np.uint8))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache is not fatal
        log.warning("could not write avatar cache %s: %s", path, e)


def _load(path: Path) -> Avatar | None:
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            alpha = z["alpha"] if z["alpha"].size else None
            return Avatar(z["image"], alpha, z["points"], z["ring_head"], z["ring_outer"],
                          meta["blendshapes"], z["pose"], meta["sha"], meta.get("notes", []))
    except (OSError, KeyError, ValueError) as e:
        log.warning("ignoring unreadable avatar cache %s: %s", path, e)
        return None


def prepare(source: str | os.PathLike | np.ndarray, settings: AvatarSettings = AvatarSettings(),
            cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> Avatar:
    """Reference encoding of a portrait (file path or RGB/RGBA uint8 array) -> Avatar, cached on disk."""
    if cache_dir is not None:
        settings = AvatarSettings(**{**settings.__dict__, "cache_dir": str(cache_dir)})
    what = str(source) if not isinstance(source, np.ndarray) else "the image array"
    rgb, alpha, raw = read_image(source)
    sha = hashlib.sha256(raw).hexdigest()
    cfile = _cache_file(settings, sha)
    if use_cache and cfile.is_file():
        av = _load(cfile)
        if av is not None:
            return av
    if alpha is not None:   # transparent portraits: detect and animate over a neutral grey
        a_f = alpha.astype(np.float32)[..., None] / 255.0
        rgb = (rgb * a_f + 128.0 * (1 - a_f) + 0.5).astype(np.uint8)
    lm = L.shared_landmarker(settings.landmarker_model)
    if settings.landmarks_file:
        pts = load_landmarks_file(settings.landmarks_file)
        face, notes = L.FaceLandmarks(pts, {}, np.eye(4, dtype=np.float32)), ["landmarks: user file"]
    else:
        face, notes = _detect_on_source(rgb, lm, what)
    x0, y0, side = _crop_box(face, rgb.shape[:2], settings.face_fraction)
    s = settings.size_px
    interp = cv2.INTER_AREA if side > s else cv2.INTER_CUBIC
    img = cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (s, s), interpolation=interp)
    a = None if alpha is None else cv2.resize(alpha[y0:y0 + side, x0:x0 + side], (s, s), interpolation=interp)
    final, _ = ([], "") if settings.landmarks_file else detect_with_fallbacks(img, lm)
    if final:
        f = final[0]
    else:   # the crop defeats the landmarker (or the user gave landmarks): map the source's points
        k = s / side
        pts = face.points.copy()
        pts[:, 0] = (pts[:, 0] - x0) * k
        pts[:, 1] = (pts[:, 1] - y0) * k
        pts[:, 2] *= k
        f = L.FaceLandmarks(pts, face.blendshapes, face.pose)
    ring_h, ring_o = head_rings(f.points, s, settings.ring_segments)
    av = Avatar(img, a, f.points, ring_h, ring_o, f.blendshapes, f.pose, sha, notes)
    if use_cache:
        _save(cfile, av)
    return av
