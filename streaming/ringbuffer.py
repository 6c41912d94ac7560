"""Audio ring buffer and window slicer for the live path.

Everything here counts samples; nothing reads a clock. A sample's timestamp is its absolute
index in the stream divided by the sample rate, so the same audio gives the same windows and
the same timestamps however the network chopped it into packets.

Shapes and units
----------------
* audio: float32 mono, ``sample_rate_hz`` (16 kHz inside the engine), shape (n,)
* a video frame i covers samples [i * spf, (i + 1) * spf) with spf = sample_rate_hz / fps
  (640 at 16 kHz and 25 fps)
* a :class:`Window` carries ``hop_frames`` new frames, ``context_frames`` of past audio before
  them and ``lookahead_frames`` of future audio after them.

Why these default numbers (``WindowSpec()``)
--------------------------------------------
Ditto's online mode uses 5 new frames per 200 ms hop, 3 frames of context and 2 of lookahead;
that suits a diffusion backbone that denoises a 5-frame chunk at once. The live session paces
the engine with ``hop_frames=1`` (one window per 40 ms, i.e. every second 20 ms Opus packet)
because the end-to-end target is 250 ms p95: every extra frame in a hop adds 40 ms of waiting to
the frames at the start of the hop, and the per-window overhead of a 1-frame hop (one
``push``/``pull`` call) is tens of microseconds against a few ms of rendering.
``context_frames=3`` (120 ms) covers the receptive field of the frame-level audio features
(a 25 ms analysis window with a few frames of smoothing). The lookahead must equal the
engine's own (coarticulation: the mouth starts moving before the sound), so the session sets it
from the pipeline's ``latency_samples`` (:meth:`WindowSpec.for_latency`): whole frames for the
motion generator (2 frames, 80 ms, by default, as in Ditto) plus ``lookahead_extra_samples`` for
the feature analysis window's overhang past a frame's end (120 samples, 7.5 ms), so no window
waits a whole frame for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emote.engine.exceptions import ConfigError

__all__ = ["WindowSpec", "Window", "AudioRingBuffer", "WindowSlicer"]


@dataclass(frozen=True)
class WindowSpec:
    """How the stream is cut into windows (see the module docstring for the defaults)."""

    sample_rate_hz: int = 16000
    fps: int = 25
    hop_frames: int = 1
    context_frames: int = 3
    lookahead_frames: int = 2
    lookahead_extra_samples: int = 0    # beyond the whole lookahead frames (less than one frame)

    @classmethod
    def for_latency(cls, latency_samples: int, sample_rate_hz: int = 16000, fps: int = 25,
                    hop_frames: int = 1, context_frames: int = 3) -> "WindowSpec":
        """The spec whose windows end exactly ``latency_samples`` past their last new frame."""
        spf = sample_rate_hz // fps
        return cls(sample_rate_hz, fps, hop_frames, context_frames, latency_samples // spf, latency_samples % spf)

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.fps <= 0:
            raise ConfigError(f"sample_rate_hz ({self.sample_rate_hz}) and fps ({self.fps}) must be > 0")
        if self.sample_rate_hz % self.fps:
            raise ConfigError(f"sample_rate_hz {self.sample_rate_hz} is not a whole number of samples "
                              f"per frame at {self.fps} fps; choose an fps that divides it")
        if self.hop_frames < 1:
            raise ConfigError(f"hop_frames must be >= 1, got {self.hop_frames}")
        if self.context_frames < 0 or self.lookahead_frames < 0:
            raise ConfigError("context_frames and lookahead_frames must be >= 0, got "
                              f"{self.context_frames} and {self.lookahead_frames}")
        if not 0 <= self.lookahead_extra_samples < self.sample_rate_hz // self.fps:
            raise ConfigError(f"lookahead_extra_samples must be in [0, samples per frame), got "
                              f"{self.lookahead_extra_samples}")

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate_hz // self.fps

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.samples_per_frame

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.hop_frames + self.lookahead_frames

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame + self.lookahead_extra_samples

    @property
    def lookahead_samples(self) -> int:
        """Audio after the last new frame that a window holds (its lookahead), samples."""
        return self.lookahead_frames * self.samples_per_frame + self.lookahead_extra_samples

    def packet_phase_samples(self, packet_samples: int) -> int:
        """Samples of silence to put before the stream so that windows end on packet ends.

        Audio arrives in packets of ``packet_samples`` (a 20 ms Opus packet is 320 samples at
        16 kHz), so a window is complete only when the packet holding its last sample arrives.
        Window k ends at (k + 1) * hop + lookahead samples; prepending
        ``(hop + lookahead) mod packet_samples`` moves the first window's end, and with a hop of
        whole packets every window's, onto a packet end: complete the moment that packet arrives,
        with no wait for the rest of it. 0 for ``packet_samples`` < 1.
        """
        if packet_samples < 1:
            return 0
        return (self.hop_samples + self.lookahead_samples) % int(packet_samples)


@dataclass(frozen=True, eq=False)
class Window:
    """One slice of the stream.

    ``samples``: float32 (window_samples,), covering frames
    [first_frame - context_frames, first_frame + hop_frames + lookahead_frames); samples before the
    start of the stream, or past its end at :meth:`WindowSlicer.finish`, are zeros.
    """

    index: int          # k: the k-th window of the stream
    first_frame: int    # first new frame (k * hop_frames)
    n_frames: int       # new frames in this window (hop_frames)
    start_sample: int   # absolute index of samples[0] (may be negative: left zero padding)
    samples: np.ndarray
    spec: WindowSpec

    @property
    def t_start_s(self) -> float:
        """Time of the first new frame, seconds, from sample counts."""
        return self.first_frame * self.spec.samples_per_frame / self.spec.sample_rate_hz

    @property
    def end_sample(self) -> int:
        """Absolute index one past the last sample (the end of the lookahead)."""
        return self.start_sample + len(self.samples)

    @property
    def fresh_samples(self) -> np.ndarray:
        """Audio that no earlier window ended with: [0, end) for window 0, the last hop after.

        Pushing every window's fresh samples into the engine, in order, pushes the stream exactly
        once, so a pipeline whose own lookahead is ``lookahead_frames`` can emit exactly this
        window's new frames right after the push.
        """
        fresh_start = 0 if self.index == 0 else self.end_sample - self.spec.hop_samples
        return self.samples[fresh_start - self.start_sample:]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (self.index, self.first_frame, self.n_frames, self.start_sample, self.spec) == \
            (other.index, other.first_frame, other.n_frames, other.start_sample, other.spec) \
            and np.array_equal(self.samples, other.samples)


class AudioRingBuffer:
    """A bounded float32 mono buffer addressed by absolute sample index.

    Policy when full: **drop oldest**. A live producer must never block on a slow consumer;
    audio older than ``capacity`` samples is overwritten and counted in ``dropped_samples``.
    A reader asking for overwritten samples gets an :class:`IndexError` and must skip ahead
    (the :class:`WindowSlicer` does that, counting ``skipped_windows``).
    """

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples <= 0:
            raise ConfigError(f"capacity_samples must be > 0, got {capacity_samples}")
        self._buf = np.zeros(capacity_samples, np.float32)
        self._cap = capacity_samples
        self.written = 0            # absolute count of samples ever pushed
        self.dropped_samples = 0    # samples overwritten before anyone marked them consumed
        self.consumed = 0           # the reader's mark: samples below it may be overwritten freely

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.written - self._cap)

    def push(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        if len(x) > self._cap:
            x = x[-self._cap:]
            self.written += len(samples) - self._cap
        n = len(x)
        start = self.written % self._cap
        first = min(n, self._cap - start)
        self._buf[start:start + first] = x[:first]
        self._buf[:n - first] = x[first:]
        self.written += n
        self.dropped_samples += max(0, self.oldest - self.consumed)
        self.consumed = max(self.consumed, self.oldest)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as a new float32 array; negative indices read as zeros.

        Raises IndexError when part of the range was overwritten or not written yet.
        """
        if stop < start:
            raise ValueError(f"read({start}, {stop}): stop before start")
        if stop > self.written:
            raise IndexError(f"samples up to {stop} requested, only {self.written} written")
        pad = min(max(0, -start), stop - start)
        start = max(0, start)
        if start < stop and start < self.oldest:
            raise IndexError(f"sample {start} was overwritten (oldest held: {self.oldest})")
        out = np.zeros(pad + max(0, stop - start), np.float32)
        if start < stop:                 # at most two slices of the ring (it may wrap once)
            a, n = start % self._cap, stop - start
            first = min(n, self._cap - a)
            out[pad:pad + first] = self._buf[a:a + first]
            out[pad + first:] = self._buf[:n - first]
        return out


class WindowSlicer:
    """Cuts a pushed stream into :class:`Window` s, the same ones whatever the push sizes.

    ``push(samples)`` returns the windows that became complete (their lookahead has arrived);
    ``finish()`` returns the remaining windows that hold at least one real new sample, their
    missing audio zero-padded. Windows are produced synchronously inside ``push``, so the ring
    (``capacity_s``, drop-oldest) only needs to hold one window; a single push larger than the
    ring loses its oldest part, and the windows that needed it are skipped (``skipped_windows``).
    """

    def __init__(self, spec: WindowSpec = WindowSpec(), capacity_s: float = 10.0) -> None:
        cap = max(int(round(capacity_s * spec.sample_rate_hz)), 2 * spec.window_samples)
        self.spec = spec
        self.ring = AudioRingBuffer(cap)
        self.next_index = 0
        self.skipped_windows = 0
        self._finished = False

    @property
    def samples_pushed(self) -> int:
        return self.ring.written

    def _bounds(self, k: int) -> tuple[int, int]:
        s = self.spec
        first = k * s.hop_frames
        start = (first - s.context_frames) * s.samples_per_frame
        return start, start + s.window_samples

    def _make(self, k: int, samples: np.ndarray) -> Window:
        s = self.spec
        start, _ = self._bounds(k)
        return Window(k, k * s.hop_frames, s.hop_frames, start, samples, s)

    def push(self, samples: np.ndarray) -> list[Window]:
        if self._finished:
            raise RuntimeError("WindowSlicer.push after finish()")
        self.ring.push(samples)
        out: list[Window] = []
        while True:
            start, stop = self._bounds(self.next_index)
            if stop > self.ring.written:
                break
            if max(start, 0) < self.ring.oldest:    # overwritten: skip ahead, counted
                self.skipped_windows += 1
                self.next_index += 1
                continue
            out.append(self._make(self.next_index, self.ring.read(start, stop)))
            self.ring.consumed = max(self.ring.consumed, start + self.spec.context_frames
                                     * self.spec.samples_per_frame)
            self.next_index += 1
        return out

    def finish(self) -> list[Window]:
        """Windows whose new frames hold real samples, zero-padded to full length."""
        self._finished = True
        out: list[Window] = []
        s = self.spec
        while True:
            start, stop = self._bounds(self.next_index)
            first_new = start + s.context_frames * s.samples_per_frame
            if first_new >= self.ring.written:
                break
            if max(start, 0) < self.ring.oldest:
                self.skipped_windows += 1
                self.next_index += 1
                continue
            have = self.ring.read(start, min(stop, self.ring.written))
            buf = np.zeros(s.window_samples, np.float32)
            buf[:len(have)] = have
            out.append(self._make(self.next_index, buf))
            self.next_index += 1
        return out
