"""aiortc tracks of one session: the portrait video out, the peer's own voice back, delayed.

One clock for both directions (:class:`MediaClock`): *content time* c is the position in the
peer's audio stream, from sample counts (sample k of the 48 kHz input is at c = k / 48000).
Content time c is **sent** at wall time ``t0 + delay_s + c``, where ``t0`` is when content 0
arrived and ``delay_s`` is the engine's latency (window hop + lookahead + a processing margin).
The video track sends frame n (content n / fps) at its slot and the audio track sends the
20 ms packet m (content m / 50) at its slot, so both leave together and the RTP timestamps
(video pts n * 3600 on the 90 kHz clock, audio m * 960 at 48 kHz, both from 0) map to the same
wall clock in the sender reports: the receiver's lip sync holds. The returned voice is the
input delayed by exactly ``delay_s``.

The video never stalls once running: a slot whose frame is not ready repeats the newest frame
before it (counted as held); a track that is called late catches up by sending at once, and
skips the slots it missed only when more than 3 frames behind. The audio
never skips (its RTP clock counts samples, so a skip would shift it against the video): when
called late it sends the next packet at once, and audio that has not arrived is silence.
"""
from __future__ import annotations

import asyncio
import fractions
import functools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from emote.streaming.encoding import video_frame
from emote.streaming.ringbuffer import AudioRingBuffer

__all__ = ["MediaClock", "AudioInput", "FrameBuffer", "ReadyFrame", "PortraitVideoTrack",
           "DelayedAudioTrack", "VIDEO_CLOCK_HZ", "NET_RATE_HZ", "PACKET_SAMPLES"]

log = logging.getLogger(__name__)

VIDEO_CLOCK_HZ = 90000
NET_RATE_HZ = 48000           # WebRTC Opus audio rate
PACKET_SAMPLES = 960          # 20 ms at 48 kHz: one Opus packet


class MediaClock:
    """Content time <-> wall time (``time.monotonic`` seconds) for one session."""

    def __init__(self, delay_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.delay_s = float(delay_s)
        self.now = now
        self.t0: float | None = None
        self.started = asyncio.Event()

    def start(self, t0: float) -> None:
        if self.t0 is None:
            self.t0 = t0
            self.started.set()

    def observe(self, arrival: float, content_end_s: float) -> None:
        """Content up to ``content_end_s`` had arrived at ``arrival``: move t0 earlier if that
        shows the stream started earlier than thought (packets are only ever late, never early,
        so the earliest implied start is the truest; a late first packet would otherwise add
        its lateness to every frame). The tracks catch up by themselves (video skips a slot,
        audio sends at once)."""
        implied = arrival - content_end_s
        if self.t0 is None:
            self.start(implied)
        elif implied < self.t0:
            self.t0 = implied

    def send_time(self, content_s: float) -> float:
        """Wall time at which content time ``content_s`` leaves the server."""
        assert self.t0 is not None
        return self.t0 + self.delay_s + content_s

    def arrival_time(self, content_s: float) -> float:
        """Wall time at which content time ``content_s`` arrived (or is due to)."""
        assert self.t0 is not None
        return self.t0 + content_s


class AudioInput:
    """Decoded WebRTC audio (any rate/layout/format) -> float32 mono at 48 kHz and at 16 kHz.

    PyAV's resampler (libswresample) does the format and channel conversion at the frame's own
    rate, then to 48 kHz; a second streaming PyAV resampler makes the engine's 16 kHz from that
    48 kHz stream, the same resampler the offline path uses (engine.audio). Its output is exact
    in count once it has started (its first output; at once for a 20 ms packet): after n samples
    in, floor(n / 3) - 16 out, whatever the chunking, and without
    delay (it compensates its filter delay by holding back its last 16 samples, 1 ms, until more
    arrive), so sample k at 16 kHz is content time k / 16000 exactly and a 20 ms packet always
    completes the same 320 samples. (soxr's streaming resampler, used before, emits in blocks of
    300 samples: which packet completes a window then varied, and a window ending on a packet
    boundary sometimes waited a whole packet more.)
    """

    def __init__(self, engine_rate_hz: int = 16000) -> None:
        self._to48 = av.AudioResampler(format="flt", layout="mono", rate=NET_RATE_HZ)
        self._to_engine = MonoResampler(engine_rate_hz)
        self.engine_hold_samples = _held_back(engine_rate_hz)

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """One decoded frame -> float32 (n,) mono at 48 kHz (n may differ from the frame's)."""
        return _frames_to_array(self._to48.resample(frame))

    def to_engine(self, x48: np.ndarray) -> np.ndarray:
        """48 kHz mono float32 -> engine-rate mono float32, streaming."""
        return self._to_engine(x48)


class MonoResampler:
    """Streaming float32 mono 48 kHz -> float32 mono ``rate_hz`` (PyAV, libswresample)."""

    def __init__(self, rate_hz: int) -> None:
        self._rs = av.AudioResampler(format="flt", layout="mono", rate=int(rate_hz))
        self._pts = 0

    def __call__(self, x48: np.ndarray) -> np.ndarray:
        x48 = np.ascontiguousarray(x48, np.float32).reshape(1, -1)
        if not x48.size:
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(x48, format="flt", layout="mono")
        frame.sample_rate, frame.pts = NET_RATE_HZ, self._pts
        frame.time_base = fractions.Fraction(1, NET_RATE_HZ)
        self._pts += x48.shape[1]
        return _frames_to_array(self._rs.resample(frame))


def _frames_to_array(frames: list[av.AudioFrame]) -> np.ndarray:
    out = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=4)
def _held_back(engine_rate_hz: int) -> int:
    """How many output samples the streaming resampler keeps back (its filter's look-ahead).

    A window whose last samples are held back becomes complete only with the next packet; the
    session starts both streams with this many samples of silence (times 3 at 48 kHz) so that
    a window ending on a packet boundary is complete when that packet arrives."""
    n_in = NET_RATE_HZ // 10
    return n_in * engine_rate_hz // NET_RATE_HZ - len(MonoResampler(engine_rate_hz)(np.zeros(n_in, np.float32)))


@dataclass
class ReadyFrame:
    """A frame the engine made: ``i420`` (H * 3 / 2, W) uint8 (planar yuv420p) for content
    frame ``index``."""

    index: int
    i420: np.ndarray
    t_ready: float                # monotonic time it reached the event loop
    t_audio_arrival: float        # monotonic arrival time of this frame's own audio


class FrameBuffer:
    """Bounded store of ready frames by content index; the newest ``capacity`` are kept."""

    def __init__(self, capacity: int = 50) -> None:
        self._frames: OrderedDict[int, ReadyFrame] = OrderedDict()
        self._capacity = capacity
        self.first = asyncio.Event()
        self.closed = False

    def put(self, frame: ReadyFrame) -> None:
        self._frames[frame.index] = frame
        while len(self._frames) > self._capacity:
            self._frames.popitem(last=False)
        self.first.set()

    def take(self, n: int) -> ReadyFrame | None:
        """The newest frame with index <= n (older ones are discarded), or None."""
        best = None
        while self._frames:
            k = next(iter(self._frames))
            if k > n:
                break
            best = self._frames.pop(k)
        return best

    def take_oldest(self) -> ReadyFrame | None:
        return self._frames.popitem(last=False)[1] if self._frames else None

    def close(self) -> None:
        self.closed = True
        self.first.set()


class PortraitVideoTrack(MediaStreamTrack):
    """Steady ``fps`` video from a :class:`FrameBuffer`, paced by a :class:`MediaClock`.

    ``on_sent(ready_frame, slot, held)`` is called for every slot (for metrics). recv() raises
    MediaStreamError only once the session has ended (``buffer.close()`` or ``stop()``).
    """

    kind = "video"

    def __init__(self, clock: MediaClock, buffer: FrameBuffer, fps: int = 25,
                 on_sent: Callable[[ReadyFrame, int, bool], None] | None = None) -> None:
        super().__init__()
        self.clock, self.buffer, self.fps = clock, buffer, fps
        self.on_sent = on_sent
        self._next_slot = 0
        self._last: ReadyFrame | None = None
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        self._returned_at: float | None = None
        self.encode_lead_s = 0.0               # EMA of the sender's encode + send time
        # A sender a little late (a slow encode on a busy machine) catches up by sending the
        # next frames at once, timestamps unchanged; only beyond 3 frames are slots skipped.
        self.max_behind_s = 3.0 / fps

    async def _next_frame(self) -> tuple[ReadyFrame, int, bool]:
        await self.clock.started.wait()
        while self._last is None:              # only before the very first frame
            await self.buffer.first.wait()
            if self.buffer.closed:
                raise MediaStreamError
            first = self.buffer.take_oldest()
            if first is not None:              # it goes at its own slot, even if late, so that
                wait = self.clock.send_time(first.index / self.fps) - self.clock.now()
                if wait > 0:                   # both tracks' RTP clocks start at content 0
                    await asyncio.sleep(wait)
                self._last, self._next_slot = first, first.index + 1
                return first, first.index, False
        n = self._next_slot
        now = self.clock.now()
        behind = now - self.clock.send_time(n / self.fps) + self.encode_lead_s
        if behind > self.max_behind_s:         # far behind: skip the slots already missed
            n = int((now + self.encode_lead_s - self.clock.send_time(0.0)) * self.fps)
        elif behind < 0:
            await asyncio.sleep(-behind)
        if self.buffer.closed or self.readyState != "live":
            raise MediaStreamError
        fresh = self.buffer.take(n)
        held = fresh is None
        if not held:
            self._last = fresh
        self._next_slot = n + 1
        return self._last, n, held

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._returned_at is not None:      # the sender encoded and sent since we returned
            took = self.clock.now() - self._returned_at
            self.encode_lead_s += 0.1 * (min(took, 1.0 / self.fps) - self.encode_lead_s)
        frame, slot, held = await self._next_frame()
        self._returned_at = self.clock.now()
        vf = video_frame(frame.i420)           # no copy: a ReadyFrame's array is never written
        vf.pts = slot * VIDEO_CLOCK_HZ // self.fps
        vf.time_base = self._time_base
        if self.on_sent is not None:
            self.on_sent(frame, slot, held)
        return vf


class DelayedAudioTrack(MediaStreamTrack):
    """The peer's own 48 kHz audio, read from ``ring`` and sent ``clock.delay_s`` after arrival.

    Packet m carries input samples [960 m, 960 (m + 1)) (content [m/50, (m+1)/50) s) as s16
    mono at 48 kHz with pts = 960 m. Samples not (or no longer) in the ring are silence.
    """

    kind = "audio"

    def __init__(self, clock: MediaClock, ring: AudioRingBuffer) -> None:
        super().__init__()
        self.clock, self.ring = clock, ring
        self._next = 0
        self._time_base = fractions.Fraction(1, NET_RATE_HZ)
        self.silent_packets = 0

    def _read(self, m: int) -> np.ndarray:
        try:
            return self.ring.read(m * PACKET_SAMPLES, (m + 1) * PACKET_SAMPLES)
        except IndexError:
            self.silent_packets += 1
            return np.zeros(PACKET_SAMPLES, np.float32)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self.clock.started.wait()
        m = self._next
        wait = self.clock.send_time(m * PACKET_SAMPLES / NET_RATE_HZ) - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.readyState != "live":
            raise MediaStreamError
        x = self._read(m)
        s16 = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(s16, format="s16", layout="mono")
        frame.sample_rate = NET_RATE_HZ
        frame.pts = m * PACKET_SAMPLES
        frame.time_base = self._time_base
        self._next = m + 1
        return frame
