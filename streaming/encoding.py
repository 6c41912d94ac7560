"""Cheaper video encoding for rendered portraits.

* :func:`to_i420`: RGB (H, W, 3) uint8 -> I420 (H * 3 / 2, W) uint8 with OpenCV (BT.601 limited
  range, the same as swscale's default to within 1 level of luma), 0.4 ms at 512x512 against
  5 ms for PyAV's ``reformat``; done in the engine's thread, so the encoder gets yuv420p as is.
* :func:`to_i420_packed`: colour and alpha matte side by side for the overlay (WebRTC video has
  no alpha channel): a (2W x H) frame, colour on the left, the matte as grey on the right (the
  I420 of the grey RGB image (a, a, a): Y = 16 + 219 a / 255, U = V = 128, so a receiver that
  decodes to RGB, as browsers do, reads the matte back in any of R, G, B).
* :func:`video_frame`: I420 array -> ``av.VideoFrame`` without copying it (PyAV's
  ``from_numpy_buffer``; ``from_ndarray`` copies the 384 KiB of a 512x512 frame, 0.35 ms).
* :func:`tune_encoders`: aiortc (1.16, pinned) offers no hook for encoder options, so this wraps
  the ``av`` module seen by ``aiortc.codecs.vpx`` and ``aiortc.codecs.h264``: a new encoder
  context gets :data:`ENCODER_OVERRIDES` merged into the options aiortc sets (and
  :data:`ENCODER_THREADS`). Process-wide, idempotent; everything else passes through.

  - VP8: aiortc turns libvpx's temporal denoiser on (``noise-sensitivity=4``), which costs 5 of
    its 7 ms per 512x512 frame; a rendered portrait has no sensor noise to remove: off. (Its
    ``cpu-used`` stays at aiortc's -6: -10 would save 0.7 of 2.2 ms a frame but costs 1.2-1.5 dB
    of PSNR at 500 kbps.)
  - H.264: aiortc leaves libx264 at its default preset (medium) with automatic threads: 11 ms
    of CPU per 512x512 frame (68 M instructions), the largest cost of a 2-session server.
    ``preset=veryfast`` with ``subme=4`` takes 4.0 ms (31 M instructions) at the same bitrate,
    for 0.04-0.4 dB less PSNR over aiortc's 0.5-3 Mbps range (47.6 -> 47.3 dB at its 1 Mbps
    start, on a rendered speech clip); one thread per encoder, as for VP8: each session's encoder
    runs in its own executor thread already, and slice threads only add hand-offs on a 2-core
    machine that the engines share.
"""
from __future__ import annotations

import logging

import av
import cv2
import numpy as np

__all__ = ["to_i420", "to_i420_packed", "video_frame", "tune_encoders", "ENCODER_OVERRIDES",
           "ENCODER_THREADS"]

log = logging.getLogger(__name__)
#: codec name (as aiortc creates it) -> options merged over aiortc's own
ENCODER_OVERRIDES: dict[str, dict[str, str]] = {
    "libvpx": {"noise-sensitivity": "0"},
    "libx264": {"preset": "veryfast", "x264-params": "subme=4"},
}
#: codec name -> thread_count set when aiortc creates the encoder (aiortc sets VP8's itself: 1 at 512x512)
ENCODER_THREADS: dict[str, int] = {"libx264": 1}


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


def video_frame(i420: np.ndarray) -> av.VideoFrame:
    """(H * 3 // 2, W) uint8 I420 -> yuv420p ``av.VideoFrame`` (pts unset) sharing ``i420``'s
    memory (the frame keeps the array alive; nobody may write to it while the frame lives). A
    height that is not a multiple of 4, or a non-contiguous array, is copied instead."""
    h = i420.shape[0] * 2 // 3
    if i420.dtype == np.uint8 and i420.ndim == 2 and h % 4 == 0 and i420.shape[1] % 2 == 0 \
            and i420.flags.c_contiguous:
        return av.VideoFrame.from_numpy_buffer(i420, format="yuv420p")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(i420), format="yuv420p")


# -- aiortc's encoders, tuned (see the module docstring) ----------------------------------------
class _TunedContext:
    """An encoder context whose ``options`` always include its ENCODER_OVERRIDES."""

    def __init__(self, ctx, overrides: dict[str, str]) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __setattr__(self, name, value) -> None:
        if name == "options":
            value = {**value, **self._overrides}
        setattr(self._ctx, name, value)


class _CodecContextFactory:
    @staticmethod
    def create(codec, mode=None, *args, **kwargs):
        ctx = av.CodecContext.create(codec, mode, *args, **kwargs)
        if mode != "w" or codec not in ENCODER_OVERRIDES:
            return ctx
        if codec in ENCODER_THREADS:
            ctx.thread_count = ENCODER_THREADS[codec]
        return _TunedContext(ctx, ENCODER_OVERRIDES[codec])


class _AvProxy:
    """``av`` as seen by aiortc's codec modules: everything passes through except CodecContext."""

    CodecContext = _CodecContextFactory

    def __getattr__(self, name):
        return getattr(av, name)


def _install(module_name: str) -> bool:
    import importlib
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    if isinstance(getattr(module, "av", None), _AvProxy):
        return True
    if getattr(module, "av", None) is not av:
        log.warning("%s does not use `av` as expected: its encoder is left as is", module_name)
        return False
    module.av = _AvProxy()
    return True


def tune_encoders() -> bool:
    """Install the overrides into aiortc's VP8 and H.264 encoders; False if aiortc's layout
    changed for either (that one is then left as it was)."""
    results = [_install(m) for m in ("aiortc.codecs.vpx", "aiortc.codecs.h264")]
    return all(results)
