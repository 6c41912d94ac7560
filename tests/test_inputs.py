"""Bad and odd inputs to `emote render`, run as a user would (issue 7).

Every bad input must end with exit code 2 and exactly one stderr line ``emote: error: ...`` that names
the file or the problem and says what to do (no Traceback), leaving nothing in the output directory.
Inputs that are valid but odd (silence, clipping, NaN samples, two faces, a huge photo) must give a
correct MP4 as long as the audio.
"""
from __future__ import annotations

import math
import resource
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from emote.engine.resources import default_portrait_path, demo_speech_path
from portraits import astronaut, grace_hopper, grace_hopper_path, save_rgb
from speech import encode_audio
from test_cli import assert_one_line_error, leftovers, needs_engine, run

RATE_HZ = 16000
CLIP_S = 1.5
FPS = 25
SIZE_PX = 256
# the astronaut's face box in skimage's 512 x 512 image (MediaPipe landmarks): x 181..270, y 72..177
ASTRO_FACE_X0, ASTRO_FACE_X1, ASTRO_FACE_PX = 181, 270, 106


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("avatar-cache")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """The first CLIP_S seconds of the demo speech: (n,) float32 mono at RATE_HZ, -1..1."""
    from emote.engine.audio import load_audio
    x = load_audio(demo_speech_path(), RATE_HZ)[: int(CLIP_S * RATE_HZ)]
    assert np.abs(x).max() > 0.05     # real speech, not silence
    return x


def write_wav_s16(path: Path, samples: np.ndarray) -> Path:
    """Mono 16-bit PCM WAV at RATE_HZ from float samples in -1..1 (0 samples is allowed)."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(pcm.tobytes())
    return path


def write_wav_f32(path: Path, samples: np.ndarray) -> Path:
    """Mono 32-bit float WAV (pcm_f32le, PyAV) at RATE_HZ, samples written as they are (NaN/Inf too)."""
    import av
    x = np.ascontiguousarray(samples, np.float32).reshape(1, -1)
    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream("pcm_f32le", rate=RATE_HZ, layout="mono")
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = RATE_HZ
        frame.pts = 0
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def wav_f32_data(path: Path) -> np.ndarray:
    """The raw float32 samples of a WAV file's data chunk (no decoder in between)."""
    raw = path.read_bytes()
    i = raw.index(b"data")
    n = int.from_bytes(raw[i + 4:i + 8], "little")
    return np.frombuffer(raw[i + 8:i + 8 + n], "<f4")


def render(tmp_path: Path, cache_dir: Path, image: Path | str, audio: Path | str, timeout: float = 180):
    """`emote render IMAGE AUDIO -o out/x.mp4 --size 256 ...` in tmp_path; (result, output directory)."""
    out = tmp_path / "out"
    r = run("render", str(image), str(audio), "-o", str(out / "x.mp4"), "--size", str(SIZE_PX),
            "--cache-dir", str(cache_dir), "--no-progress", cwd=tmp_path, timeout=timeout)
    return r, out


def assert_good_video(r, out: Path, audio_s: float) -> Path:
    """Exit 0, no Traceback, and out/x.mp4 alone: SIZE_PX square H.264 + AAC, as long as the audio."""
    from emote.engine.video import probe_video
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert leftovers(out) == ["x.mp4"]
    info = probe_video(out / "x.mp4")
    assert (info.width, info.height) == (SIZE_PX, SIZE_PX)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.frames == math.ceil(audio_s * FPS - 1e-6), (info.frames, audio_s)
    assert abs(info.audio_duration_s - audio_s) <= 1 / FPS, (info.audio_duration_s, audio_s)
    return out / "x.mp4"


def first_frame(mp4: Path) -> np.ndarray:
    from emote.engine.video import iter_frames
    return next(iter(iter_frames(mp4)))


# --------------------------------------------------------------------------- images


def _grey_canvas(side: int) -> np.ndarray:
    return np.full((side, side, 3), 128, np.uint8)


def _image_case(tmp_path: Path, case: str) -> Path:
    """Make the image of one case in tmp_path; returns its path."""
    p = tmp_path / "photo.jpg"
    if case == "missing":
        return tmp_path / "no-such-photo.jpg"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated jpeg":
        raw = Path(default_portrait_path()).read_bytes()
        p.write_bytes(raw[: len(raw) // 2])
    elif case == "text named jpg":
        p.write_text("Dear user, this is a shopping list, not a photo.\n" * 50)
    elif case == "no face":
        from skimage import data
        save_rgb(p, data.coffee())
    elif case == "tiny face":
        k = 30 / ASTRO_FACE_PX
        small = cv2.resize(astronaut(), None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        canvas = _grey_canvas(1024)
        y, x = 400, 450
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        save_rgb(p, canvas)
    else:
        raise KeyError(case)
    return p


def _assert_clear_error(r, out, case: str, fragments) -> None:
    """One stderr line holding ``fragments``, advice unless the file is just missing ("... not
    found: PATH" needs none), and nothing left in the output folder."""
    line = assert_one_line_error(r, *fragments)
    print(line)
    if case != "missing":
        assert any(w in line.lower() for w in ("use ", "give ", "try ", "check ")), line
    assert leftovers(out) == []


@needs_engine
@pytest.mark.parametrize("case,fragments", [
    pytest.param(case, fragments, id=case) for case, fragments in [
        ("missing", ("no-such-photo.jpg", "not found")),
        ("empty", ("photo.jpg", "empty")),
        ("truncated jpeg", ("photo.jpg",)),
        ("text named jpg", ("photo.jpg",)),
        ("no face", ("photo.jpg", "no face")),
        ("tiny face", ("photo.jpg", "too small")),
    ]])
def test_bad_image(tmp_path, cache_dir, speech, case, fragments):
    image = _image_case(tmp_path, case)
    audio = write_wav_s16(tmp_path / "voice.wav", speech)
    _assert_clear_error(*render(tmp_path, cache_dir, image, audio), case, fragments)


@needs_engine
def test_huge_image_is_downscaled(tmp_path, cache_dir, speech):
    """A 50-megapixel photo (8660 x 5780 JPEG) renders, with a bounded peak memory (< 3 GB)."""
    face = cv2.resize(astronaut(), (5780, 5780), interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(face, 0, 0, 1440, 1440, cv2.BORDER_REFLECT)
    assert big.shape == (5780, 8660, 3)
    image = save_rgb(tmp_path / "huge.jpg", big)
    del face, big
    audio = write_wav_s16(tmp_path / "voice.wav", speech[: RATE_HZ])
    r, out = render(tmp_path, cache_dir, image, audio)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20   # ru_maxrss is in KiB
    assert_good_video(r, out, 1.0)
    assert peak_gb < 3.0, f"peak RSS {peak_gb:.2f} GB"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-9)))


@needs_engine
def test_two_faces_uses_the_larger(tmp_path, cache_dir, speech):
    """Astronaut (face ~125 px) beside Grace Hopper (face ~200 px): exit 0, Hopper is animated."""
    from emote.engine.avatar import AvatarSettings, prepare
    astro = cv2.resize(astronaut(), (600, 600), interpolation=cv2.INTER_CUBIC)
    hopper = grace_hopper()
    both = np.hstack([astro, hopper])
    image = save_rgb(tmp_path / "two.jpg", both)
    audio = write_wav_s16(tmp_path / "voice.wav", speech[: RATE_HZ])
    r, out = render(tmp_path, cache_dir, image, audio)
    mp4 = assert_good_video(r, out, 1.0)
    # the first frame is the prepared crop of Hopper, not of the astronaut
    settings = AvatarSettings(size_px=SIZE_PX, cache_dir=str(cache_dir))
    ref_hopper = prepare(grace_hopper_path(), settings).image
    ref_astro = prepare(astro, settings).image
    frame = first_frame(mp4)
    assert _psnr(frame, ref_hopper) > _psnr(frame, ref_astro) + 3, (_psnr(frame, ref_hopper), _psnr(frame, ref_astro))


@needs_engine
def test_face_cut_by_the_left_border(tmp_path, cache_dir, speech):
    """The astronaut shifted left so ~20% of the face is outside: a video, or a clear error about the face."""
    cut = ASTRO_FACE_X0 + int(0.2 * (ASTRO_FACE_X1 - ASTRO_FACE_X0))
    image = save_rgb(tmp_path / "edge.jpg", np.ascontiguousarray(astronaut()[:, cut:]))
    audio = write_wav_s16(tmp_path / "voice.wav", speech[: RATE_HZ])
    r, out = render(tmp_path, cache_dir, image, audio)
    if r.returncode == 0:
        assert_good_video(r, out, 1.0)
    else:
        assert_one_line_error(r, "edge.jpg", "face")
        assert leftovers(out) == []


# --------------------------------------------------------------------------- audio


def _truncated(tmp_path: Path, speech: np.ndarray, suffix: str) -> Path:
    codec = {".ogg": "libopus", ".mp3": "libmp3lame", ".m4a": "aac"}[suffix]
    rate = 48000 if codec == "libopus" else 44100
    full = encode_audio(speech, RATE_HZ, tmp_path / f"full{suffix}", codec, rate_hz=rate)
    raw = full.read_bytes()
    p = tmp_path / f"voice{suffix}"
    p.write_bytes(raw[: int(0.3 * len(raw))])
    full.unlink()
    return p


def _audio_case(tmp_path: Path, speech: np.ndarray, case: str) -> Path:
    p = tmp_path / "voice.wav"
    if case == "missing":
        return tmp_path / "no-such-voice.wav"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text named wav":
        p.write_text("RIFF? no: these are lyrics, not audio.\n" * 50)
    elif case == "zero samples":
        write_wav_s16(p, np.zeros(0, np.float32))
    elif case.startswith("truncated"):
        return _truncated(tmp_path, speech, "." + case.split()[-1])
    else:
        raise KeyError(case)
    return p


@needs_engine
@pytest.mark.parametrize("case,fragments", [
    pytest.param(case, fragments, id=case) for case, fragments in [
        ("missing", ("no-such-voice.wav", "not found")),
        ("empty", ("voice.wav", "empty")),
        ("text named wav", ("voice.wav",)),
        ("zero samples", ("voice.wav", "zero-length")),
    ]])
def test_bad_audio(tmp_path, cache_dir, case, fragments, speech):
    audio = _audio_case(tmp_path, speech, case)
    _assert_clear_error(*render(tmp_path, cache_dir, default_portrait_path(), audio), case, fragments)


@needs_engine
@pytest.mark.parametrize("case", ["truncated ogg", "truncated mp3", "truncated m4a"])
def test_truncated_audio(tmp_path, cache_dir, speech, case):
    """The first 30% of a compressed file: a clear error naming it, or a video of what can be decoded."""
    from emote.engine.exceptions import AudioError
    from emote.engine.audio import load_audio
    audio = _audio_case(tmp_path, speech, case)
    try:
        decodable_s = load_audio(audio, RATE_HZ).size / RATE_HZ
    except AudioError:
        decodable_s = None
    r, out = render(tmp_path, cache_dir, default_portrait_path(), audio)
    if decodable_s is None or r.returncode != 0:
        assert_one_line_error(r, audio.name)
        assert leftovers(out) == []
    else:
        assert 0 < decodable_s < CLIP_S
        assert_good_video(r, out, decodable_s)


@needs_engine
def test_silence_only(tmp_path, cache_dir):
    audio = write_wav_s16(tmp_path / "silence.wav", np.zeros(int(1.2 * RATE_HZ), np.float32))
    r, out = render(tmp_path, cache_dir, default_portrait_path(), audio)
    mp4 = assert_good_video(r, out, 1.2)
    from emote.engine.video import iter_frames
    frames = np.stack(list(iter_frames(mp4))).astype(np.int16)
    # nobody speaks: the mouth barely moves (frame-to-frame change stays small)
    assert np.abs(np.diff(frames, axis=0)).mean() < 3.0


@needs_engine
def test_clipped_audio(tmp_path, cache_dir, speech):
    loud = np.clip(speech * 20, -1, 1)
    assert (np.abs(loud) >= 1).mean() > 0.05     # really clipped
    audio = write_wav_s16(tmp_path / "loud.wav", loud)
    r, out = render(tmp_path, cache_dir, default_portrait_path(), audio)
    assert_good_video(r, out, CLIP_S)


@needs_engine
def test_nan_and_inf_samples(tmp_path, cache_dir, speech):
    """A float WAV with NaN, +Inf and -Inf runs: exit 0 and a video as long as the audio (or a clear error)."""
    x = speech.copy()
    x[1000:1400] = np.nan
    x[8000:8100] = np.inf
    x[12000:12050] = -np.inf
    x[20000:] = np.nan
    audio = write_wav_f32(tmp_path / "nan.wav", x)
    data = wav_f32_data(audio)
    assert data.size == x.size and np.isnan(data).sum() > 400 and np.isinf(data).sum() == 150
    r, out = render(tmp_path, cache_dir, default_portrait_path(), audio)
    if r.returncode == 0:
        mp4 = assert_good_video(r, out, CLIP_S)
        from emote.engine.video import iter_frames
        frames = np.stack(list(iter_frames(mp4)))
        assert frames.std() > 10    # a picture, not a blank or garbage frame
    else:
        assert_one_line_error(r, "nan.wav")
        assert leftovers(out) == []


@needs_engine
@pytest.mark.parametrize("which", ["image", "audio"])
def test_missing_file_message_has_the_path(tmp_path, cache_dir, speech, which):
    missing = tmp_path / "sub dir" / f"gone-{which}.{'png' if which == 'image' else 'mp3'}"
    image = missing if which == "image" else default_portrait_path()
    audio = missing if which == "audio" else write_wav_s16(tmp_path / "voice.wav", speech)
    r, out = render(tmp_path, cache_dir, image, audio)
    line = assert_one_line_error(r, which)
    assert str(missing) in line, line
    assert leftovers(out) == []
