"""streaming.tracks / worker / session without a network: pacing, holding, delay, resampling."""
from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from hypothesis import given, settings, strategies as st
import pytest

from emote.streaming.encoding import to_i420
from emote.streaming.metrics import StreamingMetrics
from emote.streaming.ringbuffer import AudioRingBuffer, WindowSlicer, WindowSpec
from emote.streaming.session import Session, SessionOptions
from emote.streaming.tracks import (AudioInput, DelayedAudioTrack, FrameBuffer, MediaClock,
                                    PortraitVideoTrack, ReadyFrame)
from emote.streaming.worker import EngineWorker
from streaming_fakes import FakePipeline, mouth_opening


def _frame(i: int) -> np.ndarray:
    """An I420 frame whose decoded gray level is 10 * i."""
    return to_i420(np.full((16, 16, 3), 10 * i, np.uint8))


async def _collect(track, n: int) -> list[tuple[float, object]]:
    out = []
    for _ in range(n):
        f = await asyncio.wait_for(track.recv(), 1.0)
        out.append((time.monotonic(), f))
    return out


def test_video_track_is_steady_and_holds_when_the_engine_is_late():
    async def go():
        clock = MediaClock(delay_s=0.05)
        buf = FrameBuffer()
        sent = []
        track = PortraitVideoTrack(clock, buf, fps=25, on_sent=lambda f, n, held: sent.append((f.index, n, held)))
        clock.start(time.monotonic())
        for i in range(5):                                  # frames 0-4 ready, then a gap
            buf.put(ReadyFrame(i, _frame(i), time.monotonic(), 0.0))

        async def late_frames():
            await asyncio.sleep(0.5)
            for i in range(12, 20):
                buf.put(ReadyFrame(i, _frame(i), time.monotonic(), 0.0))
        asyncio.get_running_loop().create_task(late_frames())
        got = await _collect(track, 20)
        track.stop()
        return got, sent
    got, sent = asyncio.run(go())
    pts = [f.pts for _, f in got]
    assert pts == [n * 3600 for n in range(20)]
    assert all(f.time_base == fractions.Fraction(1, 90000) for _, f in got)
    gaps = np.diff([t for t, _ in got])
    assert gaps.max() < 0.04 + 0.02 and abs(np.mean(gaps) - 0.04) < 0.004   # steady 25 fps
    shown = [int(round(f.to_ndarray(format="rgb24")[0, 0, 0] / 10)) for _, f in got]
    assert shown[:5] == [0, 1, 2, 3, 4]
    assert all(v == 4 for v in shown[5:12])                 # held while the engine was late
    assert shown[12:] == list(range(12, 20))
    assert [h for _, _, h in sent].count(True) == 7


def test_audio_track_returns_the_input_delayed_by_exactly_the_delay():
    async def go():
        clock = MediaClock(delay_s=0.1)
        ring = AudioRingBuffer(48000)
        x = np.sin(np.arange(48000 // 2) * 0.05).astype(np.float32) * 0.5
        ring.push(x)
        track = DelayedAudioTrack(clock, ring)
        t0 = time.monotonic()
        clock.start(t0)
        got = await _collect(track, 30)                     # 30 packets: 0.6 s, more than written
        track.stop()
        return t0, got, x
    t0, got, x = asyncio.run(go())
    assert [f.pts for _, f in got] == [m * 960 for m in range(30)]
    send_t = np.array([t for t, _ in got]) - t0
    assert np.all(send_t >= 0.1 + np.arange(30) * 0.02 - 0.002)
    assert np.all(send_t <= 0.1 + np.arange(30) * 0.02 + 0.03)
    y = np.concatenate([f.to_ndarray().reshape(-1) for _, f in got]) / 32767.0
    np.testing.assert_allclose(y[:len(x)], x, atol=2e-4)
    assert np.all(y[len(x):] == 0)                          # not arrived yet: silence


def test_audio_input_resamples_48k_stereo_s16_to_16k_mono_aligned():
    inp = AudioInput(16000)
    n = 48000
    click = np.zeros(n, np.float32)
    click[24000] = 1.0                                     # at 0.5 s
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000).astype(np.float32)
    sig = np.stack([tone + click * 0.5, tone + click * 0.5], axis=1)
    s16 = (sig * 32767).astype(np.int16).reshape(1, -1)
    x48, x16 = [], []
    for k in range(0, n, 960):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(s16[:, 2 * k:2 * (k + 960)]), format="s16", layout="stereo")
        f.sample_rate, f.pts, f.time_base = 48000, k, fractions.Fraction(1, 48000)
        a = inp.convert(f)
        x48.append(a)
        x16.append(inp.to_engine(a))
    x48, x16 = np.concatenate(x48), np.concatenate(x16)
    assert x48.dtype == np.float32 and x16.dtype == np.float32
    assert abs(len(x48) - n) <= 32 and len(x16) == len(x48) // 3 - inp.engine_hold_samples
    spec = np.abs(np.fft.rfft(x16[:12000]))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 3  # same tone, now at 16 kHz
    resid = x16[:15000] - 0.3 * np.sin(2 * np.pi * 440 * np.arange(15000) / 16000)
    assert abs(int(np.argmax(np.abs(resid))) - 8000) <= 2  # click still at 0.5 s: no delay


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40))
def test_engine_rate_samples_are_exact_in_count_for_any_chunking(sizes):
    """Once the resampler has started (its first output: at once for a 20 ms packet), after n
    samples in at 48 kHz exactly n // 3 - hold are out at 16 kHz, whatever the chunk sizes; before,
    never more. So a 20 ms packet always completes the same 320 samples, and a window that ends
    on a packet boundary is complete the moment that packet arrives."""
    inp = AudioInput(16000)
    assert 0 <= inp.engine_hold_samples <= 32
    fed = out = 0
    for n in sizes:
        out += len(inp.to_engine(np.full(n, 0.1, np.float32)))
        fed += n
        exact = max(0, fed // 3 - inp.engine_hold_samples)
        assert out == exact if out else out <= exact, (fed, out)
    first = AudioInput(16000)
    assert len(first.to_engine(np.zeros(960, np.float32))) == 320 - first.engine_hold_samples


def test_worker_carries_exceptions_back_and_stops_on_the_end_marker():
    class Boom(FakePipeline):
        def push(self, samples):
            raise RuntimeError("engine exploded")

    async def go():
        loop = asyncio.get_running_loop()
        errors, frames = [], []
        w = EngineWorker(Boom())
        w.start(loop, frames.append, errors.append, name="t")
        (win,) = WindowSlicer(WindowSpec(lookahead_frames=0)).push(np.zeros(640, np.float32))
        w.submit(win, time.monotonic())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if errors:
                break
        ok = WindowSlicer(WindowSpec(lookahead_frames=2))
        w2 = EngineWorker(FakePipeline(), queue_windows=25)
        w2.start(loop, frames.append, errors.append, name="u")
        for win in ok.push(np.zeros(640 * 10, np.float32)):
            w2.submit(win, time.monotonic())
        w2.stop()
        assert w.join(2.0) and w2.join(2.0)
        await asyncio.sleep(0.05)
        return errors, frames
    errors, frames = asyncio.run(go())
    assert len(errors) == 1 and "exploded" in str(errors[0])
    assert [i for b in frames for i, _ in b.frames] == list(range(8))


def _session(pipe, **opts) -> Session:
    return Session(EngineWorker(pipe), "fake", SessionOptions(**opts), StreamingMetrics(), lambda s: None)


def test_session_idles_on_silence_and_follows_speech_without_a_peer():
    async def go():
        s = _session(FakePipeline(), start_grace_s=0.1)
        s.connected_at = time.monotonic()                   # as if the peer had connected
        s._spawn(s._watchdog(), "watchdog")                # no audio at all: silence is pushed
        idle = await _collect(s.video, 25)
        # now "speech": loud audio pushed as if it had arrived
        burst = (0.5 * np.sin(np.arange(48000) * 0.1)).astype(np.float32)
        async def feed():                                   # as if it arrived in real time
            for k in range(0, len(burst), 960):
                s._on_audio(burst[k:k + 960], time.monotonic())
                await asyncio.sleep(0.02)
        feeder = asyncio.get_running_loop().create_task(feed())
        talk = await _collect(s.video, 25)
        await feeder
        stats = s.stats()
        await s.close("test over")
        return idle, talk, stats
    idle, talk, stats = asyncio.run(go())
    gaps = np.diff([t for t, _ in idle + talk])
    assert gaps.max() < 0.1, "the video stalled"
    assert max(mouth_opening(f.to_ndarray(format="rgb24")) for _, f in idle) == 0.0
    assert max(mouth_opening(f.to_ndarray(format="rgb24")) for _, f in talk) > 0.5
    assert stats["padded_s"] > 0.5 and stats["frames_sent"] == 50


def test_session_video_never_stalls_when_the_engine_is_slower_than_real_time():
    async def go():
        s = _session(FakePipeline(render_ms=55.0), start_grace_s=0.05)   # 55 ms per 40 ms frame
        s.connected_at = time.monotonic()
        s._spawn(s._watchdog(), "watchdog")
        got = await _collect(s.video, 50)
        stats = s.stats()
        await s.close("test over")
        return got, stats
    got, stats = asyncio.run(go())
    gaps = np.diff([t for t, _ in got[1:]])
    assert gaps.max() < 0.1 and stats["frames_held"] > 5
    pts = [f.pts for _, f in got]
    assert pts == sorted(set(pts))                         # monotonic, slots skipped not repeated


@pytest.mark.parametrize("bad", [dict(hop_frames=0)])
def test_session_rejects_bad_timing(bad):
    with pytest.raises(Exception):
        asyncio.run(_async_session(bad))


async def _async_session(opts):
    return _session(FakePipeline(), **opts)
