"""Prometheus metrics for the live path, on one registry per server.

Per-stage latency histograms (label ``stage``), all in seconds:

* ``arrival_to_window``  arrival of the audio packet that completed a window -> the engine
  worker takes the window (queueing; the slicer itself is synchronous)
* ``features`` / ``motion`` / ``render``  the engine's own per-stage times for that window
  (``pipeline.timings``, milliseconds converted to seconds)
* ``window_to_frame``  window taken -> its frames are ready on the event loop
* ``frame_to_sent``  frame ready -> handed to the encoder by the video track (this is where
  the output delay holds frames back so that video and the returned voice leave together)
* ``arrival_to_sent``  arrival of a frame's own audio -> that frame sent: the server's share of
  the end-to-end latency, about ``output_delay`` when the engine keeps up

Buckets span 1 ms .. 2 s: the targets are a few ms per stage and 250 ms end to end.
"""
from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector

__all__ = ["StreamingMetrics", "STAGES", "CONTENT_TYPE_LATEST"]

STAGES = ("arrival_to_window", "features", "motion", "render", "window_to_frame",
          "frame_to_sent", "arrival_to_sent")
_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25,
              0.3, 0.4, 0.5, 0.75, 1.0, 2.0)


class StreamingMetrics:
    """All metrics of one server; ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)          # process_resident_memory_bytes, cpu seconds, fds
        self.stage_seconds = Histogram("emote_stage_seconds", "Per-stage latency of the live path",
                                       ["stage"], buckets=_BUCKETS_S, registry=r)
        self.sessions_active = Gauge("emote_sessions_active", "Sessions open now", registry=r)
        self.sessions_total = Counter("emote_sessions", "Sessions opened", registry=r)
        self.sessions_rejected = Counter("emote_sessions_rejected", "Offers refused",
                                         ["reason"], registry=r)
        self.frames_sent = Counter("emote_frames_sent", "Video frames sent", registry=r)
        self.frames_held = Counter("emote_frames_held",
                                   "Video slots that repeated the previous frame (engine late)",
                                   registry=r)
        self.audio_padded_seconds = Counter("emote_audio_padded_seconds",
                                            "Silence pushed because no audio arrived", registry=r)
        self.asyncio_tasks = Gauge("emote_asyncio_tasks", "Tasks alive on the server's loop",
                                   registry=r)
        self.asyncio_tasks.set_function(_count_tasks)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _count_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:          # scraped from a thread without a running loop
        return float("nan")
