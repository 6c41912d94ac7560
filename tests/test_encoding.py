"""streaming.encoding: I420 conversion, zero-copy video frames, and the tuned aiortc encoders."""
from __future__ import annotations

import fractions

import av
import numpy as np

from emote.streaming.encoding import (ENCODER_OVERRIDES, ENCODER_THREADS, to_i420, tune_encoders,
                                      video_frame)


def _frames(n: int = 8, size: int = 64) -> list[av.VideoFrame]:
    """A moving gradient: I420 frames with pts on a 1/25 s clock."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        rgb = np.dstack([(xx * 4 + i * 9) % 256, (yy * 4) % 256, ((xx + yy) * 2 + i * 5) % 256]).astype(np.uint8)
        f = video_frame(to_i420(rgb))
        f.pts, f.time_base = i, fractions.Fraction(1, 25)
        out.append(f)
    return out


def test_video_frame_shares_the_array_and_falls_back_to_a_copy():
    i420 = to_i420(np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    f = video_frame(i420)
    assert (f.width, f.height, f.format.name) == (48, 64, "yuv420p")
    assert f.planes[0].buffer_ptr == i420.ctypes.data               # no copy
    np.testing.assert_array_equal(f.to_ndarray(), i420)
    odd = to_i420(np.zeros((6, 8, 3), np.uint8) + 77)               # height 6: not a multiple of 4
    g = video_frame(odd)
    assert (g.width, g.height) == (8, 6)
    np.testing.assert_array_equal(g.to_ndarray(), odd)


def test_tune_encoders_installs_once_into_both_aiortc_codecs():
    from aiortc.codecs import h264, vpx
    assert tune_encoders() and tune_encoders()                      # idempotent
    assert type(vpx.av).__name__ == type(h264.av).__name__ == "_AvProxy"
    assert vpx.av.VideoFrame is av.VideoFrame and h264.av.Packet is av.Packet   # the rest passes through
    dec = h264.av.CodecContext.create("h264", "r")                 # decoders are not wrapped
    assert type(dec).__module__.startswith("av.")


def test_a_tuned_context_merges_the_overrides_into_what_aiortc_sets():
    from aiortc.codecs import vpx
    tune_encoders()
    for codec in ("libvpx", "libx264"):
        ctx = vpx.av.CodecContext.create(codec, "w")
        ctx.options = {"deadline": "realtime", "noise-sensitivity": "4", "tune": "zerolatency"}
        assert ctx.options == {"deadline": "realtime", "noise-sensitivity": "4", "tune": "zerolatency",
                               **ENCODER_OVERRIDES[codec]}
        if codec in ENCODER_THREADS:
            assert ctx.thread_count == ENCODER_THREADS[codec]


def _decode(codec: str, payloads: list[list[bytes]]) -> list[av.VideoFrame]:
    """aiortc's depayloader, then FFmpeg's decoder: RTP payloads per frame -> decoded frames."""
    from aiortc.codecs import depayload
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    params = RTCRtpCodecParameters(mimeType=f"video/{codec}", clockRate=90000, payloadType=96)
    ctx = av.CodecContext.create("h264" if codec == "H264" else "libvpx", "r")
    out = []
    for frame_payloads in payloads:
        out += ctx.decode(av.Packet(b"".join(depayload(params, p) for p in frame_payloads)))
    return out


def test_aiortc_h264_encoder_runs_x264_with_the_overrides_and_stays_decodable():
    from aiortc.codecs import h264
    tune_encoders()
    enc = h264.H264Encoder()
    payloads = [enc.encode(f)[0] for f in _frames()]
    stream = b"".join(b"".join(p) for p in payloads)
    # x264 writes its settings into the stream (an SEI message): they are the tuned ones
    assert b"subme=4" in stream and b"threads=1 " in stream and b"subme=7" not in stream
    decoded = _decode("H264", payloads)
    assert len(decoded) == len(payloads) and decoded[0].width == 64


def test_aiortc_vp8_encoder_stays_decodable():
    from aiortc.codecs import vpx
    tune_encoders()
    enc = vpx.Vp8Encoder()
    payloads = [enc.encode(f)[0] for f in _frames()]
    decoded = _decode("VP8", payloads)
    assert len(decoded) == len(payloads) and decoded[-1].height == 64
