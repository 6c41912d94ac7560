"""Cheaper video encoding for rendered portraits.

* :func:`to_i420`: RGB (H, W, 3) uint8 -> I420 (H * 3 / 2, W) uint8 with OpenCV (BT.601 limited
  range, the same as swscale's default to within 1 level of luma), 0.4 ms at 512x512 against
  5 ms for PyAV's ``reformat``; done in the engine's thread, so the encoder gets yuv420p as is.
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

__all__ = ["to_i420", "tune_vp8", "VP8_OVERRIDES"]

log = logging.getLogger(__name__)
VP8_OVERRIDES = {"noise-sensitivity": "0"}


def to_i420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, H and W even -> (H * 3 // 2, W) uint8 planar Y, U, V."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)


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
