"""engine.audio: decoding real files of many kinds, clear errors, and streaming features that do
not depend on how the samples were split."""
from __future__ import annotations

import math
import tracemalloc

import av
import numpy as np
import pytest
import scipy.io.wavfile as wavfile
from hypothesis import HealthCheck, given, settings, strategies as st

from emote.engine.audio import (FEATURE_NAMES, SCALAR_FEATURES, AudioInfo, AudioSettings, FeatureStream,
                                feature_names, iter_audio, load_audio, probe_audio)
from emote.engine.exceptions import AudioError, ConfigError

import speech as sp

SR = 16000
SPF = 640
COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def features(x: np.ndarray, s: AudioSettings = AudioSettings()) -> np.ndarray:
    fs = FeatureStream(s)
    fs.push(x)
    return np.concatenate([fs.pull(), fs.finish()])


def harmonic(f0: float, seconds: float, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 9) if f0 * k < sr / 2)
    return (amp * x / np.abs(x).max()).astype(np.float32)


# ------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------

def test_settings_defaults_and_validation():
    s = AudioSettings()
    assert s.samples_per_frame == 640 and s.subwindows_per_frame == 4 and s.win_samples == 400
    assert AudioSettings(sample_rate_hz=48000, fps=30).samples_per_frame == 1600
    for bad in (dict(fps=30), dict(fps=0), dict(n_mels=0), dict(hop_ms=50), dict(win_ms=5),
                dict(sample_rate_hz=16000.5), dict(f0_min_hz=500, f0_max_hz=400), dict(yin_threshold=2)):
        with pytest.raises(ConfigError):
            AudioSettings(**bad)
    assert FEATURE_NAMES[:len(SCALAR_FEATURES)] == SCALAR_FEATURES
    assert len(FEATURE_NAMES) == len(SCALAR_FEATURES) + 40 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert feature_names(8)[-1] == "mel_07"


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------

FORMATS = [  # suffix, codec, rate, channels
    ("wav", "pcm_s16le", 8000, 1),
    ("wav", "pcm_f32le", 48000, 2),
    ("mp3", "libmp3lame", 44100, 2),
    ("ogg", "libopus", 48000, 1),
    ("flac", "flac", 32000, 2),
    ("m4a", "aac", 44100, 2),
    ("m4a", "aac", 16000, 1),
]


@pytest.mark.parametrize("suffix,codec,rate,channels", FORMATS, ids=[f"{f[0]}-{f[1]}-{f[2]}-{f[3]}ch" for f in FORMATS])
def test_decodes_real_files(tmp_path, speech_en, suffix, codec, rate, channels):
    src = load_audio(speech_en.path, 22050)
    ref = speech_en.samples
    path = sp.encode_audio(src, 22050, tmp_path / f"speech.{suffix}", codec, rate, channels)
    info = probe_audio(path)
    assert isinstance(info, AudioInfo)
    assert (info.sample_rate_hz, info.channels) == (rate, channels)
    assert abs(info.duration_s - src.size / 22050) < 1 / 25
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - ref.size) < SPF                      # same length within one video frame
    n = min(y.size, ref.size)
    assert np.corrcoef(y[:n], ref[:n])[0, 1] > 0.98          # same waveform, aligned
    assert 0.85 < np.std(y) / np.std(ref) < 1.15             # dual mono is averaged, not summed


def test_iter_audio_blocks_match_load(speech_en):
    blocks = list(iter_audio(speech_en.path, SR, block_samples=3000))
    assert all(b.size == 3000 for b in blocks[:-1]) and 0 < blocks[-1].size <= 3000
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), speech_en.samples)
    assert load_audio(speech_en.path, 8000).size == pytest.approx(speech_en.samples.size / 2, abs=2)


def test_iter_audio_streams_a_long_file_in_bounded_memory(tmp_path):
    minutes = 4
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(22050 * 60 * minutes) * 3000).astype(np.int16)
    path = tmp_path / "long.wav"
    wavfile.write(path, 22050, x)
    del x
    tracemalloc.start()
    n = 0
    for block in iter_audio(path, SR, block_samples=16000):
        n += block.size
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert abs(n - SR * 60 * minutes) < SPF
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB while streaming a {minutes}-minute file"


def test_nan_and_inf_samples_become_zero(tmp_path):
    x = harmonic(200, 0.5)
    x[100:200] = np.nan
    x[300] = np.inf
    x[400] = -np.inf
    x[500:510] = 3.0
    wavfile.write(tmp_path / "bad.wav", SR, x)
    y = load_audio(tmp_path / "bad.wav")
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert (y[100:200] == 0).all() and y[300] == 0 and y[400] == 0
    fs = FeatureStream()
    fs.push(x)
    rows = np.concatenate([fs.pull(), fs.finish()])
    assert np.isfinite(rows).all()


def _make_bad(kind: str, tmp_path, speech_en):
    p = tmp_path / {"missing": "nope.wav", "empty": "empty.wav", "text": "notes.wav", "random": "noise.mp3",
                    "truncated": "cut.wav", "zero": "zero.wav", "image": "picture.png",
                    "video": "silent.mp4", "directory": "folder"}[kind]
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not audio\n" * 20)
    elif kind == "random":
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        p.write_bytes(speech_en.path.read_bytes()[:30])
    elif kind == "zero":
        wavfile.write(p, SR, np.zeros(0, np.int16))
    elif kind in ("image", "video"):
        codec, fmt, pix, n = ("png", "image2", "rgb24", 1) if kind == "image" else ("mpeg4", None, "yuv420p", 3)
        with av.open(str(p), "w", format=fmt) as c:
            s = c.add_stream(codec, rate=25)
            s.width = s.height = 64
            s.pix_fmt = pix
            for _ in range(n):
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode(None):
                c.mux(pkt)
        assert kind == "video" or p.read_bytes()[:4] == b"\x89PNG"
    elif kind == "directory":
        p.mkdir()
    return p


@pytest.mark.parametrize("kind,message", [
    ("missing", "not found"), ("empty", "empty"), ("text", "not a readable audio file"),
    ("random", "not a readable audio file"), ("truncated", "not a readable audio file"),
    ("zero", "zero-length"), ("image", "no audio stream"), ("video", "no audio stream"),
    ("directory", "directory"),
])
def test_bad_files_raise_one_line_audio_errors(tmp_path, speech_en, kind, message):
    path = _make_bad(kind, tmp_path, speech_en)
    for call in (probe_audio, load_audio, lambda p: next(iter_audio(p))):
        with pytest.raises(AudioError, match=message) as e:
            call(path)
        text = str(e.value)
        assert path.name in text and "\n" not in text


def test_iter_audio_fails_at_call_time():
    with pytest.raises(AudioError, match="not found"):
        iter_audio("/nonexistent/x.wav")          # not at the first next()
    with pytest.raises(ConfigError):
        iter_audio("/nonexistent/x.wav", block_samples=0)


# ------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------

def test_row_count_and_latency(speech_en):
    x = speech_en.samples
    fs = FeatureStream()
    la = fs.lookahead_samples
    assert 0 < la < SPF and fs.latency_s == la / SR
    full = features(x)
    assert full.shape == (math.ceil(x.size / SPF), len(FEATURE_NAMES)) and full.dtype == np.float32
    for cut in (0, 1, la - 1, la, SPF + la - 1, SPF + la, 5 * SPF + la + 17, x.size):
        fs = FeatureStream()
        fs.push(x[:cut])
        rows = fs.pull()
        assert len(rows) == max(0, (cut - la) // SPF) == fs.frames_out
        np.testing.assert_array_equal(rows, full[:len(rows)])   # a row never changes once emitted


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2500), st.booleans()), min_size=1, max_size=25))
def test_rows_do_not_depend_on_block_sizes(speech_en, blocks):
    x = speech_en.samples[8000:8000 + 2 * SR]
    ref = features(x)
    fs, out, pos = FeatureStream(), [], 0
    for size, pull in blocks:
        fs.push(x[pos:pos + size])
        pos += size
        if pull:
            out.append(fs.pull())
    fs.push(x[pos:])
    out += [fs.pull(), fs.finish()]
    got = np.concatenate(out)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("fps", [20, 40, 50])
def test_other_frame_rates(speech_en, fps):
    s = AudioSettings(fps=fps)
    x = speech_en.samples[:SR]
    ref = features(x, s)
    assert ref.shape == (math.ceil(x.size / s.samples_per_frame), len(FEATURE_NAMES))
    fs, out = FeatureStream(s), []
    for i in range(0, x.size, 333):
        fs.push(x[i:i + 333])
        out.append(fs.pull())
    np.testing.assert_array_equal(np.concatenate(out + [fs.finish()]), ref)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 4000))
def test_finish_pads_to_ceil(n):
    fs = FeatureStream()
    fs.push(np.full(n, 0.1, np.float32))
    rows = np.concatenate([fs.pull(), fs.finish()])
    assert len(rows) == -(-n // SPF) == fs.frames_out
    assert len(fs.finish()) == 0
    with pytest.raises(RuntimeError):
        fs.push(np.zeros(10, np.float32))
    fs.reset()
    fs.push(np.zeros(SPF, np.float32))
    assert len(fs.finish()) == 1


def test_push_rejects_multichannel():
    fs = FeatureStream()
    with pytest.raises(ValueError):
        fs.push(np.zeros((100, 2), np.float32))
    fs.push(np.zeros((100, 1), np.float32))       # (n, 1) is mono
    assert fs.samples_in == 100


@pytest.mark.parametrize("f0", [75.0, 110.0, 220.0, 440.0])
def test_pitch_of_harmonic_tones(f0):
    rows = features(harmonic(f0, 1.0))[3:-3]
    assert np.all(np.abs(rows[:, COL["f0_hz"]] / f0 - 1) < 0.02)
    assert rows[:, COL["voicing"]].min() > 0.9


def test_noise_silence_and_levels():
    rng = np.random.default_rng(0)
    noise = features((0.1 * rng.standard_normal(SR)).astype(np.float32))[2:-2]
    assert np.mean(noise[:, COL["f0_hz"]] > 0) < 0.1 and noise[:, COL["voicing"]].mean() < 0.4
    assert noise[:, COL["flatness"]].mean() > 0.5 and noise[:, COL["band_high"]].mean() > 0.6
    silence = features(np.zeros(SR, np.float32))
    assert (silence[:, COL["energy_db"]] == -100).all() and (silence[:, COL["f0_hz"]] == 0).all()
    t = np.arange(SR) / SR
    sine = features((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))[2:-2]
    np.testing.assert_allclose(sine[:, COL["energy_db"]], 20 * np.log10(0.5 / np.sqrt(2)), atol=0.1)
    low = features((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))[2:-2, COL["centroid_hz"]]
    high = features((0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))[2:-2, COL["centroid_hz"]]
    assert np.all(np.abs(low - 300) < 60) and np.all(np.abs(high - 3000) < 100)
    mel = sine[:, COL["mel_00"]:]
    assert np.argmax(mel.mean(axis=0)) < 10                  # 300 Hz lands in a low mel band


def test_pitch_of_male_and_female_speech(tmp_path):
    if not sp.have_espeak():
        pytest.skip("espeak-ng is not installed")
    text = "Maybe the baby will remember my mother."
    med = {}
    for voice in ("en", "en+f3"):
        rows = features(load_audio(sp.make_speech(text, voice, tmp_path / f"{voice}.wav")))
        f0 = rows[:, COL["f0_hz"]]
        voiced = rows[:, COL["voicing"]] > 0.7
        assert np.mean(f0[voiced] > 0) > 0.8                  # pitch found on most voiced frames
        med[voice] = np.median(f0[f0 > 0])
    assert 80 < med["en"] < 150 and 170 < med["en+f3"] < 320


# ------------------------------------------------------------------------------------------
# fuzzing the file readers (issue 7): every file gives finite float32 mono at 16 kHz or an
# AudioError / InputFileError, never another exception, a hang or a crash
# ------------------------------------------------------------------------------------------

from functools import partial

from emote.engine.exceptions import InputFileError
from fuzzing import FUZZ, MUTATIONS, isolated, mutate

FUZZ_LIMIT_S = 8.0           # one load + iterate of a < 64 KiB file longer than this counts as a hang
FUZZ_MAX_SAMPLES = 600 * SR  # a < 64 KiB file decoding to > 10 min (150 MB of float32) counts as a memory bomb
isolated = partial(isolated, limit_s=FUZZ_LIMIT_S)


#: Starts of real audio files, so random tails reach past the probing into the demuxers/decoders.
AUDIO_MAGIC = [b"", b"RIFF", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00",
               b"ID3\x03\x00\x00\x00\x00\x00\x00", b"\xff\xfb\x90\x44", b"OggS\x00\x02", b"fLaC", b"\x00\x00\x00\x20ftypM4A "]

@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    """One directory for all hypothesis examples of this module (files are overwritten)."""
    return tmp_path_factory.mktemp("fuzz_audio")


@pytest.fixture(scope="module")
def seed_audio(fuzz_dir) -> dict[str, bytes]:
    """Real 1 s files of a 220 Hz harmonic tone (name -> bytes), each under 64 KiB:
    16 kHz 16-bit WAV, 8 kHz stereo WAV, 48 kHz Opus in Ogg, 22.05 kHz MP3."""
    x = harmonic(220, 1.0, amp=0.5)
    seeds = {}
    for name, codec, rate, channels in (("tone.wav", "pcm_s16le", SR, 1), ("stereo.wav", "pcm_s16le", 8000, 2),
                                        ("tone.ogg", "libopus", 48000, 1), ("tone.mp3", "libmp3lame", 22050, 1)):
        path = sp.encode_audio(x, SR, fuzz_dir / f"seed_{name}", codec, rate, channels)
        seeds[name] = path.read_bytes()
        assert 0 < len(seeds[name]) < 64 * 1024, (name, len(seeds[name]))
    return seeds


def check_load(path) -> np.ndarray | None:
    """load_audio(path): finite float32 mono in [-1, 1] with samples, or InputFileError (None)."""
    try:
        y = load_audio(path)
    except InputFileError as e:
        assert path.name in str(e) and "\n" not in str(e), str(e)
        return None
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1, (type(y), getattr(y, "shape", None))
    assert 0 < y.size <= FUZZ_MAX_SAMPLES, y.size
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    return y


def check_iter(path, block_samples: int) -> np.ndarray | None:
    """iter_audio(path) consumed fully: blocks of exactly block_samples (the last 1..block_samples),
    finite float32 mono; or InputFileError at the call or during iteration (None)."""
    blocks = []
    try:
        for b in iter_audio(path, SR, block_samples=block_samples):
            assert isinstance(b, np.ndarray) and b.dtype == np.float32 and b.ndim == 1
            assert np.isfinite(b).all() and np.abs(b).max(initial=0) <= 1.0
            blocks.append(b)
            assert sum(x.size for x in blocks) <= FUZZ_MAX_SAMPLES
    except InputFileError as e:
        assert path.name in str(e) and "\n" not in str(e), str(e)
        return None
    assert blocks and all(b.size == block_samples for b in blocks[:-1]) and 0 < blocks[-1].size <= block_samples
    return np.concatenate(blocks)


def check_both(path, block_samples: int) -> np.ndarray | None:
    """load_audio and iter_audio agree: both fail, or both give the same samples.
    Run it through :func:`isolated` for untrusted files."""
    y = check_load(path)
    z = check_iter(path, block_samples)
    assert (y is None) == (z is None), f"load_audio {'failed' if y is None else 'worked'}, iter_audio did not"
    if y is not None:
        np.testing.assert_array_equal(y, z)
    return y


def test_fuzz_seeds_decode_intact(fuzz_dir, seed_audio):
    """The undamaged seeds decode to ~1 s at 16 kHz (so the fuzz tests start from real, readable files)."""
    for name, data in seed_audio.items():
        path = fuzz_dir / f"intact_{name}"
        path.write_bytes(data)
        isolated(check_both, path, 4000)
        y = check_both(path, 4000)
        assert y is not None and abs(y.size - SR) < SPF, (name, None if y is None else y.size)
        assert 0.2 < np.abs(y).max() <= 0.6


@FUZZ
@given(head=st.sampled_from(AUDIO_MAGIC), tail=st.binary(max_size=8192), suffix=st.sampled_from([".wav", ".mp3", ".ogg"]),
       block=st.integers(64, 20000))
def test_fuzz_audio_arbitrary_bytes(fuzz_dir, head, tail, suffix, block):
    path = fuzz_dir / f"arbitrary{suffix}"
    path.write_bytes(head + tail)
    isolated(check_both, path, block)


@FUZZ
@given(name=st.sampled_from(["tone.wav", "stereo.wav", "tone.ogg", "tone.mp3"]), ops=MUTATIONS, block=st.integers(64, 20000))
def test_fuzz_audio_damaged_real_files(fuzz_dir, seed_audio, name, ops, block):
    data = mutate(seed_audio[name], ops)
    assert len(data) < 64 * 1024
    path = fuzz_dir / f"damaged_{name}"
    path.write_bytes(data)
    isolated(check_both, path, block)


@pytest.mark.parametrize("rate_hz", [1, 8])
def test_wav_with_absurd_sample_rate_is_rejected(tmp_path, seed_audio, rate_hz):
    import struct

    data = bytearray(seed_audio["tone.wav"])
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    struct.pack_into("<I", data, 24, rate_hz)                 # fmt chunk: sample rate field
    struct.pack_into("<I", data, 28, rate_hz * 2)             # and byte rate, so the header stays consistent
    path = tmp_path / f"rate_{rate_hz}.wav"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="rate"):
        iter_audio(path)                                      # fails at open, before decoding anything


def test_fuzz_found_wav_with_zero_bits_per_sample_is_rejected(tmp_path, seed_audio):
    """The fuzzer's find: a WAV whose fmt chunk says 0 bits per sample opens with no codec
    context at all; that is a clear AudioError, not an AttributeError."""
    data = bytearray(seed_audio["tone.wav"])
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    data[34] = 0                                            # fmt chunk: bits per sample 16 -> 0
    path = tmp_path / "zero_bits.wav"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="damaged|decoder|not a readable"):
        load_audio(path)


def _wav_with_channels(path, channels: int) -> None:
    x = (np.random.default_rng(channels).standard_normal((SR // 2, channels)) * 3000).astype(np.int16)
    wavfile.write(path, SR, x)


@pytest.mark.parametrize("channels", [8, 12])
def test_wav_with_many_channels_decodes_without_crashing(tmp_path, channels):
    path = tmp_path / f"ch{channels}.wav"
    _wav_with_channels(path, channels)
    isolated(check_both, path, 4000)
    y = load_audio(path)                        # only reached when the child survived
    assert abs(y.size - SR // 2) < SPF


def test_fuzz_found_wav_with_bad_channel_count_does_not_crash(tmp_path, seed_audio):
    import struct

    data = bytearray(seed_audio["tone.wav"])
    struct.pack_into("<H", data, 22, 40)       # fmt chunk: channels 1 -> 40 (block align stays 2)
    path = tmp_path / "forty.wav"
    path.write_bytes(bytes(data))
    isolated(check_both, path, 4000)


def test_seven_channel_wav_decodes(tmp_path):
    """The largest channel count that does not hit the crash above: decoded and averaged to mono."""
    path = tmp_path / "ch7.wav"
    _wav_with_channels(path, 7)
    isolated(check_both, path, 4000)
    y = load_audio(path)
    assert abs(y.size - SR // 2) < SPF and 0 < np.std(y) < 0.1
