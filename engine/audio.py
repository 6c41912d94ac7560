"""Audio in: decoding (any file FFmpeg reads -> float32 mono at 16 kHz) and per-video-frame features.

Decoding goes through PyAV; channel mixing and resampling are done by FFmpeg's swresample
(``av.AudioResampler``), never by hand. Features come out of :class:`FeatureStream`, a push/pull
stream: push float32 mono samples in blocks of any size, pull one feature row per completed video
frame. Row ``i`` describes frame ``i``, which covers samples ``[i*spf, (i+1)*spf)``
(``spf = AudioSettings.samples_per_frame``), and is a pure function of the samples in
``[i*spf - context, (i+1)*spf + lookahead)`` (zeros before the stream start and, at ``finish``,
after its end), so the rows never depend on how the samples were split into blocks.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from emote.kernels import audio as K

from .exceptions import AudioError, ConfigError

__all__ = ["AudioSettings", "AudioInfo", "probe_audio", "iter_audio", "load_audio",
           "SCALAR_FEATURES", "FEATURE_NAMES", "feature_names", "FeatureStream", "sanitize"]


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioSettings:
    """Feature-extraction settings (all validated; ConfigError names the bad field).

    Each video frame is analysed with ``round(samples_per_frame / hop)`` spectral sub-windows of
    ``win_ms`` (Hann), centred evenly inside the frame (at the defaults: 4 windows of 25 ms on a
    10 ms hop, the first centred 5 ms after the frame start), and one pitch window of
    ``pitch_integration_ms + 1/f0_min_hz`` centred on the frame.
    """
    sample_rate_hz: int = 16000
    fps: float = 25.0
    hop_ms: float = 10.0
    win_ms: float = 25.0
    n_mels: int = 40
    mel_fmin_hz: float = 20.0
    f0_min_hz: float = 60.0
    f0_max_hz: float = 800.0
    pitch_integration_ms: float = 25.0
    yin_threshold: float = 0.35

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"AudioSettings.{field}={getattr(self, field)!r}: {why}")
        if not isinstance(self.sample_rate_hz, (int, np.integer)) or not 8000 <= self.sample_rate_hz <= 192000:
            raise bad("sample_rate_hz", "must be an integer in 8000..192000")
        if not 1.0 <= float(self.fps) <= 240.0:
            raise bad("fps", "must be in 1..240")
        spf = self.sample_rate_hz / float(self.fps)
        if abs(spf - round(spf)) > 1e-9:
            raise bad("fps", f"sample_rate_hz / fps = {spf:.4f} must be a whole number of samples")
        if not 1.0 <= self.hop_ms <= 1000.0 / self.fps:
            raise bad("hop_ms", f"must be in 1..{1000.0 / self.fps:g} (one video frame)")
        if not self.hop_ms <= self.win_ms <= 100.0:
            raise bad("win_ms", "must be in hop_ms..100")
        if not isinstance(self.n_mels, (int, np.integer)) or not 1 <= self.n_mels <= 256:
            raise bad("n_mels", "must be an integer in 1..256")
        if not 0.0 <= self.mel_fmin_hz < self.sample_rate_hz / 4:
            raise bad("mel_fmin_hz", "must be in 0..sample_rate_hz/4")
        if not 20.0 <= self.f0_min_hz < self.f0_max_hz <= self.sample_rate_hz / 4:
            raise bad("f0_max_hz", "need 20 <= f0_min_hz < f0_max_hz <= sample_rate_hz/4")
        if not 5.0 <= self.pitch_integration_ms <= 100.0:
            raise bad("pitch_integration_ms", "must be in 5..100")
        if not 0.01 <= self.yin_threshold <= 0.9:
            raise bad("yin_threshold", "must be in 0.01..0.9")

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame (640 at 16 kHz, 25 fps)."""
        return int(round(self.sample_rate_hz / float(self.fps)))

    @property
    def win_samples(self) -> int:
        return int(round(self.win_ms * self.sample_rate_hz / 1000.0))

    @property
    def subwindows_per_frame(self) -> int:
        return max(1, int(round(self.samples_per_frame / (self.hop_ms * self.sample_rate_hz / 1000.0))))


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` found: duration (s), native sample rate (Hz), channels, codec name."""
    duration_s: float
    sample_rate_hz: int
    channels: int
    codec: str


#: What to do about an audio file that cannot be used (the end of AudioError messages).
_USE_AUDIO = "use a WAV, MP3, M4A, OGG or FLAC file that plays in a media player"


MIN_RATE_HZ, MAX_RATE_HZ = 2000, 768000   # real audio; a damaged header's 1 Hz would expand 16000-fold


def _open(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    """Open a file and its first audio stream, mapping every failure to a one-line AudioError."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"audio path is a directory, not a file: {p}")
    if p.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {p}: {_USE_AUDIO}")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise AudioError(f"not a readable audio file (unknown format or corrupt): {p} ({_msg(e)}): "
                         f"{_USE_AUDIO}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise AudioError(f"cannot open audio file {p}: {e}: {_USE_AUDIO}") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(f"no audio stream in {p}: {_USE_AUDIO}")
    stream = container.streams.audio[0]
    if stream.codec_context is None:                     # e.g. a WAV header with 0 bits per sample
        container.close()
        raise AudioError(f"no decoder for the audio stream of {p} (damaged header or unsupported codec): "
                         f"{_USE_AUDIO}")
    rate = int(stream.codec_context.sample_rate or stream.rate or 0)
    if rate and not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        container.close()
        raise AudioError(f"{p} says its sample rate is {rate} Hz (audio is {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz): "
                         f"the file is damaged: {_USE_AUDIO}")
    return container, stream


def _msg(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e).split())


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Duration, native rate, channel count and codec of the first audio stream.

    The duration comes from the container when it declares one; otherwise the stream is decoded
    and its samples counted. Raises AudioError (missing, empty, not audio, corrupt, no audio
    stream, zero-length audio).
    """
    container, stream = _open(path)
    with container:
        cc = stream.codec_context
        rate = int(cc.sample_rate or stream.rate or 0)
        channels = int(cc.layout.nb_channels if cc.layout is not None else getattr(cc, "channels", 0))
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        codec = cc.name
    if rate <= 0:
        raise AudioError(f"audio stream without a sample rate in {path}")
    if duration is None or duration <= 0:
        n = sum(b.size for b in iter_audio(path, rate))   # raises on zero-length
        duration = n / rate
    return AudioInfo(duration_s=duration, sample_rate_hz=rate, channels=channels, codec=codec)


def sanitize(samples: np.ndarray) -> np.ndarray:
    """float32 copy-or-view with NaN/±inf replaced by 0 and values clipped to [-1, 1]."""
    x = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.size and (x.max() > 1.0 or x.min() < -1.0):
        x = np.clip(x, -1.0, 1.0)
    return x


def _decoded(path, container, stream, sample_rate_hz: int) -> Iterator[np.ndarray]:
    """Resampled float32 mono arrays of whatever size the decoder yields (closes the container).

    swresample converts to packed float at ``sample_rate_hz`` keeping the channels; the channels
    are then averaged (swresample's own stereo->mono matrix adds them at -3 dB, which would lift
    a dual-mono file by 3 dB and clip loud ones).
    """
    resampler = av.AudioResampler(format="flt", rate=int(sample_rate_hz))
    with container:
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield _mono(out)
            for out in resampler.resample(None):
                yield _mono(out)
        except av.error.FFmpegError as e:
            raise AudioError(f"corrupt audio in {path}: {_msg(e)}: {_USE_AUDIO}") from None
        except ValueError as e:           # e.g. the stream changes format mid-way
            raise AudioError(f"cannot decode audio in {path}: {e}: {_USE_AUDIO}") from None


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """A packed float frame -> (n,) float32, the mean of its channels. (Packed, not planar: PyAV's
    planar to_ndarray crashes on 8 or more channels.)"""
    ch = frame.layout.nb_channels
    x = np.frombuffer(bytes(frame.planes[0]), np.float32)[:frame.samples * ch].reshape(frame.samples, ch)
    return x[:, 0].copy() if ch == 1 else x.mean(axis=1, dtype=np.float32)


def iter_audio(path: str | os.PathLike, sample_rate_hz: int = 16000,
               block_samples: int = 16000) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono blocks of ``block_samples`` at ``sample_rate_hz``.

    Every block but the last has exactly ``block_samples`` samples; memory stays bounded by a
    block whatever the file's length. NaN/inf become 0 and samples are clipped to [-1, 1].
    Raises AudioError (with the file name) for missing/empty/corrupt/non-audio files, files with
    no audio stream, and audio with no samples at all.
    """
    if int(block_samples) < 1:
        raise ConfigError(f"block_samples={block_samples!r}: must be >= 1")
    if not 1000 <= int(sample_rate_hz) <= 384000:
        raise ConfigError(f"sample_rate_hz={sample_rate_hz!r}: must be in 1000..384000")
    container, stream = _open(path)          # fail now, not at the first next()
    return _blocks(path, _decoded(path, container, stream, int(sample_rate_hz)), int(block_samples))


def _blocks(path, chunks: Iterator[np.ndarray], block_samples: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    have, total = 0, 0
    for chunk in chunks:
        pending.append(chunk)
        have += chunk.size
        while have >= block_samples:
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield sanitize(buf[:block_samples]).copy()
            total += block_samples
            rest = buf[block_samples:]
            pending, have = ([rest] if rest.size else []), rest.size
    if have:
        total += have
        yield sanitize(np.concatenate(pending)).copy()
    if total == 0:
        raise AudioError(f"zero-length audio (no samples decoded) in {path}: use a recording that has sound in it")


def load_audio(path: str | os.PathLike, sample_rate_hz: int = 16000) -> np.ndarray:
    """A whole file as one float32 mono array at ``sample_rate_hz`` (see :func:`iter_audio`)."""
    return np.concatenate(list(iter_audio(path, sample_rate_hz, block_samples=1 << 18)))


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

#: Per-frame scalar features, always the first columns (their indices do not depend on n_mels).
SCALAR_FEATURES: tuple[str, ...] = (
    "energy_db",       # RMS level of the frame's own samples, dBFS (floor -100)
    "energy_min_db",   # quietest spectral sub-window (10 ms hop, 25 ms Hann) of the frame, dBFS
    "energy_max_db",   # loudest sub-window, dBFS
    "f0_hz",           # YIN fundamental frequency, 0 when unvoiced or silent
    "voicing",         # 1 - YIN aperiodicity, 0..1 (≈1 clearly voiced, ≈0 noise or silence)
    "centroid_hz",     # spectral centroid of the frame's mean power spectrum (0 in silence)
    "flatness",        # Wiener spectral flatness 0..1 (1 for noise and for digital silence)
    "band_low",        # share of power in 80..900 Hz (F1 region, voicing bar, nasal murmur)
    "band_mid",        # share in 900..2500 Hz (F2 region)
    "band_high",       # share in 2500 Hz..Nyquist (fricatives, bursts)
    "f1_hz",           # power-weighted mean frequency in 200..1000 Hz: an F1 proxy (0 if silent)
    "f2_hz",           # power-weighted mean frequency in 900..2800 Hz: an F2 proxy (0 if silent)
)
_BANDS_HZ = ((80.0, 900.0), (900.0, 2500.0), (2500.0, 1e9), (200.0, 1000.0), (900.0, 2800.0))
_ENERGY_FLOOR = 1e-10   # -100 dBFS
_MEL_FLOOR = 1e-10


def feature_names(n_mels: int = 40) -> tuple[str, ...]:
    """Column names of a feature row: SCALAR_FEATURES, then ``mel_00``.. ``mel_{n_mels-1}``
    (natural log of the mel-band power, averaged over the frame's sub-windows, floor ln 1e-10)."""
    return SCALAR_FEATURES + tuple(f"mel_{k:02d}" for k in range(n_mels))


FEATURE_NAMES: tuple[str, ...] = feature_names(AudioSettings().n_mels)


class _FrameAnalyzer:
    """Computes feature rows from fixed-length segments of samples around frames.

    A frame's segment starts ``context`` samples before the frame and ends ``lookahead`` samples
    after it. Every operation is row-wise (no BLAS over the batch), so a row is bit-identical
    however many frames are analysed together.
    """

    def __init__(self, s: AudioSettings) -> None:
        spf, win, n_sub = s.samples_per_frame, s.win_samples, s.subwindows_per_frame
        self.spf, self.n_sub = spf, n_sub
        self.n_fft = 1 << int(math.ceil(math.log2(win)))
        offs = [int(math.floor((k + 0.5) * spf / n_sub - win / 2.0 + 0.5)) for k in range(n_sub)]
        self.yin = K.Yin(s.sample_rate_hz, s.f0_min_hz, s.f0_max_hz,
                         int(round(s.pitch_integration_ms * s.sample_rate_hz / 1000.0)), s.yin_threshold)
        p_len = self.yin.window_samples
        p_off = spf // 2 - p_len // 2
        self.context = -min(0, offs[0], p_off)
        self.lookahead = max(spf, offs[-1] + win, p_off + p_len) - spf
        self.segment = self.context + spf + self.lookahead
        c = self.context
        self.sub_idx = (np.asarray(offs)[:, None] + c + np.arange(win)[None, :]).astype(np.intp)
        self.pitch_idx = np.arange(p_off + c, p_off + c + p_len, dtype=np.intp)
        self.frame_idx = np.arange(c, c + spf, dtype=np.intp)
        self.window = K.hann_window(win)
        freqs = np.arange(self.n_fft // 2 + 1) * (s.sample_rate_hz / self.n_fft)
        self.summary = K.SpectrumSummary(freqs, K.band_masks(s.sample_rate_hz, self.n_fft, _BANDS_HZ),
                                         K.mel_filterbank(s.sample_rate_hz, self.n_fft, s.n_mels, s.mel_fmin_hz))
        self.width = len(SCALAR_FEATURES) + s.n_mels

    def rows(self, buf: np.ndarray, start: int, n: int) -> np.ndarray:
        """Rows (n, F) float32 for the n frames whose segments start at ``buf[start + j*spf]``."""
        base = start + self.spf * np.arange(n, dtype=np.intp)
        frames = buf[base[:, None] + self.frame_idx]
        ms = (frames * frames).mean(axis=-1)
        subs = buf[(base[:, None, None] + self.sub_idx).reshape(n * self.n_sub, -1)]
        power, sub_ms = K.power_spectra(subs, self.window, self.n_fft)
        mean_power = power.reshape(n, self.n_sub, -1).mean(axis=1)
        sub_ms = sub_ms.reshape(n, self.n_sub)
        f0, ap = self.yin(buf[base[:, None] + self.pitch_idx])
        centroid, flatness, frac, cent, mel = self.summary(mean_power)
        out = np.empty((n, self.width), np.float64)
        out[:, 0] = 10.0 * np.log10(ms + _ENERGY_FLOOR)
        out[:, 1] = 10.0 * np.log10(sub_ms.min(axis=1) + _ENERGY_FLOOR)
        out[:, 2] = 10.0 * np.log10(sub_ms.max(axis=1) + _ENERGY_FLOOR)
        out[:, 3] = np.where(out[:, 0] > -70.0, f0, 0.0)
        out[:, 4] = np.clip(1.0 - ap, 0.0, 1.0)
        out[:, 5] = centroid
        out[:, 6] = flatness
        out[:, 7:10] = frac[:, :3]
        out[:, 10:12] = cent[:, 3:5]
        out[:, 12:] = np.log(mel + _MEL_FLOOR)
        return out.astype(np.float32)


class FeatureStream:
    """Streaming per-video-frame audio features: push samples in any blocks, pull rows.

    ``push(samples)`` takes float32 mono at ``settings.sample_rate_hz`` (NaN/inf -> 0, clipped to
    [-1, 1]); ``pull()`` returns the rows of every frame whose audio (plus ``lookahead_samples``)
    has arrived, as (n, F) float32, ``F = len(names)``; ``finish()`` pads the end with zeros and
    returns the remaining rows, so the total is ``ceil(total_samples / samples_per_frame)``.
    Rows are identical whatever the block sizes. After ``finish``, call ``reset()`` to reuse.
    """

    def __init__(self, settings: AudioSettings = AudioSettings()) -> None:
        if not isinstance(settings, AudioSettings):
            raise ConfigError(f"FeatureStream needs AudioSettings, got {type(settings).__name__}")
        self.settings = settings
        self.names: tuple[str, ...] = feature_names(settings.n_mels)
        self._an = _FrameAnalyzer(settings)
        self.reset()

    @property
    def lookahead_samples(self) -> int:
        """Samples needed past a frame's end before its row is ready (120 = 7.5 ms at defaults)."""
        return self._an.lookahead

    @property
    def latency_s(self) -> float:
        """Algorithmic latency from a frame's last sample to its row: lookahead / sample rate."""
        return self._an.lookahead / self.settings.sample_rate_hz

    @property
    def frames_out(self) -> int:
        """Rows returned so far by pull/finish."""
        return self._next_frame

    @property
    def samples_in(self) -> int:
        """Samples pushed so far."""
        return self._samples_in

    def reset(self) -> None:
        """Forget everything; the next push starts a new stream at sample 0."""
        c = self._an.context
        self._buf = np.zeros(c, np.float64)   # absolute samples [_buf_start, _buf_start + len)
        self._buf_start = -c
        self._pending: list[np.ndarray] = []
        self._samples_in = 0
        self._next_frame = 0
        self._finished = False

    def push(self, samples: np.ndarray) -> None:
        """Append float32 mono samples (1-D, or (n, 1)); any length, including 0."""
        if self._finished:
            raise RuntimeError("FeatureStream.push after finish(); call reset() to start a new stream")
        x = np.asarray(samples)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise ValueError(f"FeatureStream.push expects mono samples of shape (n,), got {x.shape}")
        if x.size:
            self._pending.append(sanitize(x))
            self._samples_in += x.size

    def pull(self) -> np.ndarray:
        """Rows of all frames that are ready, (n, F) float32 (n may be 0)."""
        spf = self.settings.samples_per_frame
        ready = (self._samples_in - self._an.lookahead) // spf if self._samples_in >= self._an.lookahead else 0
        return self._emit(max(0, ready - self._next_frame))

    def finish(self) -> np.ndarray:
        """End of stream: rows for every remaining frame, the audio after the end taken as zeros."""
        if self._finished:
            return np.zeros((0, self._an.width), np.float32)
        spf = self.settings.samples_per_frame
        total_frames = -(-self._samples_in // spf)
        need = (total_frames - 1) * spf + spf + self._an.lookahead - self._samples_in
        if total_frames and need > 0:
            self._pending.append(np.zeros(need, np.float32))
        out = self._emit(total_frames - self._next_frame)
        self._finished = True
        return out

    _BATCH = 128   # frames analysed together (bounds memory; results do not depend on it)

    def _emit(self, n: int) -> np.ndarray:
        width = self._an.width
        if n <= 0:
            return np.zeros((0, width), np.float32)
        if self._pending:
            self._buf = np.concatenate([self._buf] + [p.astype(np.float64) for p in self._pending])
            self._pending = []
        spf, an = self.settings.samples_per_frame, self._an
        parts = []
        for j0 in range(0, n, self._BATCH):
            m = min(self._BATCH, n - j0)
            start = (self._next_frame + j0) * spf - an.context - self._buf_start
            parts.append(an.rows(self._buf, start, m))
        self._next_frame += n
        drop = self._next_frame * spf - an.context - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
