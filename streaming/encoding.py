"""Cheaper video encoding for rendered portraits.

* :func:`to_i420`: RGB (H, W, 3) uint8 -> I420 (H * 3 / 2, W) uint8 with OpenCV (BT.601 limited
  range, the same as swscale's default to within 1 level of luma), 0.4 ms at 512x512 against
  5 ms for PyAV's ``reformat``; done in the engine's thread, so the encoder gets yuv420p as is.
* :func:`to_i420_packed`: colour and alpha matte side by side for the overlay (WebRTC video has
  no alpha channel): a (2W x H) frame, colour on the left, the matte as grey on the right (the
  I420 of the grey RGB image (a, a, a): Y = 16 + 219 a / 255, U = V = 128, so a receiver that
  decodes to RGB, as browsers do, reads the matte back in any of R, G, B).
* :func:`tune_vp8`: aiortc's VP8 encoder turns libvpx's temporal denoiser on
  (``noise-sensitivity=4``), which costs 5 of its 7 ms per 512x512 frame; a rendered portrait
  has no sensor noise to remove, so it is turned off. aiortc offers no hook for encoder options:
  this wraps the ``av`` module seen by ``aiortc.codecs.vpx`` so that the options dict it sets on
  a new libvpx encoder gets our overrides (aiortc 1.16 is pinned). Process-wide, idempotent.
"""
from __future__ import annotations

import logging

import av
import cv2
import numpy as np

__all__ = ["to_i420", "to_i420_packed", "tune_vp8", "VP8_OVERRIDES"]

log = logging.getLogger(__name__)
VP8_OVERRIDES = {"noise-sensitivity": "0"}


def to_i420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, H and W even -> (H * 3 // 2, W) uint8 planar Y, U, V."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)


# BT.601 limited-range luma of the grey (a, a, a), as cv2's RGB2YUV_I420 computes it
_GREY_TO_Y = np.round(16.0 + 219.0 * np.arange(256) / 255.0).astype(np.uint8)


def to_i420_packed(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Colour and matte side by side: (H, W, 3) uint8 RGB and (H, W) uint8 alpha (255 = opaque;
    None = all opaque), H and W even -> (H * 3 // 2, 2 * W) uint8 I420 of the (H, 2W) image
    [rgb | grey alpha]. The same as ``to_i420(np.hstack([rgb, alpha as grey]))`` to within one
    level, at the cost of one ``to_i420`` of the colour half plus a table lookup."""
    h, w = rgb.shape[:2]
    if alpha is None:
        alpha = np.full((h, w), 255, np.uint8)
    if alpha.shape != (h, w) or alpha.dtype != np.uint8:
        raise ValueError(f"alpha must be ({h}, {w}) uint8 like the colour, got {alpha.shape} {alpha.dtype}")
    src = to_i420(rgb)
    out = np.empty((h * 3 // 2, 2 * w), np.uint8)
    out[:h, :w] = src[:h]
    out[:h, w:] = _GREY_TO_Y[alpha]
    # each chroma plane is (h/2, w/2) stored row-major over h/4 rows of the I420 array; in the
    # packed frame it becomes (h/2, w): the colour's chroma on the left, neutral 128 on the right
    for k in range(2):
        plane = src[h + k * h // 4:h + (k + 1) * h // 4].reshape(h // 2, w // 2)
        packed = np.full((h // 2, w), 128, np.uint8)
        packed[:, :w // 2] = plane
        out[h + k * h // 4:h + (k + 1) * h // 4] = packed.reshape(h // 4, 2 * w)
    return out


class _TunedContext:
    """A libvpx encoder context whose ``options`` always include VP8_OVERRIDES."""

    def __init__(self, ctx) -> None:
        object.__setattr__(self, "_ctx", ctx)

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value) -> None:
        if name == "options":
            value = {**value, **VP8_OVERRIDES}
        setattr(self._ctx, name, value)


class _CodecContextFactory:
    @staticmethod
    def create(codec, mode=None, *args, **kwargs):
        ctx = av.CodecContext.create(codec, mode, *args, **kwargs)
        return _TunedContext(ctx) if codec == "libvpx" and mode == "w" else ctx


class _AvProxy:
    """``av`` as seen by aiortc.codecs.vpx: everything passes through except CodecContext."""

    CodecContext = _CodecContextFactory

    def __getattr__(self, name):
        return getattr(av, name)


def tune_vp8() -> bool:
    """Install the overrides into aiortc's VP8 encoder; False if aiortc's layout changed."""
    try:
        from aiortc.codecs import vpx
    except ImportError:
        return False
    if isinstance(getattr(vpx, "av", None), _AvProxy):
        return True
    if getattr(vpx, "av", None) is not av:
        log.warning("aiortc.codecs.vpx does not use `av` as expected: VP8 left as is")
        return False
    vpx.av = _AvProxy()
    return True
