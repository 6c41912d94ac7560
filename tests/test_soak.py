"""benchmarks/soak.py: the parts that decide its numbers (the run itself is a benchmark, not a test)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from emote.benchmarks.soak import ClientLog, LoopingAudioTrack, summarize, tree_rss_mb


def test_looping_track_wraps_around_without_a_gap():
    x = np.arange(2500, dtype=np.float32) / 2500
    track = LoopingAudioTrack(x)
    chunks = [track._chunk(n) for n in range(6)]        # 6 x 960 = 5760 samples: wraps twice
    assert all(len(c) == 960 for c in chunks)
    got = np.concatenate(chunks)
    np.testing.assert_array_equal(got, np.resize(x, len(got)))


def test_looping_track_delivers_frames_in_real_time_order():
    async def run():
        track = LoopingAudioTrack(np.ones(4800, np.float32) * 0.5)
        frames = [await track.recv() for _ in range(3)]
        track.stop()
        return frames
    frames = asyncio.run(run())
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert frames[0].sample_rate == 48000


def test_tree_rss_counts_children():
    own = tree_rss_mb(os.getpid())
    assert own > 10
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 * 2**20); "
                              "x[::4096] = b'1' * len(x[::4096]); time.sleep(30)"])
    try:
        for _ in range(100):                              # wait until the child touched its pages
            if tree_rss_mb(os.getpid()) > own + 150:
                break
            subprocess.run(["sleep", "0.1"])
        assert tree_rss_mb(os.getpid()) > own + 150
    finally:
        child.kill()
        child.wait()
    assert tree_rss_mb(2**22 + 12345) == 0.0             # no such process: nothing, no error


def _log(fps: list[float], video_ms: list[float], audio_ms: list[float], held: int) -> ClientLog:
    lg = ClientLog()
    for i, (f, v, a) in enumerate(zip(fps, video_ms, audio_ms)):
        lg.rows.append({"t_s": 10.0 * (i + 1), "fps": f, "video_offset_ms": v, "audio_offset_ms": a,
                        "frames_sent": 250 * (i + 1), "frames_held": held, "dropped_windows": 0, "padded_s": 0})
    return lg


def test_summary_measures_drift_growth_and_rates_after_warmup():
    # video slides 30 ms late against audio over the run; the first (warm-up) row is ignored
    a = _log([10.0, 25.0, 25.0, 24.8], [900.0, 100.0, 110.0, 130.0], [0.0, 50.0, 50.0, 50.0], held=3)
    b = _log([12.0, 25.0, 25.2, 25.0], [0.0, 80.0, 80.0, 80.0], [0.0, 20.0, 20.0, 20.0], held=1)
    rss = [{"t_s": 10.0, "rss_mb": 100.0}, {"t_s": 20.0, "rss_mb": 500.0}, {"t_s": 30.0, "rss_mb": 505.0},
           {"t_s": 40.0, "rss_mb": 510.0}]
    res = summarize([a, b], rss, warmup_s=10.0, sample_s=10.0)
    assert res["av_drift_ms_max_abs"] == pytest.approx(30.0)
    assert res["clients"][1]["av_drift_ms"] == pytest.approx(0.0)
    assert res["memory_growth_pct"] == pytest.approx(2.0)
    assert res["fps_min"] == pytest.approx(np.mean([25.0, 25.0, 24.8]), abs=0.01)
    assert res["fps_min_interval"] == 24.8
    assert res["frames_held"] == 4 and res["frames_sent"] == 2000


def test_client_log_interval_resets_counters():
    lg = ClientLog()
    lg.frames, lg.video_offsets, lg.audio_offsets = 50, [0.1, 0.3, 0.2], [0.05]
    row = lg.close_interval(2.0, 2.0)
    assert row["fps"] == 25.0 and row["video_offset_ms"] == 200.0 and row["audio_offset_ms"] == 50.0
    assert lg.frames == 0 and lg.video_offsets == [] and lg.rows == [row]


def test_pre_encoded_looping_track_replays_one_loop_of_packets_with_running_pts():
    x = (0.3 * np.sin(np.arange(2500) * 0.05)).astype(np.float32)
    track = LoopingAudioTrack(x, pre_encoded=True)
    assert len(track._packets) == 3                        # 2500 samples: 3 packets, the last padded

    async def run():
        out = [await track.recv() for _ in range(7)]
        track.stop()
        return out
    packets = asyncio.run(run())
    assert [p.pts for p in packets] == [960 * n for n in range(7)]
    assert [bytes(p) for p in packets[3:6]] == [bytes(p) for p in packets[:3]]
