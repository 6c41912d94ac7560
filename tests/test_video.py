"""engine.video: MP4 round trips with real speech, atomicity, and input errors."""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from emote.engine.exceptions import AudioError, ConfigError
from emote.engine.resources import demo_speech_path
from emote.engine.video import (Mp4Writer, VideoSettings, VideoWriter, iter_frames, probe_video, read_video,
                               rgb_to_i420)

FPS = 25


def _audio_duration(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return sum(f.samples for f in c.decode(s)) / s.codec_context.sample_rate


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """About 2.5 s of real speech: espeak-ng when installed, else the packaged demo speech (OGG/Opus)."""
    if shutil.which("espeak-ng") is None:
        return demo_speech_path()
    out = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), "Bob bought a map of Paris, maybe."],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()  # 512x512 RGB, a natural photo


def _talking_frames(img: np.ndarray, n: int) -> list[np.ndarray]:
    """A still photo where only a mouth-sized patch moves, as in a talking portrait."""
    out = []
    for i in range(n):
        f = img.copy()
        f[300:380, 200:320] = np.roll(img[300:380, 200:320], (i % 9) - 4, axis=0)
        out.append(f)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_round_trip_with_speech(tmp_path, speech, astronaut):
    dur = _audio_duration(speech)
    n = math.ceil(dur * FPS)
    frames = _talking_frames(astronaut, n)
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, 512, 512, audio_path=speech) as w:
        for f in frames:
            w.write(f)
    assert w.frames == n
    assert _leftovers(tmp_path) == ["out.mp4"]

    info = probe_video(out)
    assert (info.width, info.height, info.frames) == (512, 512, n)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.audio_codec == "aac"
    assert info.fps == pytest.approx(FPS)
    assert abs(info.audio_duration_s - dur) <= 1 / FPS

    got, fps, adur = read_video(out)
    assert got.shape == (n, 512, 512, 3) and got.dtype == np.uint8
    assert fps == pytest.approx(FPS) and adur == pytest.approx(info.audio_duration_s)
    psnr = [_psnr(a, b) for a, b in zip(got, frames)]
    assert min(psnr) >= 35.0, f"PSNR min {min(psnr):.2f} dB"
    assert sum(1 for _ in iter_frames(out)) == n


def test_audio_is_muxed_as_frames_are_written(tmp_path, speech, astronaut):
    small = astronaut[::2, ::2].copy()
    with Mp4Writer(tmp_path / "o.mp4", 256, 256, audio_path=speech) as w:
        rate = w._audio.rate
        for i in range(1, 31):
            w.write(small)
            # decoded just far enough to cover the video written so far (plus at most one decoded block)
            assert i * rate / FPS <= w._audio.samples <= i * rate / FPS + 8192
    # packets of both streams are interleaved through the file, not audio all at the end
    with av.open(str(tmp_path / "o.mp4")) as c:
        kinds = [p.stream.type for p in c.demux() if p.size]
    first_video_after_audio = kinds.index("video", kinds.index("audio"))
    assert first_video_after_audio < len(kinds) - 1 and kinds[-1] == "audio"


def test_audio_longer_than_video_is_kept_whole(tmp_path, speech, astronaut):
    dur = _audio_duration(speech)
    out = tmp_path / "short.mp4"
    with Mp4Writer(out, 256, 256, audio_path=speech) as w:
        for _ in range(5):
            w.write(astronaut[::2, ::2])
    info = probe_video(out)
    assert info.frames == 5
    assert abs(info.audio_duration_s - dur) <= 1 / FPS


def test_video_only(tmp_path, astronaut):
    out = Mp4Writer(tmp_path / "v.mp4", 512, 512, settings=VideoSettings(fps=30, crf=30, preset="ultrafast"))
    out.write(astronaut)
    with pytest.raises(ConfigError, match="webm"):  # RGBA: an MP4 cannot keep alpha; say so, not drop it
        out.write(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]))
    out.write(astronaut)
    assert out.close() == tmp_path / "v.mp4"
    info = probe_video(tmp_path / "v.mp4")
    assert info.frames == 2 and info.fps == pytest.approx(30) and info.audio_codec is None
    assert info.audio_duration_s == 0.0


def test_abort_leaves_nothing(tmp_path, speech, astronaut):
    w = Mp4Writer(tmp_path / "a.mp4", 512, 512, audio_path=speech)
    for _ in range(10):
        w.write(astronaut)
    assert any(p.name.endswith(".part") for p in tmp_path.iterdir())  # written to a temp file meanwhile
    w.abort()
    w.abort()  # idempotent
    assert _leftovers(tmp_path) == []


def test_exception_inside_with_leaves_nothing_and_keeps_old_file(tmp_path, speech, astronaut):
    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(out, 512, 512, audio_path=speech) as w:
            w.write(astronaut)
            raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []
    out.write_bytes(b"previous render")
    with pytest.raises(KeyboardInterrupt):
        with Mp4Writer(out, 512, 512, audio_path=speech) as w:
            w.write(astronaut)
            raise KeyboardInterrupt
    assert _leftovers(tmp_path) == ["x.mp4"] and out.read_bytes() == b"previous render"


def test_output_directory_is_created(tmp_path, astronaut):
    out = tmp_path / "new" / "dir" / "o.mp4"
    with Mp4Writer(out, 64, 64) as w:
        w.write(astronaut[::8, ::8])
    assert out.is_file()


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "no_audio_stream"])
def test_bad_audio_is_an_audio_error(tmp_path, kind, astronaut):
    bad = tmp_path / "in" / f"{kind}.wav"
    bad.parent.mkdir()
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("this is not audio\n" * 20)
    elif kind == "no_audio_stream":
        bad = bad.with_suffix(".mp4")
        with Mp4Writer(bad, 64, 64) as w:
            w.write(astronaut[::8, ::8])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(AudioError) as e:
        Mp4Writer(out_dir / "o.mp4", 64, 64, audio_path=bad)
    assert "\n" not in str(e.value)
    assert _leftovers(out_dir) == []


def test_frame_and_settings_checks(tmp_path, astronaut):
    with pytest.raises(ConfigError):
        Mp4Writer(tmp_path / "o.mp4", 511, 512)
    with pytest.raises(ConfigError):
        VideoSettings(crf=60)
    with pytest.raises(ConfigError):
        VideoSettings(preset="warp")
    with pytest.raises(ConfigError):
        VideoSettings(fps=0)
    with Mp4Writer(tmp_path / "o.mp4", 512, 512) as w:
        with pytest.raises(ValueError):
            w.write(astronaut[:256])
        with pytest.raises(ValueError):
            w.write(astronaut.astype(np.float32))
        w.write(astronaut)
    with pytest.raises(RuntimeError):
        w.write(astronaut)


def test_rgb_to_i420_matches_swscale(astronaut):
    ours = rgb_to_i420(astronaut)
    ref = av.VideoFrame.from_ndarray(astronaut, format="rgb24").reformat(format="yuv420p").to_ndarray()
    assert ours.shape == ref.shape == (768, 512)
    d = np.abs(ours.astype(int) - ref.astype(int))
    assert d[:512].max() <= 1 and d.mean() < 0.5
    back = av.VideoFrame.from_ndarray(ours, format="yuv420p").to_ndarray(format="rgb24")
    assert _psnr(back, astronaut) > 38.0


def test_unwritable_output_is_an_emote_error(tmp_path, astronaut):
    from emote.engine.exceptions import EmoteError
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory is expected")
    with pytest.raises(EmoteError, match="cannot write"):
        Mp4Writer(blocker / "o.mp4", 64, 64)
    assert _leftovers(tmp_path) == ["file"]


# --------------------------------------------------------------------------- WebM: VP9 (+ alpha) + Opus


def _wav_16k(path: Path, seconds: float) -> Path:
    """A mono 16 kHz s16 WAV written with PyAV: a 220 Hz tone gliding up, with a slow tremolo."""
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (220 * t + 80 * t ** 2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    pcm = (x * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = "mono"
        for i in range(0, len(pcm), 1600):
            fr = av.AudioFrame.from_ndarray(pcm[None, i:i + 1600], format="s16", layout="mono")
            fr.sample_rate, fr.pts = rate, i
            c.mux(s.encode(fr))
        c.mux(s.encode(None))
    return path


def _disc_rgba(i: int, size: int) -> np.ndarray:
    """Frame i of a coloured disc moving right: (size, size, 4) uint8 RGBA, the alpha a Gaussian-blurred
    disc (a soft matte edge, as a matting model gives), the colour a smooth gradient everywhere."""
    import cv2
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    cx, cy, r = 0.3 + 0.03 * i, 0.5, 0.25
    disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r).astype(np.float32)
    alpha = cv2.GaussianBlur(disc, (0, 0), sigmaX=size / 64)
    rgb = np.stack([0.2 + 0.7 * xx, 0.8 - 0.5 * yy, 0.5 + 0.3 * np.sin(6 * xx + 0.3 * i)], -1)
    return np.dstack([rgb, alpha]).__mul__(255).round().clip(0, 255).astype(np.uint8)


def test_webm_alpha_round_trip(tmp_path):
    import time
    wav = _wav_16k(tmp_path / "voice.wav", 0.7)
    frames = [_disc_rgba(i, 512) for i in range(12)]
    out = tmp_path / "overlay.webm"
    cost = []
    with VideoWriter(out, 512, 512, audio_path=wav, alpha=True) as w:
        for f in frames:
            t0 = time.perf_counter()
            w.write(f)
            cost.append(time.perf_counter() - t0)
    assert _leftovers(tmp_path) == ["overlay.webm", "voice.wav"]
    per_frame_ms = 1000 * float(np.median(cost[1:]))  # the first frame includes encoder start-up
    print(f"VP9 yuva420p 512x512: {per_frame_ms:.1f} ms a frame (median, with Opus)")
    assert per_frame_ms < 40.0

    info = probe_video(out)
    assert (info.width, info.height, info.frames) == (512, 512, 12)
    assert info.video_codec == "vp9" and info.alpha and info.pix_fmt == "yuva420p"
    assert info.audio_codec == "opus" and info.audio_rate == 48000 and info.audio_channels == 1
    assert abs(info.audio_duration_s - 0.7) <= 1 / FPS    # the audio outlasts the video and is kept whole

    got, fps, _ = read_video(out, alpha=True)
    assert got.shape == (12, 512, 512, 4) and got.dtype == np.uint8 and fps == pytest.approx(FPS)
    want = np.stack(frames)
    a_err = np.abs(got[..., 3].astype(int) - want[..., 3])
    print(f"alpha error: mean {a_err.mean():.2f}, max {a_err.max()}")
    assert a_err.mean() <= 6.0, f"alpha mean error {a_err.mean():.2f}, max {a_err.max()}"
    assert got[..., 3].min() == 0 and got[..., 3].max() == 255    # clear and solid stay clear and solid
    solid = want[..., 3] > 200
    assert solid.mean() > 0.1
    assert _psnr(got[..., :3][solid], want[..., :3][solid]) > 30.0
    # the plain reader gives RGB of the same frames (the native decoder, alpha dropped)
    rgb = list(iter_frames(out))
    assert len(rgb) == 12 and rgb[0].shape == (512, 512, 3)
    assert _psnr(rgb[5][solid[5]], want[5, ..., :3][solid[5]]) > 30.0


def test_webm_without_alpha(tmp_path, astronaut):
    out = tmp_path / "plain.webm"
    with VideoWriter(out, 512, 512, settings=VideoSettings(vp9_crf=24)) as w:
        assert not w.alpha and w.container == "webm"
        with pytest.raises(ConfigError, match="alpha=True"):
            w.write(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]))
        frames = _talking_frames(astronaut, 6)
        for f in frames:
            w.write(f)
    info = probe_video(out)
    assert info.video_codec == "vp9" and not info.alpha and info.pix_fmt == "yuv420p"
    assert info.frames == 6 and info.audio_codec is None and info.audio_duration_s == 0.0
    got, _, _ = read_video(out)
    assert got.shape == (6, 512, 512, 3)
    psnr = [_psnr(a, b) for a, b in zip(got, frames)]
    assert min(psnr) > 33.0, f"PSNR min {min(psnr):.2f} dB"
    rgba = next(iter_frames(out, alpha=True))
    assert rgba.shape == (512, 512, 4) and (rgba[..., 3] == 255).all()   # no alpha stored: opaque


def test_container_from_suffix_or_argument(tmp_path, astronaut):
    small = astronaut[::4, ::4]
    with VideoWriter(tmp_path / "clip.bin", 128, 128, container="webm") as w:
        w.write(small)
    assert probe_video(tmp_path / "clip.bin").video_codec == "vp9"
    with pytest.raises(ConfigError, match=r"\.mp4.*\.webm"):
        VideoWriter(tmp_path / "clip.avi", 128, 128)
    with pytest.raises(ConfigError, match="container"):
        VideoWriter(tmp_path / "clip.webm", 128, 128, container="mkv")
    assert Mp4Writer is VideoWriter
    assert _leftovers(tmp_path) == ["clip.bin"]


def test_rgba_to_mp4_is_a_config_error(tmp_path, astronaut):
    with pytest.raises(ConfigError, match=r"alpha.*\.webm"):
        VideoWriter(tmp_path / "o.mp4", 64, 64, alpha=True)
    assert _leftovers(tmp_path) == []
    rgba = np.dstack([astronaut[::8, ::8], np.full((64, 64), 128, np.uint8)])
    w = VideoWriter(tmp_path / "o.mp4", 64, 64)
    with pytest.raises(ConfigError, match="webm") as e:
        w.write(rgba)
    assert "\n" not in str(e.value)
    w.abort()
    assert _leftovers(tmp_path) == []


def test_webm_exception_inside_with_leaves_nothing(tmp_path):
    wav = _wav_16k(tmp_path / "in.wav", 1.0)
    out = tmp_path / "x.webm"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 256, 256, audio_path=wav, alpha=True) as w:
            for i in range(4):
                w.write(_disc_rgba(i, 256))
            assert any(p.name.endswith(".part") for p in tmp_path.iterdir())
            raise RuntimeError("boom")
    assert _leftovers(tmp_path) == ["in.wav"]
    out.write_bytes(b"previous render")
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 256, 256, audio_path=wav) as w:
            w.write(_disc_rgba(0, 256)[..., :3])
            raise KeyboardInterrupt
    assert _leftovers(tmp_path) == ["in.wav", "x.webm"] and out.read_bytes() == b"previous render"


def test_vp9_settings_checks():
    for bad in (dict(vp9_crf=64), dict(vp9_crf=-1), dict(vp9_cpu_used=4), dict(vp9_cpu_used=9)):
        with pytest.raises(ConfigError):
            VideoSettings(**bad)
