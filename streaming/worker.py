"""The engine of one session, run in its own thread, off the event loop.

The event loop hands windows in through a bounded queue (``submit`` never blocks: when the
engine has fallen ``queue_windows`` behind, the newest window is dropped and counted, and the
content index map absorbs the gap so frames keep their true timestamps). Frames come back
through ``loop.call_soon_threadsafe(on_frames, ...)``; a ``None`` item is the end marker; an
exception in the engine is handed to ``on_error`` on the loop and ends the thread.

Commands (all applied between two windows, in order): a window, new controls, a new pipeline
(portrait switch: the old pipeline's held-back lookahead frames are flushed with ``finish()``
and the new one continues at the next content frame).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from emote.streaming.encoding import to_i420
from emote.streaming.ringbuffer import Window

__all__ = ["EngineWorker", "FrameBatch"]

log = logging.getLogger(__name__)


@dataclass
class FrameBatch:
    """Frames made from one window: ``frames`` is [(content_index, I420 (H*3/2, W) uint8)]
    (see emote.streaming.encoding.to_i420: converted here, off the event loop)."""

    frames: list[tuple[int, np.ndarray]]
    t_window: float                      # monotonic: the window was ready (last packet arrived)
    t_taken: float                       # monotonic: the worker took it
    t_done: float                        # monotonic: the engine returned
    timings_ms: dict[str, float] = field(default_factory=dict)


class _IndexMap:
    """Pipeline frame index -> content frame index, across dropped windows and switches."""

    def __init__(self, offset: int = 0) -> None:
        self._steps: list[tuple[int, int]] = [(0, offset)]   # (first pipeline index, offset)

    def shift(self, from_pipeline_index: int, extra: int) -> None:
        self._steps.append((from_pipeline_index, self._steps[-1][1] + extra))

    def __call__(self, j: int) -> int:
        off = self._steps[0][1]
        for first, o in self._steps:
            if j >= first:
                off = o
        return j + off


class EngineWorker:
    """Owns a pipeline and a thread; see the module docstring for the protocol."""

    def __init__(self, pipeline: Any, loop: asyncio.AbstractEventLoop,
                 on_frames: Callable[[FrameBatch], None], on_error: Callable[[BaseException], None],
                 name: str, queue_windows: int = 25) -> None:
        self.name = name
        self._pipe = pipeline
        self._loop, self._on_frames, self._on_error = loop, on_frames, on_error
        self._q: queue.Queue = queue.Queue(maxsize=queue_windows)
        self._map = _IndexMap()
        self._pushed_frames = 0          # frames' worth of audio pushed into the current pipeline
        self._spf: int | None = None
        self._next_content: int | None = None
        self.dropped_windows = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    # -- event-loop side -------------------------------------------------------------------
    def submit(self, window: Window, t_window: float) -> bool:
        try:
            self._q.put_nowait(("window", window, t_window))
            return True
        except queue.Full:
            self.dropped_windows += 1
            return False

    def set_controls(self, **controls: float) -> None:
        self._q.put(("controls", controls, 0.0))

    def switch(self, pipeline: Any) -> None:
        self._q.put(("switch", pipeline, 0.0))

    def stop(self) -> None:
        """Ask the thread to end after the queued items (the end marker)."""
        while True:
            try:
                self._q.put_nowait(None)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- thread side -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                kind, arg, t = item
                if kind == "window":
                    self._window(arg, t)
                elif kind == "controls":
                    self._pipe.set_controls(**arg)
                elif kind == "switch":
                    self._switch(arg)
        except BaseException as e:  # noqa: BLE001 - carried to the owner, who logs and closes
            self.error = e
            self._post(self._on_error, e)
        finally:
            self._pipe = None

    def _post(self, fn: Callable, arg: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:             # loop closed: the owner is gone
            pass

    def _window(self, w: Window, t_window: float) -> None:
        t_taken = time.monotonic()
        spf = self._spf = w.spec.samples_per_frame
        fresh = w.fresh_samples
        first_content = (w.end_sample - len(fresh)) // spf     # content frame of fresh[0]
        if self._next_content is not None and first_content > self._next_content:
            self._map.shift(self._pushed_frames, first_content - self._next_content)
        self._pipe.push(fresh)
        self._pushed_frames += len(fresh) // spf
        self._next_content = first_content + len(fresh) // spf
        frames = self._pipe.pull()
        self._emit(frames, t_window, t_taken)

    def _emit(self, frames: list, t_window: float, t_taken: float) -> None:
        if not frames:
            return
        out = [(self._map(f.index), to_i420(f.rgb)) for f in frames]
        timings = dict(getattr(self._pipe, "timings", {}) or {})
        self._post(self._on_frames, FrameBatch(out, t_window, t_taken, time.monotonic(), timings))

    def _switch(self, pipeline: Any) -> None:
        t = time.monotonic()
        self._emit(self._pipe.finish(), t, t)
        self._pipe = pipeline
        self._map = _IndexMap(self._next_content or 0)
        self._pushed_frames = 0
        log.info("EngineWorker(%s) switched pipeline at content frame %s", self.name,
                 self._next_content)
