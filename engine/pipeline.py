"""The streaming pipeline: audio samples in, frames out. Offline render is the same pipeline fed from a file.

    pipe = load_pipeline("portrait.jpg")
    pipe.push(samples)            # float32 mono 16 kHz, any block size
    for frame in pipe.pull():     # frames that are ready, in order
        ...
    for frame in pipe.finish():   # end of the audio: the rest
        ...

Stages (each a small callable owned here; this class only orchestrates):
engine.audio.FeatureStream -> engine.generator (motion) -> engine.expression.ExpressionStage
(emotion, gaze, blinks) -> engine.renderer.Renderer (frames; with ``alpha`` or ``background_rgb``
also the person's matte from engine.matte, warped with the head).
Frame i covers audio samples [i * spf, (i + 1) * spf) with spf = sample_rate_hz / fps.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import motion as M
from .audio import AudioSettings, FeatureStream, iter_audio, probe_audio
from .avatar import Avatar, AvatarSettings, prepare
from .exceptions import ConfigError
from .expression import EXPRESSION_CONTROLS, ExpressionSettings, ExpressionStage
from .generator import DEFAULT_GENERATOR, MotionGenerator, available_generators, make_generator
from .matte import over_background
from .renderer import Renderer, RendererSettings

log = logging.getLogger(__name__)

#: Generators that take ``steps``, the diffusion sampling steps per chunk (PipelineSettings.steps).
STEPPED_GENERATORS: tuple[str, ...] = ("backbone",)
#: The largest PipelineSettings.steps (the model file decides which counts it can run).
MAX_STEPS = 8


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of one pipeline (one portrait, one audio stream)."""

    size_px: int = 512
    fps: int = 25
    seed: int = 0
    generator: str = DEFAULT_GENERATOR
    cache_dir: str | None = None
    landmarker_model: str | None = None
    landmarks_file: str | None = None   # user-supplied landmarks when the landmarker cannot find the face
    sample_rate_hz: int = 16000
    alpha: bool = False                 # frames carry the person's matte (overlays, WebM with alpha)
    background_rgb: tuple[int, int, int] | None = None   # composite over this colour (chroma key)
    expression: ExpressionSettings = ExpressionSettings()  # emotion, gaze, blink rate at the start
    controls: tuple[tuple[str, float], ...] = ()   # generator controls at the start, e.g. (("head_motion_speed", 1.5),)
    steps: int | None = None            # diffusion sampling steps per chunk (STEPPED_GENERATORS); None: the default

    def __post_init__(self) -> None:
        if self.fps not in (20, 25, 30, 40, 50):
            raise ConfigError(f"fps must be one of 20, 25, 30, 40, 50 (so a frame is a whole number of "
                              f"samples), got {self.fps}")
        if self.sample_rate_hz % self.fps:
            raise ConfigError(f"sample_rate_hz {self.sample_rate_hz} is not a multiple of fps {self.fps}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        AvatarSettings(size_px=self.size_px)  # validates size_px
        if self.background_rgb is not None and (len(self.background_rgb) != 3 or
                                                not all(0 <= int(v) <= 255 for v in self.background_rgb)):
            raise ConfigError(f"background_rgb must be three values 0..255, got {self.background_rgb!r}")
        if not isinstance(self.expression, ExpressionSettings):
            raise ConfigError("expression must be an ExpressionSettings")
        self._check_steps()

    def _check_steps(self) -> None:
        if self.steps is None:
            return
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) \
                or not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"steps must be a whole number of diffusion sampling steps, 1..{MAX_STEPS}, "
                              f"got {self.steps!r}: pass --steps 1, 2 or 4")
        # an unknown generator is left to make_generator, whose message lists the known ones
        if self.generator not in STEPPED_GENERATORS and self.generator in available_generators():
            raise ConfigError(f"the {self.generator} generator has no diffusion sampling steps (only "
                              f"{', '.join(STEPPED_GENERATORS)} has): drop --steps, or use "
                              f"--generator {STEPPED_GENERATORS[0]}")

    @property
    def avatar(self) -> AvatarSettings:
        return AvatarSettings(size_px=self.size_px, landmarker_model=self.landmarker_model,
                              landmarks_file=self.landmarks_file, cache_dir=self.cache_dir)

    @property
    def audio(self) -> AudioSettings:
        return AudioSettings(sample_rate_hz=self.sample_rate_hz, fps=float(self.fps))


@dataclass
class Frame:
    """One output frame: index i covers audio [i / fps, (i + 1) / fps)."""

    index: int
    rgb: np.ndarray       # (S, S, 3) uint8
    motion: np.ndarray    # (C,) float32, engine.motion channels
    alpha: np.ndarray | None = None   # (S, S) uint8 person matte (PipelineSettings.alpha), else None;
    #                                   with a matte, rgb and alpha are views of one RGBA array


class PortraitPipeline:
    """push(samples) / pull() -> frames, for one avatar. Not thread-safe: one owner thread."""

    def __init__(self, avatar: Avatar, settings: PipelineSettings = PipelineSettings(),
                 renderer_settings: RendererSettings = RendererSettings(),
                 generator: MotionGenerator | None = None) -> None:
        self.avatar, self.settings = avatar, settings
        self.features = FeatureStream(settings.audio)
        self.generator = generator or _make_generator(settings)
        self.generator.reset(settings.seed)
        self.expression = ExpressionStage(replace(settings.expression, fps=float(settings.fps), seed=settings.seed))
        self.set_controls(**dict(settings.controls))
        matte = None
        if settings.alpha or settings.background_rgb is not None:
            from .matte import person_matte
            matte = person_matte(avatar)
        self.renderer = Renderer(avatar, renderer_settings, matte=matte)
        self.timings: dict[str, float] = {"features": 0.0, "motion": 0.0, "render": 0.0}
        self._next = 0
        self._finished = False

    @property
    def samples_per_frame(self) -> int:
        return self.settings.sample_rate_hz // self.settings.fps

    @property
    def latency_samples(self) -> int:
        """Samples beyond the end of frame i that must arrive before frame i is emitted: the
        generator's lookahead (whole frames) plus the feature analysis window's overhang (7.5 ms)."""
        return int(self.generator.lookahead_frames) * self.samples_per_frame + int(self.features.lookahead_samples)

    @property
    def latency_frames(self) -> int:
        """:attr:`latency_samples` rounded up to whole frames."""
        return -(-self.latency_samples // self.samples_per_frame)

    @property
    def frames_out(self) -> int:
        return self._next

    def set_controls(self, **controls) -> None:
        """Live controls: the generator's (expression_intensity, head_motion_speed,
        head_motion_amplitude: engine.generator.CONTROLS) and the expression stage's (emotion,
        gaze, blink_rate_per_min: engine.expression). All are checked before any is applied."""
        expr = {k: v for k, v in controls.items() if k in EXPRESSION_CONTROLS}
        gen = {k: v for k, v in controls.items() if k not in EXPRESSION_CONTROLS}
        if "expression_intensity" in gen:
            expr["expression_intensity"] = gen["expression_intensity"]
        self.expression.check(**expr)             # raises ConfigError before anything changes
        self.generator.set_controls(**gen)
        self.expression.set_controls(**expr)

    def push(self, samples: np.ndarray) -> None:
        """samples: (n,) float32 mono at settings.sample_rate_hz, any n."""
        if self._finished:
            raise RuntimeError("push() after finish(): make a new pipeline for a new stream")
        t = time.perf_counter()
        self.features.push(np.asarray(samples, np.float32).reshape(-1))
        self.timings["features"] = (time.perf_counter() - t) * 1e3

    def _render(self, motion: np.ndarray) -> list[Frame]:
        out = []
        bg = self.settings.background_rgb
        for row in motion:
            t = time.perf_counter()
            alpha = None
            if self.settings.alpha or bg is not None:
                rgba = self.renderer.rgba(row)
                rgb, alpha = rgba[..., :3], rgba[..., 3]          # views: no copies per frame
                if bg is not None:
                    rgb = over_background(rgb, alpha.astype(np.float32) / 255.0, bg)
                    alpha = alpha if self.settings.alpha else None
            else:
                rgb = self.renderer(row)
            self.timings["render"] = (time.perf_counter() - t) * 1e3
            out.append(Frame(self._next, rgb, row, alpha))
            self._next += 1
        return out

    def _motion(self, feats: np.ndarray, final: bool) -> np.ndarray:
        t = time.perf_counter()
        if len(feats):
            self.generator.push(feats)
        rows = self.generator.finish() if final else self.generator.pull()
        rows = self.expression(M.clip(rows)) if len(rows) else np.zeros((0, M.NUM_CHANNELS), np.float32)
        self.timings["motion"] = (time.perf_counter() - t) * 1e3
        return rows

    def pull(self) -> list[Frame]:
        """Frames that are ready, in order (possibly none)."""
        return list(self.iter_pull())

    def iter_pull(self) -> Iterator[Frame]:
        """As :meth:`pull`, lazily: the motion of every ready frame is made at the first ``next``,
        each picture only when it is asked for, so that a live sender can send a chunk's first
        frame while the next one is still to be rendered (its deadline is a frame period earlier)."""
        t = time.perf_counter()
        feats = self.features.pull()
        self.timings["features"] += (time.perf_counter() - t) * 1e3
        for row in self._motion(feats, final=False):
            yield from self._render(row[None])

    def finish(self) -> list[Frame]:
        """End of the audio: the remaining frames (total = ceil(samples / samples_per_frame))."""
        if self._finished:
            return []
        self._finished = True
        return self._render(self._motion(self.features.finish(), final=True))


def _make_generator(settings: PipelineSettings) -> MotionGenerator:
    """The generator of ``settings``: ``steps`` is passed only when set (its __post_init__ checked
    that the generator takes it; the backbone refuses a count its model has no schedule for)."""
    kw: dict = {"fps": float(settings.fps), "seed": settings.seed}
    if settings.steps is not None:
        kw["steps"] = int(settings.steps)
    return make_generator(settings.generator, **kw)


def load_pipeline(image: str | os.PathLike | np.ndarray, settings: PipelineSettings = PipelineSettings(),
                  renderer_settings: RendererSettings = RendererSettings()) -> PortraitPipeline:
    """Prepare (or load from cache) the avatar of `image` and build a pipeline for it."""
    return PortraitPipeline(prepare(image, settings.avatar), settings, renderer_settings)


class _WriterThread:
    """Encodes frames on a worker thread (bounded queue, end marker, errors carried back to the owner).

    libx264 and the renderer's OpenCV calls release the GIL, so rendering and encoding overlap on two cores.
    """

    _END = object()

    def __init__(self, writer, max_queued_frames: int = 8) -> None:
        import queue
        import threading

        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=max_queued_frames)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="emote-encoder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if self.error is None:
                try:
                    self.writer.write(item)
                except BaseException as e:  # carried back to the owner on the next write/close
                    self.error = e

    def write(self, rgb: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(rgb)

    def close(self) -> Path:
        self.q.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.writer.close()

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        self.q.put(self._END)
        self.thread.join()
        self.writer.abort()


@dataclass
class RenderReport:
    out_path: Path
    frames: int
    duration_s: float
    seconds_elapsed: float
    notes: list[str] = field(default_factory=list)

    @property
    def fps_rendered(self) -> float:
        return self.frames / max(self.seconds_elapsed, 1e-9)


def _pixels(frame: Frame) -> np.ndarray:
    """(S, S, 3) RGB, or (S, S, 4) RGBA when the frame carries a matte."""
    return frame.rgb if frame.alpha is None else np.dstack([frame.rgb, frame.alpha])


def render_file(image: str | os.PathLike | np.ndarray, audio_path: str | os.PathLike, out_path: str | os.PathLike,
                settings: PipelineSettings = PipelineSettings(), progress: bool = True,
                renderer_settings: RendererSettings = RendererSettings()) -> RenderReport:
    """Photo + audio file -> MP4 (H.264 + AAC) or WebM (VP9 + Opus; with ``settings.alpha`` the
    person's matte as its alpha channel). The container follows ``out_path``'s suffix. Streams:
    memory does not grow with the audio's length.

    Inputs are checked before the output is created; on any error no partial output file remains.
    """
    from tqdm import tqdm

    from .video import VideoSettings, VideoWriter

    t0 = time.perf_counter()
    info = probe_audio(audio_path)                 # bad audio fails here, before anything is written
    pipe = load_pipeline(image, settings, renderer_settings)
    total = int(np.ceil(info.duration_s * settings.fps - 1e-6))
    S = settings.size_px
    bar = tqdm(total=total, unit="frame", desc="render", disable=not progress, leave=False)
    mp4 = VideoWriter(out_path, S, S, VideoSettings(fps=settings.fps), audio_path=audio_path, alpha=settings.alpha)
    try:
        writer = _WriterThread(mp4)
    except BaseException:
        mp4.abort()
        bar.close()
        raise
    try:
        for block in iter_audio(audio_path, settings.sample_rate_hz):
            pipe.push(block)
            for f in pipe.pull():
                writer.write(_pixels(f))
                bar.update(1)
        for f in pipe.finish():
            writer.write(_pixels(f))
            bar.update(1)
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return RenderReport(Path(path), pipe.frames_out, pipe.frames_out / settings.fps,
                        time.perf_counter() - t0, list(pipe.avatar.notes))
