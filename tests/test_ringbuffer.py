"""streaming.ringbuffer: windows depend on the samples only, never on how they were chunked."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from emote.engine.exceptions import ConfigError
from emote.streaming.ringbuffer import AudioRingBuffer, WindowSlicer, WindowSpec

SPEC = WindowSpec(sample_rate_hz=1600, fps=25, hop_frames=5, context_frames=3, lookahead_frames=2)  # spf 64


def _stream(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _slice(x: np.ndarray, cuts: list[int], spec: WindowSpec = SPEC, finish: bool = True):
    sl = WindowSlicer(spec)
    out, pos = [], 0
    for c in cuts:
        out += sl.push(x[pos:pos + c])
        pos += c
    out += sl.push(x[pos:])
    return out + (sl.finish() if finish else [])


def _reference(x: np.ndarray, spec: WindowSpec, finish: bool) -> list[tuple[int, int, np.ndarray]]:
    """Windows computed directly from the whole array."""
    spf, out, k = spec.samples_per_frame, [], 0
    padded = np.concatenate([np.zeros(spec.context_frames * spf, np.float32), x,
                             np.zeros(spec.window_samples, np.float32)])
    while True:
        first = k * spec.hop_frames
        start = (first - spec.context_frames) * spf
        stop = start + spec.window_samples
        if stop > len(x) and not (finish and first * spf < len(x)):
            break
        off = start + spec.context_frames * spf
        out.append((first, start, padded[off:off + spec.window_samples]))
        k += 1
    return out


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3000), cuts=st.lists(st.integers(0, 700), max_size=30), finish=st.booleans())
def test_any_push_sizes_give_the_same_windows(n, cuts, finish):
    x = _stream(n)
    got = _slice(x, cuts, finish=finish)
    assert got == _slice(x, [], finish=finish)          # one big push
    ref = _reference(x, SPEC, finish)
    assert [(w.first_frame, w.start_sample) for w in got] == [(f, s) for f, s, _ in ref]
    for w, (_, _, samples) in zip(got, ref):
        np.testing.assert_array_equal(w.samples, samples)
        assert w.samples.dtype == np.float32 and len(w.samples) == SPEC.window_samples


@settings(max_examples=100, deadline=None)
@given(hop=st.integers(1, 6), ctx=st.integers(0, 4), la=st.integers(0, 4), extra=st.integers(0, 63),
       cuts=st.lists(st.integers(1, 500), min_size=1, max_size=20))
def test_fresh_samples_concatenate_to_the_stream(hop, ctx, la, extra, cuts):
    spec = WindowSpec(1600, 25, hop, ctx, la, extra)
    x = _stream(sum(cuts), seed=1)
    wins = _slice(x, cuts[:-1], spec, finish=False)
    fresh = np.concatenate([w.fresh_samples for w in wins] or [np.zeros(0, np.float32)])
    assert len(fresh) == (wins[-1].end_sample if wins else 0)
    np.testing.assert_array_equal(fresh, x[:len(fresh)])
    for w in wins:
        assert w.end_sample <= len(x)
        assert w.t_start_s == pytest.approx(w.first_frame / 25)


def test_window_is_ready_exactly_when_its_lookahead_arrives():
    spec = WindowSpec()                                   # 16 kHz, hop 1, ctx 3, lookahead 2
    sl = WindowSlicer(spec)
    assert sl.push(np.zeros(3 * 640 - 1, np.float32)) == []
    (w,) = sl.push(np.zeros(1, np.float32))
    assert (w.index, w.first_frame, w.start_sample, w.end_sample) == (0, 0, -3 * 640, 3 * 640)
    assert len(w.samples) == 6 * 640


def test_sample_granular_lookahead_for_a_pipeline_latency():
    """The baseline pipeline needs 2 frames + 120 samples beyond a frame: its window is ready then,
    not a whole frame later."""
    spec = WindowSpec.for_latency(2 * 640 + 120)
    assert (spec.lookahead_frames, spec.lookahead_extra_samples, spec.lookahead_samples) == (2, 120, 1400)
    sl = WindowSlicer(spec)
    assert sl.push(np.zeros(640 + 1400 - 1, np.float32)) == []
    (w,) = sl.push(np.zeros(1, np.float32))
    assert (w.first_frame, w.end_sample, len(w.fresh_samples)) == (0, 640 + 1400, 640 + 1400)
    (w1,) = sl.push(np.zeros(640, np.float32))
    assert (w1.first_frame, w1.end_sample, len(w1.fresh_samples)) == (1, 2 * 640 + 1400, 640)
    with pytest.raises(ConfigError):
        WindowSpec(lookahead_extra_samples=640)


@settings(max_examples=60, deadline=None)
@given(hop=st.integers(1, 3), la=st.integers(0, 4), extra=st.integers(0, 639),
       packet=st.sampled_from([160, 320, 640]), n_packets=st.integers(1, 40))
def test_packet_phase_puts_every_window_end_on_a_packet_end(hop, la, extra, packet, n_packets):
    """With the phase's silence first, every window is complete exactly when a whole packet has
    arrived: its end is the stream's length after that packet, never inside a packet."""
    spec = WindowSpec(hop_frames=hop, lookahead_frames=la, lookahead_extra_samples=extra)
    phase = spec.packet_phase_samples(packet)
    assert 0 <= phase < packet
    sl = WindowSlicer(spec)
    sl.push(np.zeros(phase, np.float32))
    ends = []
    for _ in range(n_packets):
        ends += [(w.end_sample, sl.samples_pushed) for w in sl.push(np.ones(packet, np.float32))]
    assert all(end == pushed for end, pushed in ends), ends[:4]
    assert ends or (hop + la) * 640 + extra > phase + n_packets * packet


def test_packet_phase_of_the_backbone_window():
    """The backbone's window ends 40 + 127.5 ms after its frame starts: 7.5 ms into a 20 ms
    packet, so without the phase every window waits 12.5 ms for the rest of its packet."""
    spec = WindowSpec.for_latency(3 * 640 + 120)
    assert spec.packet_phase_samples(320) == 120
    assert spec.packet_phase_samples(0) == 0
    assert WindowSpec.for_latency(2 * 640).packet_phase_samples(320) == 0


def test_ring_buffer_drops_oldest_and_says_so():
    rb = AudioRingBuffer(100)
    rb.push(np.arange(60, dtype=np.float32))
    rb.push(np.arange(60, 130, dtype=np.float32))
    assert rb.written == 130 and rb.oldest == 30 and rb.dropped_samples == 30
    np.testing.assert_array_equal(rb.read(30, 130), np.arange(30, 130, dtype=np.float32))
    np.testing.assert_array_equal(rb.read(-2, 0), np.zeros(2, np.float32))
    with pytest.raises(IndexError):
        rb.read(10, 40)
    with pytest.raises(IndexError):
        rb.read(120, 140)
    rb.push(np.arange(1000, dtype=np.float32))            # larger than the ring: keeps the newest
    assert rb.written == 1130
    np.testing.assert_array_equal(rb.read(1030, 1130), np.arange(900, 1000, dtype=np.float32))


def test_slicer_skips_windows_whose_audio_was_overwritten():
    spec = WindowSpec(1600, 25, 1, 0, 0)
    sl = WindowSlicer(spec, capacity_s=0.0)               # the ring holds 2 windows: 128 samples
    wins = sl.push(_stream(64 * 10))
    assert sl.skipped_windows == 8 and [w.first_frame for w in wins] == [8, 9]
    assert [w.first_frame for w in sl.push(_stream(64))] == [10]


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError):
        WindowSpec(sample_rate_hz=16000, fps=24)
    with pytest.raises(ConfigError):
        WindowSpec(hop_frames=0)
    with pytest.raises(ConfigError):
        WindowSpec(lookahead_frames=-1)
    with pytest.raises(ConfigError):
        AudioRingBuffer(0)


def test_ring_read_across_the_wrap_and_before_the_start():
    rb = AudioRingBuffer(10)
    stream = np.arange(1, 24, dtype=np.float32)
    for part in np.split(stream, [3, 10, 17]):             # 23 samples through a 10-sample ring
        rb.push(part)
    np.testing.assert_array_equal(rb.read(13, 23), stream[13:23])      # wraps inside the ring
    np.testing.assert_array_equal(rb.read(19, 21), stream[19:21])      # across the wrap point
    assert rb.read(15, 15).shape == (0,)
    rb2 = AudioRingBuffer(8)
    rb2.push(stream[:5])
    np.testing.assert_array_equal(rb2.read(-3, 2), np.r_[0, 0, 0, stream[:2]].astype(np.float32))
    np.testing.assert_array_equal(rb2.read(-4, -1), np.zeros(3, np.float32))
    assert rb2.read(-3, 2).dtype == np.float32
    with pytest.raises(IndexError):
        rb.read(12, 20)                                     # overwritten
