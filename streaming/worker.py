"""The engine of one session, off the event loop: in a thread, or in a process of its own.

Both workers have one interface, used by :class:`~emote.streaming.session.Session`:
``latency_samples``; ``start(loop, on_frames, on_error, name)``; ``submit(window, t)`` (never
blocks: when ``queue_windows`` windows already wait for the engine, the new one is dropped and
counted in ``dropped_windows``; the content index map absorbs the gap, so frames keep their
true timestamps); ``set_controls(**kw)``; ``switch(source)`` (portrait switch: the old
pipeline's held-back lookahead frames are flushed with ``finish()`` and the new one continues at
the next content frame); ``stop()`` (the end marker) and ``join(timeout_s)``. Frames come back
as :class:`FrameBatch` through ``loop.call_soon_threadsafe(on_frames, batch)``; an exception
in the engine goes to ``on_error`` on the loop and ends the worker.

Why a process: one server process runs every session's WebRTC work (Python, on the event loop)
and, with threads, every engine too; they all share one GIL, and on 2 cores two sessions then
missed frame deadlines although the CPUs were not busy. An engine process has its own GIL.
:class:`EnginePool` keeps one spare process with the engine imported (about 1.5 s, imported at
a lower priority: see _import_engine) so that a session starts at once. An engine process runs
one OpenCV, ONNX Runtime and BLAS thread (see BLAS_THREAD_VARS). Threads remain for pipelines
made in-process (tests).

Overlay sessions (``alpha=True``: the pipeline made with ``PipelineSettings(alpha=True)``, a
``load(path, alpha=True)`` for a process) get PACKED frames, (S*3/2, 2S) I420: colour on the
left, the matte as grey on the right (emote.streaming.encoding.to_i420_packed), packed here, off
the event loop. Other sessions' engines make no matte.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from multiprocessing.connection import Connection

from emote.streaming.encoding import to_i420, to_i420_packed
from emote.streaming.ringbuffer import Window

__all__ = ["EngineCore", "EngineWorker", "ProcessEngineWorker", "EnginePool", "FrameBatch"]

log = logging.getLogger(__name__)


@dataclass
class FrameBatch:
    """Frames made from one window: ``frames`` is [(content_index, I420 (H*3/2, W) uint8)]
    (see emote.streaming.encoding.to_i420: converted by the engine's thread or process; W = 2H
    for an overlay session's packed colour + alpha frames)."""

    frames: list[tuple[int, np.ndarray]]
    t_window: float                      # monotonic: the window was ready (last packet arrived)
    t_taken: float                       # monotonic: the engine took it
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


class EngineCore:
    """A pipeline plus the content bookkeeping; runs wherever the worker runs. ``alpha``: send
    packed colour + matte frames (each Frame's ``alpha``; a frame without one counts as opaque)."""

    def __init__(self, pipeline: Any, alpha: bool = False) -> None:
        self.pipe = pipeline
        self.alpha = alpha
        self._map = _IndexMap()
        self._pushed_frames = 0          # frames' worth of audio pushed into the current pipeline
        self._next_content: int | None = None

    def window_parts(self, fresh: np.ndarray, first_content: int, spf: int, t_window: float) -> Iterator[FrameBatch]:
        """``fresh``: float32 (n,) 16 kHz, the window's new audio, starting at content frame
        ``first_content``. Yields the frames that became ready, one FrameBatch per frame, each as
        soon as it is rendered (the pipeline's ``iter_pull``), at least one batch (maybe empty)."""
        t_taken = time.monotonic()
        if self._next_content is not None and first_content > self._next_content:
            self._map.shift(self._pushed_frames, first_content - self._next_content)
        self.pipe.push(fresh)
        self._pushed_frames += len(fresh) // spf
        self._next_content = first_content + len(fresh) // spf
        sent = False
        for frame in self.pipe.iter_pull():
            sent = True
            yield self._batch([frame], t_window, t_taken)
        if not sent:
            yield self._batch([], t_window, t_taken)

    def _batch(self, frames: list, t_window: float, t_taken: float) -> FrameBatch:
        if self.alpha:
            out = [(self._map(f.index), to_i420_packed(f.rgb, getattr(f, "alpha", None))) for f in frames]
        else:
            out = [(self._map(f.index), to_i420(f.rgb)) for f in frames]
        timings = dict(getattr(self.pipe, "timings", {}) or {})
        return FrameBatch(out, t_window, t_taken, time.monotonic(), timings)

    def switch(self, pipeline: Any) -> FrameBatch:
        t = time.monotonic()
        flushed = self._batch(self.pipe.finish(), t, t)
        self.pipe = pipeline
        self._map = _IndexMap(self._next_content or 0)
        self._pushed_frames = 0
        return flushed


def _latency_samples(pipeline: Any) -> int:
    """The pipeline's lookahead in samples (``latency_samples``, or whole ``latency_frames``)."""
    if hasattr(pipeline, "latency_samples"):
        return int(pipeline.latency_samples)
    return int(getattr(pipeline, "latency_frames", 2)) * int(getattr(pipeline, "samples_per_frame", 640))


def _window_args(w: Window) -> tuple[np.ndarray, int, int]:
    spf = w.spec.samples_per_frame
    fresh = w.fresh_samples
    return fresh, (w.end_sample - len(fresh)) // spf, spf


class _Base:
    """What both workers share: binding to the loop, posting, the drop counter."""

    def __init__(self, queue_windows: int) -> None:
        self.queue_windows = queue_windows
        self.dropped_windows = 0
        self.error: BaseException | None = None
        self.name = "?"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_frames: Callable[[FrameBatch], None] = lambda b: None
        self._on_error: Callable[[BaseException], None] = lambda e: None

    def start(self, loop: asyncio.AbstractEventLoop, on_frames: Callable[[FrameBatch], None],
              on_error: Callable[[BaseException], None], name: str) -> None:
        self._loop, self._on_frames, self._on_error, self.name = loop, on_frames, on_error, name
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def _post(self, fn: Callable, arg: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:             # loop closed: the owner is gone
            pass


class EngineWorker(_Base):
    """The engine in a thread of this process (a pipeline object made here). ``alpha``: pack
    each frame's matte beside it (the pipeline must have been made to produce one)."""

    def __init__(self, pipeline: Any, queue_windows: int = 4, alpha: bool = False) -> None:
        super().__init__(queue_windows)
        self.latency_samples = _latency_samples(pipeline)
        self._core = EngineCore(pipeline, alpha)
        self._q: queue.Queue = queue.Queue(maxsize=queue_windows)
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, window: Window, t_window: float) -> bool:
        try:
            self._q.put_nowait(("window", _window_args(window), t_window))
            return True
        except queue.Full:
            self.dropped_windows += 1
            return False

    def set_controls(self, **controls: float) -> None:
        self._q.put(("controls", controls, 0.0))

    def switch(self, pipeline: Any) -> None:
        self._q.put(("switch", pipeline, 0.0))

    def stop(self) -> None:
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
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not None:
                kind, arg, t = item
                if kind == "window":
                    batches = self._core.window_parts(*arg, t)
                elif kind == "controls":
                    self._core.pipe.set_controls(**arg)
                    continue
                else:
                    batches = [self._core.switch(arg)]
                for batch in batches:
                    if batch.frames:
                        self._post(self._on_frames, batch)
        except BaseException as e:  # noqa: BLE001 - carried to the owner, who logs and closes
            self.error = e
            self._post(self._on_error, e)
        finally:
            self._core.pipe = None


# -- the engine in a process -------------------------------------------------------------------
#: nice increment of a spare engine process's imports (see _import_engine)
SPARE_IMPORT_NICE = 10
#: BLAS/OpenMP thread pools of an engine process: 1 thread (``EMOTE_ENGINE_BLAS_THREADS`` changes
#: it). With OpenBLAS's default (one thread per core) its idle workers spin, and on a busy 2-core
#: machine an engine's load (scipy's Delaunay point location, the rig's depth limiter: small
#: LAPACK calls) took 1-10 s of CPU instead of 0.2 s, starving the sessions already running.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ENGINE_MODULES = ("cv2", "emote.engine.pipeline")     # what an engine process imports up front


def _engine_env() -> dict[str, str]:
    """The environment of an engine process: ours, with BLAS_THREAD_VARS set (read at import)."""
    n = os.environ.get("EMOTE_ENGINE_BLAS_THREADS", "1")
    return {**os.environ, **{k: n for k in BLAS_THREAD_VARS}}


def _import_engine(background: bool) -> None:
    """Import the engine: about 0.5 s of CPU. ``background`` (a spare process that nobody waits
    for yet): in a thread whose nice value is raised by SPARE_IMPORT_NICE, so that warming up a
    spare yields the CPU to the sessions running meanwhile (the pool spawns a spare just as a
    session starts, so its import competed with that session's first frames). Linux keeps a nice
    value per thread: the main thread, which serves the session later, keeps its priority."""
    def work() -> None:
        if background:
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + SPARE_IMPORT_NICE)
            except (OSError, AttributeError):       # not Linux / not allowed: import as usual
                pass
        for name in _ENGINE_MODULES:
            importlib.import_module(name)

    if not background:
        work()
        return
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            failed.append(e)
    t = threading.Thread(target=run, name="engine-import")
    t.start()
    t.join()
    if failed:
        raise failed[0]


def _child_main(conn, settings_kw: dict, background: bool = False) -> None:
    """Engine process: wait for ("load", (path, alpha)), then serve windows until None or EOF.
    ``settings_kw`` are the PipelineSettings of every session; ``alpha`` is the session's own
    (its portrait switches keep it). ``background``: a spare (see _import_engine)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from dataclasses import replace

    _import_engine(background)
    import cv2
    # one OpenCV thread per engine process (one per session): sessions do not oversubscribe the cores
    cv2.setNumThreads(int(os.environ.get("EMOTE_ENGINE_CV_THREADS", "1")))
    from emote.engine.pipeline import PipelineSettings, load_pipeline
    settings = PipelineSettings(**settings_kw)
    core = None
    try:
        while True:
            item = conn.recv()
            if item is None:
                return
            kind, arg, t = item
            if kind == "load":
                path, alpha = arg
                settings = replace(settings, alpha=bool(alpha))
                core = EngineCore(load_pipeline(path, settings), alpha=bool(alpha))
                conn.send(("loaded", _latency_samples(core.pipe)))
            elif kind == "window":
                # every frame as soon as it is rendered ("part"); the window's last one as "batch"
                parts = core.window_parts(*arg, t)
                prev = next(parts)
                for b in parts:
                    conn.send(("part", prev))
                    prev = b
                conn.send(("batch", prev))
            elif kind == "controls":
                core.pipe.set_controls(**arg)
            elif kind == "switch":
                conn.send(("batch", core.switch(load_pipeline(arg, settings))))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except (BrokenPipeError, OSError):
            pass


class ProcessEngineWorker(_Base):
    """The engine in a child process; windows and frames cross a socket pair (a 512x512 I420 frame is
    384 KiB: about 10 MB/s per session, well under a millisecond per frame)."""

    def __init__(self, settings_kw: dict, queue_windows: int = 4, background: bool = False) -> None:
        """``background``: a spare that nobody waits for yet: it imports the engine at a lower
        CPU priority (see _import_engine)."""
        super().__init__(queue_windows)
        # A plain `python -m emote.streaming.worker FD` child on one end of a socket pair (not
        # multiprocessing's spawn, which re-imports the parent's __main__ script).
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "emote.streaming.worker", str(theirs.fileno()), json.dumps(settings_kw)]
            + (["background"] if background else []),
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_engine_env())
        theirs.close()
        self._conn = Connection(ours.detach())
        self._in_flight = 0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.latency_samples = 0

    def load(self, path: str, alpha: bool = False) -> int:
        """Blocking: make the child load ``path`` (``alpha``: for an overlay session, packed colour
        + matte frames); returns latency_samples (EmoteError on failure)."""
        from emote.engine.exceptions import EmoteError
        self._conn.send(("load", (path, bool(alpha)), 0.0))
        reply = self._conn.recv()
        if reply[0] != "loaded":
            raise EmoteError(f"the engine could not load {path}: {reply[1]}")
        self.latency_samples = int(reply[1])
        return self.latency_samples

    def _start(self) -> None:
        self._reader = threading.Thread(target=self._read, name=f"engine-{self.name}", daemon=True)
        self._reader.start()

    def _send(self, item) -> bool:
        try:
            self._conn.send(item)
            return True
        except (BrokenPipeError, OSError):
            return False

    def submit(self, window: Window, t_window: float) -> bool:
        with self._lock:
            if self._in_flight >= self.queue_windows:
                self.dropped_windows += 1
                return False
            self._in_flight += 1
        return self._send(("window", _window_args(window), t_window))

    def set_controls(self, **controls: float) -> None:
        self._send(("controls", controls, 0.0))

    def switch(self, path: str) -> None:
        with self._lock:
            self._in_flight += 1
        self._send(("switch", path, 0.0))

    def stop(self) -> None:
        self._send(None)

    def join(self, timeout_s: float) -> bool:
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(1.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(1.0)
        self._conn.close()
        return True

    def _read(self) -> None:
        while True:
            try:
                kind, arg = self._conn.recv()
            except (EOFError, OSError):
                return
            if kind in ("batch", "part"):
                if kind == "batch":                   # a window's last frames: it is done
                    with self._lock:
                        self._in_flight = max(0, self._in_flight - 1)
                if arg.frames:
                    self._post(self._on_frames, arg)
            elif kind == "error":
                self.error = RuntimeError(arg)
                self._post(self._on_error, self.error)
                return

    def kill(self) -> None:
        self._proc.kill()


class EnginePool:
    """Hands out engine processes with the engine already imported, keeping ``spares`` ready."""

    def __init__(self, settings_kw: dict, spares: int = 1, queue_windows: int = 4) -> None:
        self.settings_kw, self.spares, self.queue_windows = settings_kw, spares, queue_windows
        self._ready: list[ProcessEngineWorker] = []
        self._lock = threading.Lock()

    def _spawn(self, background: bool = False) -> ProcessEngineWorker:
        return ProcessEngineWorker(self.settings_kw, self.queue_windows, background)

    def fill(self) -> None:
        """Start spares up to ``spares``; they import the engine at a lower priority."""
        with self._lock:
            while len(self._ready) < self.spares:
                self._ready.append(self._spawn(background=True))

    def acquire(self, path: str, alpha: bool = False) -> ProcessEngineWorker:
        """Blocking (run it in an executor): a worker with ``path`` loaded (``alpha``: see load)."""
        with self._lock:
            worker = self._ready.pop() if self._ready else None
        worker = worker or self._spawn()
        try:
            worker.load(path, alpha)
        except BaseException:
            worker.stop()
            worker.join(2.0)
            raise
        finally:
            threading.Thread(target=self.fill, daemon=True).start()
        return worker

    def close(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for w in ready:
            w.stop()
            w.join(2.0)


if __name__ == "__main__":           # an engine process (see ProcessEngineWorker)
    from emote.streaming import worker as _module     # pickles name emote.streaming.worker.*
    _module._child_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3:4] == ["background"])
