"""A stand-in for engine.pipeline in streaming tests: same push/pull API, trivial picture.

The frame is gray with a dark "mouth" bar whose height follows the RMS of the frame's own
audio, so tests can read the mouth opening back from received pixels (mean darkness of the
mouth box) without a face landmarker.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from emote.engine.motion import INDEX, NUM_CHANNELS

SPF = 640


@dataclass
class FakeFrame:
    index: int
    rgb: np.ndarray
    motion: np.ndarray


class FakePipeline:
    """push(float32 16 kHz any size) / pull() -> frames; lookahead ``latency_frames``."""

    def __init__(self, size_px: int = 128, latency_frames: int = 2, shade: int = 180,
                 render_ms: float = 0.0) -> None:
        self.size, self.latency_frames, self.shade = size_px, latency_frames, shade
        self.render_ms = render_ms
        self._audio = np.zeros(0, np.float32)
        self._next = 0
        self._finished = False
        self.controls = {"expression_intensity": 1.0, "head_motion_speed": 1.0}
        self.timings = {"features": 0.0, "motion": 0.0, "render": 0.0}

    def push(self, samples: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, np.asarray(samples, np.float32).reshape(-1)])

    def set_controls(self, **kw: float) -> None:
        self.controls.update(kw)

    def _frame(self, i: int) -> FakeFrame:
        t = time.perf_counter()
        x = self._audio[i * SPF:(i + 1) * SPF]
        rms = float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0
        opening = min(1.0, rms * 8.0) * self.controls["expression_intensity"]
        s = self.size
        rgb = np.full((s, s, 3), self.shade, np.uint8)
        h = int(round(opening * s * 0.3))
        if h > 0:
            y0 = int(s * 0.65)
            rgb[y0 - h // 2:y0 + (h + 1) // 2, s // 4:3 * s // 4] = 20
        motion = np.zeros(NUM_CHANNELS, np.float32)
        motion[INDEX["jawOpen"]] = opening
        if self.render_ms:
            time.sleep(self.render_ms / 1000.0)
        self.timings = {"features": 0.01, "motion": 0.01, "render": (time.perf_counter() - t) * 1000}
        return FakeFrame(i, rgb, motion)

    def pull(self) -> list[FakeFrame]:
        ready = len(self._audio) // SPF - self.latency_frames
        if self._finished:
            ready = -(-len(self._audio) // SPF)
        out = []
        while self._next < ready:
            out.append(self._frame(self._next))
            self._next += 1
        return out

    def finish(self) -> list[FakeFrame]:
        self._finished = True
        return self.pull()


def mouth_opening(rgb: np.ndarray) -> float:
    """Fraction of the mouth box that is dark, 0 (closed) .. ~1 (wide open)."""
    s = rgb.shape[0]
    box = rgb[int(s * 0.5):int(s * 0.8), s // 4 + 4:3 * s // 4 - 4].astype(np.float32).mean(axis=2)
    return float((box < 90).mean())
