"""Python client: stream a file (or the microphone) to an emote server, record what comes back.

    emote client http://127.0.0.1:8080 --audio speech.wav --out received.mp4 [--token T]
    emote client http://127.0.0.1:8080 --mic --seconds 30 --out received.mp4

Sent audio: 48 kHz s16 mono in 20 ms (960-sample) frames, paced by the wall clock; after a
file ends, silence keeps the session alive until ``--seconds``. Received: the portrait video
(RGB frames with their 90 kHz pts) and the returned voice (48 kHz, placed by pts, gaps silent).
Both received tracks' pts start at 0 at the server's content time 0 (see
emote.streaming.tracks), so the MP4 is written on that common clock.
"""
from __future__ import annotations

import asyncio
import fractions
import json
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver,
                    RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from emote.engine.exceptions import AudioError, ConfigError, EmoteError
from emote.streaming.ice import filter_sdp_candidates, restrict_ice_addresses
from emote.streaming.jitter import install as install_jitter_buffer

__all__ = ["ClientSettings", "Recording", "FileAudioTrack", "MicAudioTrack", "run_client",
           "write_mp4", "read_audio_48k", "ServerRefused", "EncodedVideoFrame", "count_without_decoding",
           "codec_preferences", "opus_packets"]

log = logging.getLogger(__name__)
RATE = 48000
PACKET = 960


class ServerRefused(EmoteError):
    """The server answered the offer with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"server refused the offer: HTTP {status}: {text}")
        self.status = status


@dataclass(frozen=True)
class ClientSettings:
    url: str                                   # http://host:port (the server's base URL)
    token: str | None = None
    portrait: str | None = None
    seconds: float = 10.0                      # how long to stay connected
    ice_addresses: tuple[str, ...] = ()        # e.g. ("127.0.0.1",) for a loopback server
    ice_servers: tuple[str, ...] = ()
    keep_frames: bool = True                   # keep RGB frames in memory (tests, --out)
    control_channel: bool = True               # open /ws (stats; closing it ends the session)
    overlay: bool = False                      # ask for packed colour + alpha frames (2S x S)
    video_codec: str | None = None             # "VP8" or "H264": offer only that (None: aiortc's order)
    decode_video: bool = True                  # False: count complete frames, do not decode them

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"server URL must start with http:// or https://, got {self.url!r}")
        if self.seconds <= 0:
            raise ConfigError(f"seconds must be > 0, got {self.seconds}")
        if self.video_codec not in (None, "VP8", "H264"):
            raise ConfigError(f"video_codec must be VP8, H264 or None, got {self.video_codec!r}")
        if self.keep_frames and not self.decode_video:
            raise ConfigError("keep_frames needs decode_video: frames that are not decoded have no pixels")


@dataclass(frozen=True)
class EncodedVideoFrame:
    """A complete encoded video frame that was not decoded (``ClientSettings.decode_video=False``):
    its RTP timestamp as ``pts`` (90 kHz, from 0, as a decoded frame's) and its size in bytes."""

    pts: int
    nbytes: int


class _CountingQueue(queue.Queue):
    """Stands in for an aiortc video receiver's decoder queue (``decode_video=False``): each
    complete encoded frame goes straight to the track as an :class:`EncodedVideoFrame`, on the
    event loop, without decoding. The end marker (None) still reaches aiortc's decoder thread,
    which then ends the track as usual. A benchmark's clients share the server's machine; a real
    receiver decodes on its own, so the benchmark should not charge that work to the server."""

    def __init__(self, track_queue: asyncio.Queue) -> None:
        super().__init__()
        self._track_queue = track_queue

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            return super().put(None, block, timeout)
        _codec, encoded = item
        self._track_queue.put_nowait(EncodedVideoFrame(int(encoded.timestamp), len(encoded.data)))


_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"     # private in aiortc 1.16 (pinned)


def count_without_decoding(receiver: RTCRtpReceiver) -> bool:
    """Make video ``receiver`` deliver :class:`EncodedVideoFrame` s instead of decoded frames
    (call it from the peer connection's "track" event, before media flows); False when aiortc's
    layout differs (then it keeps decoding)."""
    track = getattr(receiver, "track", None)
    if not isinstance(getattr(receiver, _DECODER_QUEUE, None), queue.Queue) or \
            not isinstance(getattr(track, "_queue", None), asyncio.Queue):
        log.warning("aiortc's receiver has no %s: the client decodes the video", _DECODER_QUEUE)
        return False
    setattr(receiver, _DECODER_QUEUE, _CountingQueue(track._queue))
    return True


@dataclass
class Recording:
    """What came back. video: [(pts_90k, arrival monotonic s, rgb (H,W,3) uint8 or None)]."""

    session: str = ""
    delay_ms: float = 0.0
    video: list[tuple[int, float, Any]] = field(default_factory=list)
    audio: list[tuple[int, float, np.ndarray]] = field(default_factory=list)   # pts_48k, t, x
    stats: list[dict] = field(default_factory=list)
    t_connected: float = 0.0
    sent_t0: float | None = None               # monotonic time the first audio packet was sent

    def video_fps(self, skip_s: float = 1.0) -> float:
        """Mean received frame rate by arrival time, after the first ``skip_s`` seconds."""
        t = [a for _, a, _ in self.video]
        t = [x for x in t if x - t[0] >= skip_s] if t else []
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 else 0.0

    def audio_array(self) -> np.ndarray:
        """The received audio as float32 mono 48 kHz, each frame at its pts (gaps silent)."""
        if not self.audio:
            return np.zeros(0, np.float32)
        end = max(p + len(x) for p, _, x in self.audio)
        out = np.zeros(end, np.float32)
        for p, _, x in self.audio:
            out[p:p + len(x)] = x
        return out


def read_audio_48k(path: str) -> np.ndarray:
    """Any audio file PyAV reads -> float32 mono 48 kHz (AudioError if unreadable)."""
    try:
        with av.open(path) as c:
            rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            chunks = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
            chunks += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    except (av.FFmpegError, IndexError, OSError) as e:
        raise AudioError(f"cannot read audio {path!r}: {e}") from None
    if not chunks:
        raise AudioError(f"{path!r} holds no audio")
    return np.concatenate(chunks).astype(np.float32)


class FileAudioTrack(MediaStreamTrack):
    """Plays ``samples`` (float32 mono 48 kHz) in real time, then silence.

    ``pre_encoded``: the samples are Opus-encoded once, here, and the track hands aiortc the
    encoded packets (it sends a track's ``av.Packet`` s as they are): a benchmark's clients then
    spend no CPU on encoding while the sessions run (a real sender encodes on its own machine).
    The packets are what aiortc's own Opus encoder makes of the same frames."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, pre_encoded: bool = False) -> None:
        super().__init__()
        self.samples = np.asarray(samples, np.float32)
        self._n = 0
        self.t0: float | None = None
        self._packets: list[bytes] | None = None
        if pre_encoded:
            self._packets = opus_packets([self._frame(n) for n in range(-(-len(self.samples) // PACKET) + 3)])

    def _chunk(self, n: int) -> np.ndarray:
        x = self.samples[n * PACKET:(n + 1) * PACKET]
        return np.pad(x, (0, PACKET - len(x)))

    def _frame(self, n: int) -> av.AudioFrame:
        """Packet ``n`` of the stream as a 20 ms s16 mono frame with its pts (48 kHz)."""
        x = self._chunk(n)
        frame = av.AudioFrame.from_ndarray((np.clip(x, -1, 1) * 32767).astype(np.int16)[None],
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, n * PACKET
        frame.time_base = fractions.Fraction(1, RATE)
        return frame

    def _packet_index(self, n: int) -> int:
        """Which pre-encoded packet plays as packet ``n``: past the end, the last (silence)."""
        return min(n, len(self._packets) - 1)

    def _packet(self, n: int) -> av.Packet:
        """Packet ``n`` of the stream, pre-encoded, with its pts."""
        packet = av.Packet(self._packets[self._packet_index(n)])
        packet.pts, packet.time_base = n * PACKET, fractions.Fraction(1, RATE)
        return packet

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        wait = self.t0 + self._n * PACKET / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        out = self._packet(self._n) if self._packets is not None else self._frame(self._n)
        self._n += 1
        return out


def opus_packets(frames: list[av.AudioFrame]) -> list[bytes]:
    """One Opus packet (bytes) per 20 ms frame, from aiortc's own encoder (same settings)."""
    from aiortc.codecs.opus import OpusEncoder
    enc, out = OpusEncoder(), []
    for f in frames:
        payloads, _ = enc.encode(f)
        out += payloads
    return out


class MicAudioTrack(FileAudioTrack):
    """The default input device through sounddevice (``pip install 'emote[mic]'`` and Debian's
    libportaudio2). A machine without one gets an EmoteError saying so."""

    def __init__(self) -> None:
        super().__init__(np.zeros(0, np.float32))
        try:
            import sounddevice as sd
            sd.check_input_settings(samplerate=RATE, channels=1, dtype="float32")
        except (ImportError, OSError) as e:
            raise EmoteError(f"no microphone: sounddevice/PortAudio unavailable ({e}); install "
                             "libportaudio2 and 'emote[mic]', or use --audio FILE") from None
        except Exception as e:  # noqa: BLE001 - PortAudioError, ValueError: no usable device
            raise EmoteError(f"no usable microphone: {e}; use --audio FILE instead") from None
        self._q: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)
        loop = asyncio.get_event_loop()

        def callback(indata, frames, t, status) -> None:  # sounddevice's thread
            loop.call_soon_threadsafe(self._put, indata[:, 0].copy())

        self._stream = sd.InputStream(samplerate=RATE, channels=1, dtype="float32",
                                      blocksize=PACKET, callback=callback)
        self._stream.start()

    def _put(self, x: np.ndarray) -> None:
        if self._q.full():
            self._q.get_nowait()               # drop oldest: the mic never waits for us
        self._q.put_nowait(x)

    def _chunk(self, n: int) -> np.ndarray:
        try:
            x = self._q.get_nowait()
        except asyncio.QueueEmpty:
            return np.zeros(PACKET, np.float32)
        return np.pad(x[:PACKET], (0, PACKET - len(x[:PACKET])))

    def stop(self) -> None:
        self._stream.close()
        super().stop()


def codec_preferences(name: str) -> list:
    """aiortc's video codec capabilities for ``name`` ("VP8" or "H264") and their RTX entries."""
    codecs = RTCRtpReceiver.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType.lower() == f"video/{name.lower()}"] + \
        [c for c in codecs if c.mimeType.lower() == "video/rtx"]


async def _gathered_offer(pc: RTCPeerConnection) -> RTCSessionDescription:
    await pc.setLocalDescription(await pc.createOffer())   # aiortc gathers before returning
    return pc.localDescription


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame -> RGB (H, W, 3) uint8; OpenCV for yuv420p (10x faster than swscale)."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


async def _consume(track, rec: Recording, keep_frames: bool, deadline: float) -> None:
    to_mono = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), timeout=max(0.01, deadline - time.monotonic()))
        except (MediaStreamError, asyncio.TimeoutError):
            return
        now = time.monotonic()
        if track.kind == "video":
            rgb = _rgb(frame) if keep_frames else None
            rec.video.append((int(frame.pts), now, rgb))
        else:
            pts = int(frame.pts)
            for f in to_mono.resample(frame):
                x = f.to_ndarray().reshape(-1).astype(np.float32)
                rec.audio.append((pts, now, x))
                pts += len(x)


async def _signal(http: aiohttp.ClientSession, s: ClientSettings, offer: RTCSessionDescription,
                  headers: dict) -> dict:
    body = {"sdp": offer.sdp, "type": offer.type}
    if s.portrait:
        body["portrait"] = s.portrait
    if s.overlay:
        body["overlay"] = True
    async with http.post(s.url.rstrip("/") + "/offer", json=body, headers=headers) as r:
        if r.status != 200:
            raise ServerRefused(r.status, await r.text())
        return await r.json()


async def _control(http: aiohttp.ClientSession, s: ClientSettings, rec: Recording,
                   headers: dict, ready: asyncio.Event) -> None:
    url = s.url.rstrip("/").replace("http", "ws", 1) + f"/ws?session={rec.session}"
    async with http.ws_connect(url, headers=headers, heartbeat=2.0) as ws:
        ready.set()
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                rec.stats.append(json.loads(msg.data))


async def run_client(settings: ClientSettings, source: MediaStreamTrack) -> Recording:
    """Connect, send ``source``, record for ``settings.seconds``, disconnect."""
    restrict_ice_addresses(settings.ice_addresses)
    rec = Recording()
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    pc = RTCPeerConnection(RTCConfiguration(
        iceServers=[RTCIceServer(urls=u) for u in settings.ice_servers]))
    tasks: list[asyncio.Task] = []
    deadline = [float("inf")]

    @pc.on("track")
    def _on_track(track) -> None:
        for t in pc.getTransceivers():
            if t.receiver.track is track:
                install_jitter_buffer(t.receiver, track.kind)
                if track.kind == "video" and not settings.decode_video:
                    count_without_decoding(t.receiver)
        tasks.append(asyncio.create_task(_consume(track, rec, settings.keep_frames,
                                                  deadline[0])))

    pc.addTrack(source)
    video = pc.addTransceiver("video", direction="recvonly")
    if settings.video_codec:
        video.setCodecPreferences(codec_preferences(settings.video_codec))
    try:
        async with aiohttp.ClientSession() as http:
            answer = await _signal(http, settings, await _gathered_offer(pc), headers)
            rec.session, rec.delay_ms = answer["session"], float(answer.get("delay_ms", 0))
            deadline[0] = time.monotonic() + settings.seconds + 1.0
            sdp = filter_sdp_candidates(answer["sdp"], settings.ice_addresses)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            rec.t_connected = time.monotonic()
            ready = asyncio.Event()
            if settings.control_channel:
                tasks.append(asyncio.create_task(_control(http, settings, rec, headers, ready)))
            await asyncio.sleep(settings.seconds)
            rec.sent_t0 = getattr(source, "t0", None)
    finally:
        await hang_up(pc, source, tasks)
    return rec


async def hang_up(pc: RTCPeerConnection, source: MediaStreamTrack, tasks: list[asyncio.Task]) -> None:
    """Cancel the peer's tasks, stop its source track and close the connection."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    source.stop()
    await pc.close()


def write_mp4(rec: Recording, path: str, fps: int = 25) -> None:
    """H.264 + AAC on the common pts clock (video pts / 90000 s, audio pts / 48000 s)."""
    frames = [(p, rgb) for p, _, rgb in rec.video if rgb is not None]
    if not frames:
        raise EmoteError("nothing to write: no video frame was received")
    h, w = frames[0][1].shape[:2]
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        vs.codec_context.time_base = fractions.Fraction(1, fps)
        aus = out.add_stream("aac", rate=RATE)
        aus.layout = "mono"
        last = -1
        for p, rgb in frames:
            k = int(round(p * fps / 90000))
            if k <= last:
                continue
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:vs.height, :vs.width]), format="rgb24")
            vf.pts, last = k, k
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        audio = rec.audio_array()
        rs = av.AudioResampler(format="fltp", layout="mono", rate=RATE, frame_size=1024)
        af = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        af.sample_rate, af.pts = RATE, 0
        for f in rs.resample(af) + rs.resample(None):
            out.mux(aus.encode(f))
        out.mux(aus.encode(None))


def run_cli(url: str, audio: str | None, mic: bool, out: str | None, token: str | None,
            portrait: str | None, seconds: float | None, ice_addresses: tuple[str, ...]) -> int:
    """What ``emote client`` does; returns the exit code. EmoteError propagates to the CLI."""
    if bool(audio) == bool(mic):
        raise ConfigError("give exactly one of --audio FILE or --mic")

    async def go() -> Recording:
        source = MicAudioTrack() if mic else FileAudioTrack(read_audio_48k(audio))
        dur = seconds or (len(source.samples) / RATE + 1.5 if not mic else 30.0)
        cfg = ClientSettings(url, token, portrait, dur, ice_addresses, keep_frames=bool(out))
        return await run_client(cfg, source)

    try:
        rec = asyncio.run(go())
    except aiohttp.ClientError as e:
        raise EmoteError(f"cannot reach the server at {url}: {e}") from None
    print(f"session {rec.session}: {len(rec.video)} frames ({rec.video_fps():.1f} fps), "
          f"{len(rec.audio_array()) / RATE:.1f} s of audio, server delay {rec.delay_ms:.0f} ms")
    if out:
        write_mp4(rec, out)
        print(f"wrote {out}")
    return 0
