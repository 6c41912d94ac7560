"""Compositing kernels: alpha blending of small patches into frames, in place."""
from __future__ import annotations

import numpy as np


def blend_into(dst: np.ndarray, src: np.ndarray, alpha: np.ndarray) -> None:
    """dst (h, w, 3) uint8 <- dst * (1 - alpha) + src * alpha, in place.

    src: (h, w, 3) float32 or uint8 colours 0..255; alpha: (h, w) float32 0..1.
    """
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    out = dst.astype(np.float32) * (1.0 - a) + np.asarray(src, np.float32) * a
    dst[...] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
