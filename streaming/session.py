"""One peer: its RTCPeerConnection, audio input, engine worker, output tracks and stats.

Data path (shapes and units):

1. the peer's audio track -> ``av.AudioFrame`` (Opus decoded: s16, 48 kHz, usually stereo,
   960 samples) -> :class:`~emote.streaming.tracks.AudioInput` -> float32 mono 48 kHz, kept in
   a 10 s drop-oldest ring for the return path, and float32 mono 16 kHz for the engine;
2. 16 kHz -> :class:`~emote.streaming.ringbuffer.WindowSlicer` (hop 1 frame, lookahead = the
   pipeline's ``latency_samples``) -> the engine worker (its own process, or a thread);
3. frames (content index, I420 uint8 (H * 3 / 2, W)) -> FrameBuffer -> PortraitVideoTrack (25 fps)
   and the ring -> DelayedAudioTrack, both on the session's :class:`MediaClock`.

Output delay (``delay_s``): a frame n can be made once its window has arrived: the audio up to the
end of frame n + hop - 1 plus the pipeline's lookahead (``latency_samples``: the generator's
frames + 7.5 ms of feature window), i.e. hop frames + lookahead after its own audio started
arriving, plus the engine's time, ``margin_ms``. Audio arrives in whole packets (20 ms of Opus), so
a window is complete only when the packet holding its last sample arrives: the session phases the
frame grid against the packet grid (``packet_ms``: both streams start with a few ms of silence,
:meth:`Session.grid_phase_samples`) so that every window ends exactly on a packet boundary and no
part of the margin waits for the rest of a packet. With the defaults: 40 + 87.5 + 50 = 177.5 ms
for the baseline, 40 + 127.5 + 50 = 217.5 ms for the backbone.

An engine slower than real time: at most ``engine_queue_windows`` windows wait for it (8 x 40 ms);
newer ones are dropped (counted), so the latency stays bounded and the video holds instead.

No audio arriving (a finished file, a muted peer that sends nothing): a watchdog pushes silence
whenever the input falls more than ``gap_fill_ms`` behind the wall clock, so the engine keeps
running and the portrait idles (also from ``start_grace_s`` after connecting if no audio came).
When real audio resumes after a filled gap it is placed at its arrival time (the rest of the gap
is filled), and audio that arrives after its place was filled (more than one packet ahead of the
wall clock) is dropped, as a jitter buffer drops late packets: the latency cannot creep. Until the first gap, the clock's start is refined by every
packet (MediaClock.observe).

End: ``close()`` is idempotent; it runs on a closed WebSocket, a failed/closed peer connection,
an engine error, nothing heard from the peer for ``peer_timeout_s`` (neither audio nor the RTCP
receiver reports that every live receiver sends about once a second about our video: a peer that
stops sending audio but still watches stays, and its portrait idles; a killed one is gone within
``peer_timeout_s`` + 0.25 s), or no connection within ``connect_timeout_s``.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from emote.engine.exceptions import ConfigError
from emote.streaming.jitter import install
from emote.streaming.metrics import StreamingMetrics
from emote.streaming.ringbuffer import AudioRingBuffer, WindowSlicer, WindowSpec
from emote.streaming.tracks import (NET_RATE_HZ, AudioInput, DelayedAudioTrack, FrameBuffer,
                                    MediaClock, PortraitVideoTrack, ReadyFrame)
from emote.streaming.worker import FrameBatch

__all__ = ["Session", "SessionOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    """Per-session timing; the server fills it from its ServerSettings.

    ``margin_ms`` (50): the engine's time for a window, from the arrival of the packet that
    completes it (render about 5 ms per 512x512 frame on this 2-core machine, up to 25 ms when
    both cores are busy) plus the trip through its process and some jitter; less margin, more
    held frames. ``packet_ms`` (20): the peer's audio packet duration (WebRTC's Opus default
    ptime; 0: do not phase the frame grid). ``gap_fill_ms`` (200): longer than network
    jitter on a healthy path, short enough that the portrait idles within a blink of silence.
    ``peer_timeout_s`` (3): a killed peer is noticed within 5 s even without its WebSocket.
    """

    fps: int = 25
    sample_rate_hz: int = 16000
    hop_frames: int = 1
    context_frames: int = 3
    margin_ms: float = 50.0
    packet_ms: float = 20.0
    gap_fill_ms: float = 200.0
    peer_timeout_s: float = 3.0
    start_grace_s: float = 0.5
    connect_timeout_s: float = 20.0
    low_latency_jitter_buffer: bool = True
    engine_queue_windows: int = 8      # windows waiting for the engine (320 ms); more are dropped
    return_audio_ring_s: float = 10.0

    def __post_init__(self) -> None:
        if self.margin_ms < 0 or self.gap_fill_ms < 20 or self.peer_timeout_s <= 0.2:
            raise ConfigError("margin_ms must be >= 0, gap_fill_ms >= 20, peer_timeout_s > 0.2")
        if not 0 <= self.packet_ms <= 120:
            raise ConfigError("packet_ms must be 0..120 (0: no packet phasing)")
        if self.engine_queue_windows < 1 or self.return_audio_ring_s < 1:
            raise ConfigError("engine_queue_windows must be >= 1 and return_audio_ring_s >= 1")


class Session:
    """See the module docstring. ``sid`` is a short random id used in logs and URLs."""

    def __init__(self, engine: Any, portrait: str, options: SessionOptions,
                 metrics: StreamingMetrics, on_closed: Callable[["Session"], None],
                 overlay: bool = False) -> None:
        """``engine``: an EngineWorker or ProcessEngineWorker (emote.streaming.worker), not
        started; the session starts it and owns it from here on. ``overlay``: the engine was made
        with alpha (its frames are packed colour + matte, 2S x S; a portrait switch must keep
        that: the server makes the new pipeline with alpha too)."""
        self.sid = secrets.token_hex(4)
        self.opts, self.metrics, self.portrait = options, metrics, portrait
        self.overlay = overlay
        self._on_closed = on_closed
        self.spec = WindowSpec.for_latency(int(engine.latency_samples), options.sample_rate_hz, options.fps,
                                           options.hop_frames, options.context_frames)
        self.delay_s = (options.hop_frames * self.spec.samples_per_frame + self.spec.lookahead_samples) \
            / options.sample_rate_hz + options.margin_ms / 1000.0
        self.clock = MediaClock(self.delay_s)
        self.input = AudioInput(options.sample_rate_hz)
        self.ring48 = AudioRingBuffer(int(options.return_audio_ring_s * NET_RATE_HZ))
        self.slicer = WindowSlicer(self.spec)
        # both streams start with the resampler's hold-back of silence (see AudioInput) and the
        # grid phase, so that windows end on packet boundaries
        hold = self.input.engine_hold_samples + self.grid_phase_samples()
        self.slicer.push(np.zeros(hold, np.float32))
        self.ring48.push(np.zeros(hold * NET_RATE_HZ // options.sample_rate_hz, np.float32))
        self.frames = FrameBuffer(capacity=2 * options.fps)
        self.video = PortraitVideoTrack(self.clock, self.frames, options.fps, self._on_sent)
        self.audio = DelayedAudioTrack(self.clock, self.ring48)
        self.loop = asyncio.get_running_loop()
        self.worker = engine
        engine.start(self.loop, self._on_frames, self._on_engine_error, name=self.sid)
        self.pc: RTCPeerConnection | None = None
        self.created = time.monotonic()
        self.last_audio: float | None = None
        self.last_heard: float | None = None    # the peer's last RTCP receiver report
        self._rr_stamps: dict[str, object] = {}
        self.connected_at: float | None = None
        self._filling = False                   # the watchdog is filling a gap with silence
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._tasks: set[asyncio.Task] = set()
        self._sent_times: deque[float] = deque(maxlen=4 * options.fps)
        self._stage_ms: dict[str, deque[float]] = {}
        self.counters = {"frames_sent": 0, "frames_held": 0, "padded_s": 0.0, "trimmed_s": 0.0}
        metrics.sessions_active.inc()
        metrics.sessions_total.inc()
        log.info("%s opened: portrait %s%s, delay %.0f ms", self, portrait,
                 " (overlay: colour + alpha)" if overlay else "", self.delay_s * 1000)

    def grid_phase_samples(self) -> int:
        """The silence that puts every window's end on a packet end
        (:meth:`WindowSpec.packet_phase_samples`); 0 when ``packet_ms`` is 0 or not a whole
        number of engine-rate samples."""
        packet = self.opts.packet_ms * self.opts.sample_rate_hz / 1000.0
        if packet < 1 or abs(packet - round(packet)) > 1e-6:
            return 0
        return self.spec.packet_phase_samples(int(round(packet)))

    def __repr__(self) -> str:
        return f"Session({self.sid})"

    # -- signaling -----------------------------------------------------------------------------
    async def accept(self, offer: RTCSessionDescription, config: RTCConfiguration) -> RTCSessionDescription:
        """Apply the peer's offer, attach our tracks, return the (complete, non-trickle) answer."""
        pc = self.pc = RTCPeerConnection(config)

        @pc.on("track")
        def _on_track(track) -> None:
            if track.kind == "audio":
                self._tune_jitter_buffer(track)
                self._spawn(self._read_audio(track), "reader")

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            log.info("%s connection %s", self, pc.connectionState)
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()
            if pc.connectionState in ("failed", "closed"):
                await self.close(f"connection {pc.connectionState}")

        await pc.setRemoteDescription(offer)
        pc.addTrack(self.video)
        pc.addTrack(self.audio)
        await pc.setLocalDescription(await pc.createAnswer())
        self._spawn(self._watchdog(), "watchdog")
        self._spawn(self._listen_reports(), "reports")
        return pc.localDescription

    def _tune_jitter_buffer(self, track) -> None:
        """Release audio packets as soon as they are in order (see emote.streaming.jitter)."""
        if not self.opts.low_latency_jitter_buffer:
            return
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                install(t.receiver, track.kind)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- input ---------------------------------------------------------------------------------
    async def _read_audio(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            x48 = self.input.convert(frame)
            if len(x48):
                self._on_audio(x48, time.monotonic())

    def _on_audio(self, x48: np.ndarray, now: float) -> None:
        """Place a real packet (float32 mono 48 kHz) on the content timeline and push it."""
        if self.last_audio is None:
            log.info("%s first audio %.0f ms after connecting, after %.0f ms of filled silence",
                     self, (now - (self.connected_at or now)) * 1000, self.counters["padded_s"] * 1000)
        self.last_audio = now
        if self.counters["padded_s"] == 0.0:    # no gap filled yet: the stream is all real audio
            self.clock.observe(now, (self.ring48.written + len(x48)) / NET_RATE_HZ)
        elif self._filling:                     # resuming after a filled gap: land at arrival
            lag = (now - self.clock.t0) - (self.ring48.written + len(x48)) / NET_RATE_HZ
            if lag > 0:
                self._pad(int(lag * NET_RATE_HZ), now)
        self._filling = False
        ahead = (self.ring48.written + len(x48)) / NET_RATE_HZ - (now - self.clock.t0)
        over = ahead - 0.02
        if over > 0:    # late audio whose place a filled gap took: dropped, the latency stays
            cut = min(len(x48), int(over * NET_RATE_HZ))
            self.counters["trimmed_s"] += cut / NET_RATE_HZ
            x48 = x48[cut:]
        self._push_input(x48, now)

    def _pad(self, n: int, now: float) -> None:
        self._push_input(np.zeros(n, np.float32), now)
        self.counters["padded_s"] += n / NET_RATE_HZ
        self.metrics.audio_padded_seconds.inc(n / NET_RATE_HZ)

    def _push_input(self, x48: np.ndarray, now: float) -> None:
        if not len(x48):
            return
        self.ring48.push(x48)
        for w in self.slicer.push(self.input.to_engine(x48)):
            self.worker.submit(w, now)

    async def _watchdog(self, tick_s: float = 0.02) -> None:
        gap_s = self.opts.gap_fill_ms / 1000.0
        while not self.closed.is_set():
            before = time.monotonic()
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            loop_late = now - before - tick_s > 0.05   # this process is starved: audio may be
            if self.clock.t0 is None:                  # waiting in a queue, not missing
                if self.connected_at is not None and now - self.connected_at > self.opts.start_grace_s:
                    self.clock.start(now)             # connected, but no audio: idle anyway
                await self._check_peer(now)
                continue
            lag = (now - self.clock.t0) - self.ring48.written / NET_RATE_HZ
            quiet = now - (self.last_audio or self.clock.t0) > gap_s
            if lag > gap_s and quiet and not loop_late:
                self._pad(int((lag - tick_s) * NET_RATE_HZ), now)
                self._filling = True
            await self._check_peer(now)

    async def _check_peer(self, now: float) -> None:
        if self.connected_at is None:
            if now - self.created > self.opts.connect_timeout_s:
                await self.close("the peer never connected")
            return
        heard = max(t for t in (self.connected_at, self.last_audio, self.last_heard) if t is not None)
        if now - heard > self.opts.peer_timeout_s:
            await self.close(f"nothing heard from the peer for {now - heard:.1f} s")

    async def _listen_reports(self, tick_s: float = 0.25) -> None:
        """Note when the peer's latest RTCP receiver report about our tracks arrived (aiortc keeps
        it as the sender's ``remote-inbound-rtp`` stats, stamped on arrival)."""
        while not self.closed.is_set() and self.pc is not None:
            await asyncio.sleep(tick_s)
            for sender in self.pc.getSenders():
                for st in (await sender.getStats()).values():
                    if st.type == "remote-inbound-rtp" and self._rr_stamps.get(st.id) != st.timestamp:
                        self._rr_stamps[st.id] = st.timestamp
                        self.last_heard = time.monotonic()

    # -- output --------------------------------------------------------------------------------
    def _on_frames(self, batch: FrameBatch) -> None:
        now = time.monotonic()
        self._observe("arrival_to_window", batch.t_taken - batch.t_window)
        for k in ("features", "motion", "render"):
            if k in batch.timings_ms:
                self._observe(k, batch.timings_ms[k] / 1000.0)
        self._observe("window_to_frame", now - batch.t_taken)
        for idx, i420 in batch.frames:
            arrival = self.clock.arrival_time(idx / self.opts.fps) if self.clock.t0 else now
            self.frames.put(ReadyFrame(idx, i420, now, arrival))

    def _on_sent(self, frame: ReadyFrame, slot: int, held: bool) -> None:
        now = time.monotonic()
        self._sent_times.append(now)
        self.counters["frames_sent"] += 1
        self.metrics.frames_sent.inc()
        if held:
            self.counters["frames_held"] += 1
            self.metrics.frames_held.inc()
            return
        self._observe("frame_to_sent", now - frame.t_ready)
        self._observe("arrival_to_sent", now - frame.t_audio_arrival)

    def _observe(self, stage: str, seconds: float) -> None:
        self.metrics.observe_stage(stage, seconds)
        self._stage_ms.setdefault(stage, deque(maxlen=100)).append(seconds * 1000.0)

    def _on_engine_error(self, exc: BaseException) -> None:
        log.error("%s engine failed: %r", self, exc)
        self._spawn(self.close(f"engine error: {exc}"), "close")

    # -- control -------------------------------------------------------------------------------
    def set_controls(self, **controls: float) -> None:
        self.worker.set_controls(**controls)

    def switch_portrait(self, source: Any, portrait: str) -> None:
        """``source``: a pipeline (thread worker) or the portrait's image path (process worker)."""
        self.worker.switch(source)
        self.portrait = portrait

    def stats(self) -> dict:
        """What the page shows: send rate, holds, delay and per-stage medians (ms)."""
        now = time.monotonic()
        recent = [t for t in self._sent_times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        return {"type": "stats", "session": self.sid, "portrait": self.portrait, "overlay": self.overlay,
                "fps_sent": round(fps, 2), "delay_ms": round(self.delay_s * 1000, 1),
                "stages_ms": {k: round(float(np.median(v)), 2) for k, v in self._stage_ms.items() if v},
                **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.counters.items()},
                "dropped_windows": self.worker.dropped_windows,
                "encode_ms": round(self.video.encode_lead_s * 1000, 2)}

    # -- end -----------------------------------------------------------------------------------
    async def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.close_reason = reason
        log.info("%s closing: %s", self, reason)
        me = asyncio.current_task()
        for t in list(self._tasks):
            if t is not me:
                t.cancel()
        self.frames.close()
        self.video.stop()
        self.audio.stop()
        self.worker.stop()
        if self.pc is not None:
            await self.pc.close()
        await self.loop.run_in_executor(None, self.worker.join, 5.0)
        self.metrics.sessions_active.dec()
        self._on_closed(self)
        log.info("%s closed", self)
