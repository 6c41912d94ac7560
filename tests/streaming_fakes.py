"""A stand-in for engine.pipeline in streaming tests: same push/pull API, trivial picture.

The frame is gray with a dark "mouth" bar whose height follows the RMS of the frame's own
audio, so tests can read the mouth opening back from received pixels (mean darkness of the
mouth box) without a face landmarker. Made with ``alpha=True`` (an overlay session), each frame
also carries a matte like engine.pipeline.Frame's: a centred disc of 255 on 0 (``disc_alpha``).
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
    alpha: np.ndarray | None = None


def disc_alpha(size_px: int) -> np.ndarray:
    """(S, S) uint8: 255 inside a centred disc of radius 0.35 S, 0 outside."""
    yy, xx = np.mgrid[:size_px, :size_px] + 0.5
    r = np.hypot(xx - size_px / 2, yy - size_px / 2)
    return np.where(r < 0.35 * size_px, 255, 0).astype(np.uint8)


class FakePipeline:
    """push(float32 16 kHz any size) / pull() -> frames; lookahead ``latency_frames``."""

    def __init__(self, size_px: int = 128, latency_frames: int = 2, shade: int = 180,
                 render_ms: float = 0.0, alpha: bool = False) -> None:
        self.size, self.latency_frames, self.shade = size_px, latency_frames, shade
        self.alpha = disc_alpha(size_px) if alpha else None
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
        return FakeFrame(i, rgb, motion, None if self.alpha is None else self.alpha.copy())

    def pull(self) -> list[FakeFrame]:
        return list(self.iter_pull())

    def iter_pull(self):
        """As pull(), one frame at a time (as engine.pipeline's: each made when asked for)."""
        ready = len(self._audio) // SPF - self.latency_frames
        if self._finished:
            ready = -(-len(self._audio) // SPF)
        while self._next < ready:
            frame = self._frame(self._next)
            self._next += 1
            yield frame

    def finish(self) -> list[FakeFrame]:
        self._finished = True
        return self.pull()


def mouth_opening(rgb: np.ndarray) -> float:
    """Fraction of the mouth box that is dark, 0 (closed) .. ~1 (wide open)."""
    s = rgb.shape[0]
    box = rgb[int(s * 0.5):int(s * 0.8), s // 4 + 4:3 * s // 4 - 4].astype(np.float32).mean(axis=2)
    return float((box < 90).mean())


# -- servers and speech for the streaming tests ------------------------------------------------
LOOPBACK = ("127.0.0.1",)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_factory(path: str, alpha: bool = False) -> FakePipeline:
    return FakePipeline(shade=180 if path == "a.jpg" else 90, alpha=alpha)


async def start_server(factory=fake_factory, **settings):
    """In-process server on a free loopback port; returns (runner, base URL, server state).

    ``factory=None``: the real engine (emote.engine.pipeline.load_pipeline)."""
    from aiohttp import web
    from emote.streaming.server import STATE, ServerSettings, make_app
    settings.setdefault("portraits", (("a", "a.jpg"), ("b", "b.jpg")))
    s = ServerSettings(host="127.0.0.1", port=free_port(), ice_addresses=LOOPBACK, **settings)
    app = make_app(s, factory)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, s.host, s.port).start()
    return runner, f"http://{s.host}:{s.port}", app[STATE]


def speech_with_pauses(path: str, texts=("Hello there, this is a live portrait test.",
                                         "And now it speaks again, after a pause."),
                       pause_s: float = 1.5, lead_s: float = 0.5) -> np.ndarray:
    """espeak-ng utterances separated by silences -> float32 mono 48 kHz, also written as WAV.

    Returns the samples; ``path`` gets a 48 kHz s16 WAV of the same."""
    import subprocess
    import tempfile
    import wave
    from emote.clients.client import read_audio_48k
    parts = [np.zeros(int(lead_s * 48000), np.float32)]
    with tempfile.TemporaryDirectory() as d:
        for i, t in enumerate(texts):
            p = f"{d}/{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", p, t], check=True)
            parts += [read_audio_48k(p) * 0.8, np.zeros(int(pause_s * 48000), np.float32)]
    x = np.concatenate(parts)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return x


def envelope(x: np.ndarray, rate: int, hop_s: float = 0.01) -> np.ndarray:
    """RMS per ``hop_s`` window."""
    h = int(rate * hop_s)
    n = len(x) // h
    return np.sqrt(np.mean(x[:n * h].reshape(n, h) ** 2, axis=1))


def best_lag_s(a: np.ndarray, b: np.ndarray, hop_s: float, max_lag_s: float) -> float:
    """Lag L (s) maximising corr(a[t], b[t + L]): b lags a by L."""
    a = (a - a.mean()) / (a.std() + 1e-9)
    b = (b - b.mean()) / (b.std() + 1e-9)
    n = min(len(a), len(b))
    best, arg = -np.inf, 0
    m = int(max_lag_s / hop_s)
    for k in range(-m, m + 1):
        if k >= 0:
            c = float(np.mean(a[:n - k] * b[k:n]))
        else:
            c = float(np.mean(a[-k:n] * b[:n + k]))
        if c > best:
            best, arg = c, k
    return arg * hop_s


def mouth_track(rec, opening) -> tuple[np.ndarray, np.ndarray]:
    """(times s from pts, mouth opening) of the received video."""
    t = np.array([p / 90000 for p, _, _ in rec.video])
    m = np.array([opening(f) for _, _, f in rec.video])
    return t, m
