"""The diffusion motion backbone at run time: ONNX Runtime only (no torch).

A few-step distilled diffusion transformer denoises motion one chunk at a time (DESIGN.md):

* chunk ``k`` holds the ``hop`` new frames ``[k*hop, (k+1)*hop)`` (train_backbone's default 5, 200 ms; the shipped model: 2, 80 ms);
* it is conditioned on the audio window of feature rows ``[k*hop - context, (k+1)*hop + lookahead)``
  (3 context and 2 lookahead frames by default, as streaming.ringbuffer's windows), on the
  ``past`` motion frames already emitted (EMO's motion frames: they join chunks without seams and
  allow any duration), on the controls (expression intensity, head-motion speed, head-motion
  amplitude) and on the diffusion timestep;
* sampling runs the network ``steps`` times (1, 2 or 4; the step loop is here, the noise is an input
  of the graph): x starts as seeded Gaussian noise z; each step predicts the clean chunk x0, and
  the next step re-noises it along the same z direction (deterministic DDIM update).

The noise of chunk ``k`` comes from ``numpy.random.PCG64([seed, k])``, and the audio rows pass through
one sequential level normaliser (:class:`FeaturePrep`), so the motion is a pure function of the
feature rows, the seed, the controls and the step count: any push sizes, offline or live, give the
same rows. A chunk is emitted once its lookahead rows have arrived, so ``lookahead_frames`` (the
rows beyond a frame needed before it is out, at worst) is ``hop - 1 + lookahead``.

The lips shut on bilabials by the closure net's probability (an audio-only classifier in the
same graph): where it passes the calibrated threshold at a peak (:func:`closure_peaks`: the net
also estimates the frame after the chunk, from the lookahead audio, so the peak test adds no delay),
mouthClose is raised (:func:`shut_lips`).

The model file is ``engine/assets/backbone.onnx`` (or ``$EMOTE_BACKBONE_MODEL``); its metadata
(``emote_backbone`` JSON) gives the window sizes, feature and channel names and the step schedules.
A split model (engine.training.split; the shipped one is) keeps what depends only on the chunk's
audio, past motion and controls (the audio encoder, the cross-attention keys and values, the closure
net) in a second file beside it, ``backbone.cond.onnx``, run once a chunk; the step graph runs at
every step. Retrain it with ``python -m emote.engine.training.train_backbone`` (needs the ``train``
extra; see engine/assets/BACKBONE_MODEL_CARD.md for the whole sequence).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import motion as M
from .audio import SCALAR_FEATURES, feature_names
from .exceptions import ConfigError, ModelFileError
from .generator import CONTROLS, MotionGenerator, register_generator

__all__ = ["MODEL_ENV", "default_model_path", "FeaturePrep", "BackboneSettings", "BackboneModel",
           "BackboneGenerator", "seam_stats", "shut_lips", "closure_peaks", "copy_model", "CONTROL_ORDER", "SILENT_ROW"]

MODEL_ENV = "EMOTE_BACKBONE_MODEL"
RETRAIN = ".venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[train]' && " \
          ".venv/bin/python -m emote.engine.training.train_backbone"
#: Order of the controls in the model's ``controls`` input.
CONTROL_ORDER: tuple[str, ...] = ("expression_intensity", "head_motion_speed", "head_motion_amplitude")

_NS = len(SCALAR_FEATURES)
_E, _EMIN, _EMAX, _F0, _VOI, _CEN, _FLAT, _BLOW, _BMID, _BHIGH, _F1, _F2 = range(12)
#: FeatureStream's row for digital silence (the 40 mel bands at their floor, ln 1e-10).
SILENT_ROW = np.array([-100.0, -100.0, -100.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
                      + [math.log(1e-10)] * 40, np.float32)
_LN_PER_DB = math.log(10.0) / 10.0
_JAW = M.INDEX["jawOpen"]
_CLOSE = M.INDEX["mouthClose"]
_MOUTH = np.asarray(M.idx(*M.MOUTH), np.intp)
_BLINKS = np.asarray(M.idx("eyeBlinkLeft", "eyeBlinkRight"), np.intp)
#: the head smoother's time constant (s) for models without a calibrated one (``head_tau_s``)
HEAD_TAU_S = 0.1


def default_model_path() -> Path:
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "assets" / "backbone.onnx"


class FeaturePrep:
    """Feature rows (n, 12 + n_mels) -> model inputs (n, 13 + n_mels, or 13 + 2 n_mels with
    ``spectral_norm``), sequentially, one row at a time.

    Level-independent: energies and mel bands are taken relative to a running speech peak (which
    jumps up to any louder frame and relaxes 3 dB/s while it is above the silence gate, starting
    at -30 dBFS), clipped; pitch becomes log2(f0/100) (0 when unvoiced), frequencies kHz.
    ``spectral_norm`` appends the mel bands minus their running mean over speech frames (a
    one-pole average of time constant ``norm_tau_s``, updated only above the silence gate):
    the voice's and the microphone's own spectral tilt cancel out (cepstral mean normalisation,
    in the log-mel domain), so an unknown voice or channel looks more like the voices trained on.
    A row's output depends only on it and the rows before it, so batching never changes anything.
    """

    def __init__(self, fps: float = 25.0, n_mels: int = 40, spectral_norm: bool = False,
                 norm_tau_s: float = 2.0) -> None:
        self.decay_db = 3.0 / float(fps)
        self.n_mels = n_mels
        self.spectral_norm = bool(spectral_norm)
        self.norm_alpha = 1.0 - math.exp(-1.0 / (float(fps) * norm_tau_s))
        self.reset()

    @property
    def width(self) -> int:
        return _NS + 1 + self.n_mels * (2 if self.spectral_norm else 1)

    def reset(self) -> None:
        self.peak = -30.0
        self.mean: np.ndarray | None = None

    def _normalised(self, mel: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """(n, n_mels) log-mel rows (ln power), (n,) speech gate -> the rows minus the running mean
        of the speech rows before and at them (0 before the first speech row), clipped, /4."""
        out = np.zeros_like(mel)
        m = self.mean
        for i in range(len(mel)):
            if speech[i]:
                m = mel[i].copy() if m is None else m + self.norm_alpha * (mel[i] - m)
            if m is not None:
                out[i] = mel[i] - m
        self.mean = m
        return np.clip(out, -8.0, 8.0) / 4.0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        f = np.asarray(rows, np.float64)
        n = f.shape[0]
        out = np.zeros((n, self.width), np.float32)
        if n == 0:
            return out
        peaks = np.empty(n)
        p = self.peak
        for i, e in enumerate(f[:, _EMAX].tolist()):
            if e > -60.0:
                p = e if e > p else max(e, p - self.decay_db)
            peaks[i] = p
        self.peak = p
        rel = lambda x: np.clip(x - peaks, -60.0, 6.0) / 20.0          # noqa: E731
        out[:, 0] = rel(f[:, _E])
        out[:, 1] = rel(f[:, _EMIN])
        out[:, 2] = rel(f[:, _EMAX])
        f0 = f[:, _F0]
        out[:, 3] = np.where(f0 > 0.0, np.log2(np.maximum(f0, 1.0) / 100.0), 0.0)
        out[:, 4] = f[:, _VOI]
        out[:, 5] = f[:, _CEN] / 1000.0
        out[:, 6] = f[:, _FLAT]
        out[:, 7:10] = f[:, _BLOW:_BHIGH + 1]
        out[:, 10] = f[:, _F1] / 1000.0
        out[:, 11] = f[:, _F2] / 1000.0
        out[:, 12] = (np.clip(f[:, _E], -100.0, 0.0) + 50.0) / 25.0        # absolute level, for silence
        mel = f[:, _NS:_NS + self.n_mels]
        out[:, 13:13 + self.n_mels] = np.clip(mel - (peaks * _LN_PER_DB)[:, None], -16.0, 3.0) / 4.0
        if self.spectral_norm:
            out[:, 13 + self.n_mels:] = self._normalised(mel, f[:, _EMAX] > -60.0)
        return out


@dataclass(frozen=True)
class BackboneSettings:
    """Run-time settings: ``steps`` 1, 2 or 4 (those the model was distilled for), ``threads`` for
    ONNX Runtime (default 1), ``provider`` to force one (see kernels.onnx). ``mouth_noise``: scale of
    the sampling noise on the mouth channels (0: the mouth follows the audio alone, the same for every
    seed, and tracks it better, measured: held-out openness r 0.44 -> 0.56, seed-to-seed jaw r 0.54 ->
    0.94; 1: the sampler's full noise). Head, brows, blinks and gaze keep their noise: the seed
    varies them."""
    fps: float = 25.0
    seed: int = 0
    steps: int = 2
    model_path: str | None = None
    threads: int | None = None
    provider: str | None = None
    mouth_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.mouth_noise) <= 1.0:
            raise ConfigError(f"BackboneSettings.mouth_noise={self.mouth_noise!r}: must be in 0..1")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"BackboneSettings.seed={self.seed!r}: must be an integer >= 0")
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ConfigError(f"BackboneSettings.steps={self.steps!r}: must be an integer >= 1")


class BackboneModel:
    """The ONNX file, its metadata and one denoising call. Shared by generators (sessions are cached).

    Two layouts: a whole graph run at every step, or (``split``: metadata ``cond_model``, made by
    engine.training.split) a step graph plus a cond graph beside it that holds everything depending
    only on audio/past/controls and runs once a chunk. ``session`` is the per-step session either way,
    ``cond_session`` the per-chunk one (None for a whole graph); ``outputs`` the model's outputs
    (x0, motion and, with a closure head, closure) in both layouts.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None,
                 provider: str | None = None) -> None:
        p = Path(path) if path is not None else default_model_path()
        if not p.is_file():
            raise ModelFileError(
                f"backbone weights not found at {p}: train them with `{RETRAIN}` (writes "
                f"engine/assets/backbone.onnx), set ${MODEL_ENV} to a model file, or use --generator baseline")
        from emote.kernels.onnx import session
        self.path = p
        self.session = session(p, threads=threads, provider=provider)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "emote_backbone" not in meta:
            raise ModelFileError(f"{p} is not an emote backbone model (no emote_backbone metadata)")
        self.meta = m = json.loads(meta["emote_backbone"])
        self.hop, self.context, self.lookahead, self.past = (int(m[k]) for k in ("hop", "context", "lookahead", "past"))
        self.fps = float(m["fps"])
        if tuple(m["channels"]) != M.NAMES:
            raise ModelFileError(f"{p} was trained for other motion channels than engine.motion's: retrain it")
        if tuple(m["features"]) != feature_names(int(m["n_mels"])):
            raise ModelFileError(f"{p} was trained on other audio features than engine.audio's: retrain it")
        self.n_mels = int(m["n_mels"])
        #: FeaturePrep's spectral_norm (models trained with train_backbone --spectral-norm)
        self.spectral_norm = bool(m.get("spectral_norm", False))
        self.schedules: dict[int, list[tuple[float, float]]] = {int(k): [(float(t), float(a)) for t, a in v]
                                                                  for k, v in m["schedules"].items()}
        self.window = self.context + self.hop + self.lookahead
        #: jawOpen gain that matches the model's spread of openness to its data's (a few-step sampler
        #: under-articulates: it pulls towards the mean); calibrated after training, 1 if absent.
        self.articulation_gain = float(m.get("articulation_gain", 1.0))
        #: per head channel (engine.motion's "head" group, in order): the gain after the head
        #: smoother that brings the model's std and speed to the data's (the sampler shrinks head
        #: motion too; engine.training.calibrate.head_gains); 1 if absent.
        self.head_gain = np.asarray(m.get("head_gain", [1.0] * len(M.HEAD)), np.float64)
        #: per head channel: the head smoother's time constant (s), calibrated as the least smoothing
        #: that leaves the head no rougher than the data's (HeadSmoother); 0.1 s if absent.
        self.head_tau_s = np.asarray(m.get("head_tau_s", [HEAD_TAU_S] * len(M.HEAD)), np.float64)
        #: whether the head smoother's chunk-flicker notch runs first (calibrated models since
        #: session 7); False if absent
        self.head_notch = bool(m.get("head_notch", False))
        #: mouthClose quantile map (model's quantiles -> the data's, from held-out speech): the
        #: sampler leaves a short bilabial closure half shut; a monotone map restores the data's
        #: spread of lip closure, keeping the model's ranking. Absent: identity.
        cm = m.get("mouth_close_map")
        self.close_map = None if not cm else (np.asarray(cm[0], np.float64), np.asarray(cm[1], np.float64))
        #: the same kind of quantile map for the eyelids (both eyeBlink channels): a few-step sampler
        #: leaves many blinks half shut, which the renderer shows as a twitch, not a blink. Absent: identity.
        bm = m.get("blink_map")
        self.blink_map = None if not bm else (np.asarray(bm[0], np.float64), np.asarray(bm[1], np.float64))
        #: the per-step session's outputs (the whole graph's: x0, motion[, closure]; a step graph's: x0, motion)
        self.step_outputs = [o.name for o in self.session.get_outputs()]
        self.split = "cond_model" in m
        self.cond_session = None
        self.cond_outputs: list[str] = []         # the cond tensors the step graph reads
        self.cond_path: Path | None = None
        self.cond_session_outputs: list[str] = []
        self._step_feeds: list[str] = []          # the step graph's inputs besides x and t
        chunk_outputs = self._load_cond(m, threads, provider) if self.split else []
        self.outputs = self.step_outputs + chunk_outputs
        #: the closure head (ModelConfig.closure_head): an output ``closure`` of per-frame logits that
        #: the lips are shut, and the probability above which the runtime shuts them, calibrated on
        #: validation speech (None: the head is present but uncalibrated, or absent: not used).
        self.has_closure = "closure" in self.outputs
        ct = m.get("closure_threshold")
        self.closure_threshold = float(ct) if (ct is not None and self.has_closure) else None

    def sample(self, audio: np.ndarray, past: np.ndarray, controls: np.ndarray, z: np.ndarray,
               steps: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One chunk: audio (W, P) prepared rows, past (K, C) motion, controls (3,), z (hop, C) noise
        -> ((hop, C) motion (unclipped), (F,) probability that the lips are shut, or None without a
        closure head). Few-step sampling along z (module docstring). F is hop, or hop + 1 for a
        closure net that also estimates the frame after the chunk (its first lookahead frame), which
        the generator's peak rule reads (closure_peaks)."""
        sched = self.schedules[steps]
        feeds = {"audio": audio[None].astype(np.float32), "past": past[None].astype(np.float32),
                 "controls": controls[None].astype(np.float32)}
        logits = None
        if self.split:                             # the chunk-constant part, once a chunk
            names = self.cond_session_outputs
            have = {**feeds, **dict(zip(names, self.cond_session.run(names, feeds)))}
            feeds = {k: have[k] for k in self._step_feeds}
            logits = have.get("closure")
        x = z.astype(np.float32)
        motion, rest = None, []
        for i, (t, ab) in enumerate(sched):
            feeds["x"] = x[None]
            feeds["t"] = np.array([t], np.float32)
            x0, motion, *rest = self.session.run(self.step_outputs, feeds)
            if i + 1 < len(sched):
                ab_next = sched[i + 1][1]
                eps = (x - math.sqrt(ab) * x0[0]) / math.sqrt(max(1.0 - ab, 1e-12))
                x = (math.sqrt(ab_next) * x0[0] + math.sqrt(1.0 - ab_next) * eps).astype(np.float32)
        # the closure logits come from the audio alone: the same at every step, so the last run's
        # (a whole graph) or the cond graph's (a split one)
        logits = rest[0] if rest else logits
        closure = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64))) if logits is not None else None
        return motion[0], closure

    def _load_cond(self, m: dict, threads: int | None, provider: str | None) -> list[str]:
        """A split model: open the cond file named by the metadata beside the step file, after
        checking its sha256; set cond_session, cond_outputs and the step feeds. Returns the model
        outputs that come from the cond graph (closure, if the model has one)."""
        from emote.kernels.onnx import session
        name = str(m["cond_model"])
        redo = (f"copy the {name} that was made with {self.path.name} beside it, or split the whole model "
                f"again (python -m emote.engine.training.split)")
        if Path(name).name != name or name in ("", ".", ".."):
            raise ModelFileError(f"{self.path}: cond_model {name!r} must be a file name beside the model: {redo}")
        self.cond_path = cp = self.path.with_name(name)
        if not cp.is_file():
            raise ModelFileError(f"{self.path} is a split backbone but its per-chunk part {cp} is missing: {redo}")
        sha = hashlib.sha256(cp.read_bytes()).hexdigest()
        if sha != m.get("cond_sha256"):
            raise ModelFileError(f"{cp} does not belong to {self.path} (sha256 {sha[:12]}..., the model expects "
                                 f"{str(m.get('cond_sha256'))[:12]}...): {redo}")
        self.cond_session = session(cp, threads=threads, provider=provider)
        self.cond_outputs = [str(o) for o in m.get("cond_outputs", [])]
        self.cond_session_outputs = [o.name for o in self.cond_session.get_outputs()]
        self._step_feeds = [i.name for i in self.session.get_inputs() if i.name not in ("x", "t")]
        known = set(self.cond_session_outputs) | {"audio", "past", "controls"}
        missing = [k for k in self._step_feeds if k not in known] + \
                  [k for k in self.cond_outputs if k not in self.cond_session_outputs]
        if missing:
            raise ModelFileError(f"{self.path} and {cp} do not fit together (no tensor {missing[0]!r}): {redo}")
        return [o for o in self.cond_session_outputs if o not in self.cond_outputs]


class HeadSmoother:
    """The head pose out of the backbone, made steady and scaled: per frame, in order,
    ``y = rest + amplitude * ease * gain * lowpass(notch(x - rest))`` on the head channels (``ease``
    rises from 0 to 1 over ``start_ease_s``, as the baseline's: a stream starts at the photo's pose;
    the gaze eases in too) (engine.motion's "head" group:
    degrees, face widths, scale), a one-pole low-pass of time constant ``tau_s`` (s; one for all
    channels, or one per head channel; 0: none). ``notch`` (models calibrated with it: metadata
    ``head_notch``) first applies the causal 3-tap binomial filter (x[n] + 2 x[n-1] + x[n-2]) / 4:
    zero gain at half the frame rate, where a 2-frame-chunk sampler's flicker sits, and one frame
    of delay; for the same smoothness it keeps more of the head's speed than a low-pass alone
    (measured: roll 0.86 of the data's speed against 0.72).

    Why: a few-step sampler redraws the head's fine detail every chunk, a flicker of about 0.1 deg a
    frame that the renderer shows as shimmer at the hair line; the low-pass takes it out (100 ms of
    lag on slow head motion is invisible). A model's calibration (engine.training.calibrate) gives
    each channel the shortest time constant that leaves it no rougher than the data's head (RMS of
    the frame-to-frame change of velocity), so the head keeps the data's speed where the sampler
    allows. The head-motion amplitude control is applied here, exactly,
    instead of by the network (which learned it only weakly from the data engine's clips).
    Sequential and stateful: the output does not depend on how the frames are batched.
    """

    def __init__(self, fps: float, tau_s: float | np.ndarray = HEAD_TAU_S, gain: np.ndarray | None = None,
                 start_ease_s: float = 2.0, notch: bool = False) -> None:
        self.idx = np.asarray(M.idx(*M.HEAD), np.intp)
        self.rest = M.rest(1)[0, self.idx]
        self.gaze = np.asarray(M.idx(*M.GAZE), np.intp)
        self.gaze_rest = M.rest(1)[0, self.gaze]
        self.gain = np.ones(len(self.idx)) if gain is None else np.asarray(gain, np.float64)
        self.ease_frames = max(1.0, start_ease_s * fps)
        self.n = 0
        tau = np.broadcast_to(np.asarray(tau_s, np.float64), (len(self.idx),))
        if np.any(tau < 0) or not np.all(np.isfinite(tau)):
            raise ConfigError(f"HeadSmoother tau_s={tau_s!r}: every time constant must be >= 0 (0: no low-pass)")
        self.alpha = 1.0 - np.exp(-1.0 / (fps * np.maximum(tau, 1e-12)))    # tau 0: alpha 1, no low-pass
        self.notch = bool(notch)
        self.state: np.ndarray | None = None
        self.x1: np.ndarray | None = None        # the notch's last input
        self.x2: np.ndarray | None = None        # and the one before it

    def reset(self) -> None:
        self.state = None
        self.x1 = self.x2 = None
        self.n = 0

    def __call__(self, motion: np.ndarray, amplitude: float) -> np.ndarray:
        """motion: (n, C) float32 -> (n, C) float32 with the head channels smoothed and scaled."""
        out = motion.copy()
        for i in range(len(motion)):
            x = motion[i, self.idx] - self.rest
            if self.notch:
                if self.x1 is None:
                    self.x1 = self.x2 = x
                x, self.x1, self.x2 = 0.25 * (x + 2.0 * self.x1 + self.x2), x, self.x1
            self.state = x if self.state is None else self.state + self.alpha * (x - self.state)
            e = min(1.0, self.n / self.ease_frames)
            ease = e * e * (3.0 - 2.0 * e)             # smoothstep: a new stream starts at the photo's pose
            self.n += 1
            out[i, self.idx] = self.rest + amplitude * ease * self.gain * self.state
            out[i, self.gaze] = self.gaze_rest + ease * (motion[i, self.gaze] - self.gaze_rest)
        return out


class BackboneGenerator(MotionGenerator):
    """Streaming motion from the distilled diffusion backbone (see the module docstring).

    ``BackboneGenerator(BackboneSettings(...))`` or ``make_generator("backbone", seed=3, steps=4)``.
    """

    def __init__(self, settings: BackboneSettings = BackboneSettings(), model: BackboneModel | None = None,
                 head_smoother=None) -> None:
        """``head_smoother``: replaces the model's HeadSmoother (a callable (motion (n, C), head-motion
        amplitude) -> motion with a ``reset()``; engine.training.calibrate passes a pass-through to
        see the network's own head)."""
        if not isinstance(settings, BackboneSettings):
            raise ConfigError(f"BackboneGenerator needs BackboneSettings, got {type(settings).__name__}")
        self.model = model or BackboneModel(settings.model_path, settings.threads, settings.provider)
        m = self.model
        if abs(float(settings.fps) - m.fps) > 1e-6:
            raise ConfigError(f"the backbone model runs at {m.fps:g} fps, not {settings.fps:g}: "
                              f"use --fps {m.fps:g} or --generator baseline")
        if settings.steps not in m.schedules:
            have = [str(k) for k in sorted(m.schedules)]
            choice = " or ".join([", ".join(have[:-1]), have[-1]] if len(have) > 1 else have)
            raise ConfigError(f"the backbone model has schedules for {', '.join(have)} steps, not {settings.steps}: "
                              f"pass --steps {choice}")
        self.settings = settings
        self.fps = m.fps
        self.hop = m.hop
        self.lookahead_frames = m.hop - 1 + m.lookahead
        self._controls = {k: v[2] for k, v in CONTROLS.items()}
        self._prep = FeaturePrep(m.fps, m.n_mels, m.spectral_norm)
        self._head = head_smoother if head_smoother is not None else HeadSmoother(
            m.fps, tau_s=m.head_tau_s, gain=m.head_gain, notch=m.head_notch)
        self.reset(settings.seed)

    @property
    def controls(self) -> dict[str, float]:
        return dict(self._controls)

    def reset(self, seed: int | None = None) -> None:
        m = self.model
        self.seed = int(self.settings.seed if seed is None else seed)
        self._prep.reset()
        self._head.reset()
        pad = self._prep(np.tile(SILENT_ROW, (m.context, 1)))       # audio before the stream start
        self._rows: list[np.ndarray] = [pad]                           # prepared rows from frame _t - context
        self._n_rows = m.context
        self._past = M.rest(m.past)                                    # motion before the start: the photo
        self._t = 0            # next frame to emit (a multiple of hop until finish)
        self._n_in = 0
        self._k = 0            # next chunk
        self._finished = False
        self._p_before = 0.0   # the closure probability of the last frame emitted

    def set_controls(self, **controls: float) -> None:
        for name, value in controls.items():
            if name not in CONTROLS:
                raise ConfigError(f"unknown control {name!r}; known: {', '.join(CONTROLS)}")
            lo, hi, _ = CONTROLS[name]
            if not lo <= float(value) <= hi:
                raise ConfigError(f"control {name}={value!r} outside {lo}..{hi}")
        for name, value in controls.items():
            self._controls[name] = float(value)

    def push(self, features: np.ndarray) -> None:
        if self._finished:
            raise RuntimeError("push after finish(); call reset() to start a new stream")
        f = np.asarray(features, np.float32)
        width = _NS + self.model.n_mels
        if f.ndim != 2 or f.shape[1] < width:
            raise ValueError(f"features must be (n, {width}) rows from FeatureStream, got shape {f.shape}")
        if f.shape[0]:
            f = np.nan_to_num(f[:, :width], nan=0.0, posinf=0.0, neginf=-100.0)
            self._rows.append(self._prep(f))
            self._n_rows += f.shape[0]
            self._n_in += f.shape[0]

    def _chunks_ready(self) -> int:
        m = self.model
        return max(0, (self._n_in - m.lookahead) // m.hop - self._k)

    def pull(self) -> np.ndarray:
        return self._run(self._chunks_ready(), self._n_in)

    def finish(self) -> np.ndarray:
        if self._finished:
            return np.zeros((0, M.NUM_CHANNELS), np.float32)
        m = self.model
        remaining = self._n_in - self._k * m.hop
        n_chunks = -(-remaining // m.hop) if remaining > 0 else 0
        need = (self._k + n_chunks) * m.hop + m.lookahead - self._n_in
        if need > 0:
            self._rows.append(self._prep(np.tile(SILENT_ROW, (need, 1))))
            self._n_rows += need
        out = self._run(n_chunks, self._n_in)
        self._finished = True
        return out

    def _run(self, n_chunks: int, limit: int) -> np.ndarray:
        if n_chunks <= 0:
            self.last_closure = self.last_closure_drive = np.zeros(0)
            return np.zeros((0, M.NUM_CHANNELS), np.float32)
        m = self.model
        rows = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
        # the amplitude is applied exactly by the head smoother; the network gets its neutral value
        ctrl = np.array([1.0 if k == "head_motion_amplitude" else self._controls[k] for k in CONTROL_ORDER],
                        np.float32)
        outs, shut, after = [], [], []
        for j in range(n_chunks):
            a = j * m.hop                       # rows[0] is frame _k*hop - context
            audio = rows[a:a + m.window]
            z = np.random.Generator(np.random.PCG64([self.seed, self._k])).standard_normal(
                (m.hop, M.NUM_CHANNELS)).astype(np.float32)
            z[:, _MOUTH] *= self.settings.mouth_noise
            chunk, p_shut = m.sample(audio, self._past, ctrl, z, self.settings.steps)
            chunk = M.clip(chunk)
            self._past = np.concatenate([self._past, chunk])[-m.past:]
            outs.append(chunk)
            p_shut = np.zeros(m.hop) if p_shut is None else np.asarray(p_shut, np.float64)
            shut.append(p_shut[:m.hop])
            after.append(np.append(p_shut[1:m.hop], p_shut[m.hop] if len(p_shut) > m.hop else np.nan))
            self._k += 1
        rows = rows[n_chunks * m.hop:]
        self._rows, self._n_rows = [rows], len(rows)
        out = np.concatenate(outs)
        n_out = min(len(out), limit - self._t)
        self._t += n_out
        out = self._head(out[:n_out], self._controls["head_motion_amplitude"])
        out[:, _JAW] = np.clip(out[:, _JAW] * m.articulation_gain, 0.0, 1.0)
        if m.close_map is not None:
            out[:, _CLOSE] = np.interp(out[:, _CLOSE], *m.close_map)
        if m.blink_map is not None:
            out[:, _BLINKS] = np.interp(out[:, _BLINKS], *m.blink_map)
        #: the closure head's probabilities for the frames just returned (zeros without a head)
        self.last_closure = np.concatenate(shut)[:n_out]
        #: what the shut rule reads: the probabilities kept at their peaks only, where the model gives
        #: the next frame's too (closure_peaks), else the probabilities themselves
        self.last_closure_drive = closure_peaks(self.last_closure, self._p_before, np.concatenate(after)[:n_out])
        if n_out:
            self._p_before = float(self.last_closure[-1])
        if m.closure_threshold is not None:
            out[:, _CLOSE] = shut_lips(out[:, _CLOSE], self.last_closure_drive, m.closure_threshold)
        return out


#: mouthClose where the closure head is sure the lips are shut (engine.rig: the lips then close 90 %
#: of their gap, whatever the jaw does), and the width of the probability ramp up to it.
SHUT_CLOSE = 0.9
SHUT_RAMP = 0.1


def shut_lips(close: np.ndarray, p_shut: np.ndarray, threshold: float) -> np.ndarray:
    """mouthClose (n,) raised where the closure head's probability (n,) passes ``threshold``: a
    linear ramp from 0 at threshold - SHUT_RAMP / 2 to SHUT_CLOSE at threshold + SHUT_RAMP / 2
    (a soft edge, so that a probability near the threshold does not flicker); never lowered."""
    s = np.clip((np.asarray(p_shut, np.float64) - threshold) / SHUT_RAMP + 0.5, 0.0, 1.0)
    return np.maximum(close, (SHUT_CLOSE * s).astype(np.float32))


def copy_model(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the backbone model file ``src`` to ``dst`` and, for a split model, its per-chunk part
    (the cond file) beside it under the name the metadata gives: a copy that loads on its own."""
    import shutil
    cond = BackboneModel(src).cond_path
    shutil.copyfile(src, dst)
    if cond is not None:
        shutil.copyfile(cond, Path(dst).with_name(cond.name))
    return Path(dst)


def closure_peaks(p: np.ndarray, before: float, after: np.ndarray) -> np.ndarray:
    """The closure probabilities (n,) of consecutive frames kept only where they peak: p[i] >= the
    frame before (``before`` for i = 0: the last frame already emitted) and >= ``after[i]``, the
    estimate of the frame after it (p[i + 1] inside a chunk; for a chunk's last frame the closure
    net's estimate of the next chunk's first frame, from this chunk's lookahead audio), else 0.
    A model with no next-frame estimate gives ``after`` all NaN: p is returned unchanged (no rule).

    Why: the net's probability rises over two or three frames around a bilabial; shutting the lips
    on every frame above the threshold also shuts them on the shoulders, where a real voice's
    mouth is often already open. Keeping the peak (measured on the held-out voices, session 9)
    trades a little recall for openness r at no added delay."""
    p = np.asarray(p, np.float64)
    after = np.asarray(after, np.float64)
    if p.size == 0 or np.all(np.isnan(after)):
        return p
    prev = np.concatenate([[before], p[:-1]])
    keep = (p >= prev) & ~(p < after)
    return np.where(keep, p, 0.0)


def seam_stats(motion: np.ndarray, hop: int, channels: list[int] | None = None) -> dict[str, float]:
    """How smooth the joins between chunks are.

    The velocity of frame j is ``|x[j+1] - x[j]|`` per channel, divided by the channel's overall
    velocity std. A join lies between frames k*hop - 1 and k*hop. Returns the mean velocity across
    joins (``boundary``), inside chunks (``within``) and their ratio: about 1 (or less) means no
    seam, a chunk stitched on with a step makes the velocity across its join larger. (Velocities,
    not their changes, so that 2-frame chunks, whose every velocity change touches a join, can be
    measured too; ``hop`` 1 has no inside and gives ``within`` and ``ratio`` 0.)
    """
    x = np.asarray(motion, np.float64)
    if channels is not None:
        x = x[:, channels]
    v = np.diff(x, axis=0)
    sd = v.std(axis=0)
    keep = sd > 1e-6
    if len(x) < 3 * hop or not keep.any() or hop < 2:
        return {"boundary": 0.0, "within": 0.0, "ratio": 0.0}
    speed = np.abs(v[:, keep]) / sd[keep]                     # speed[j]: frame j -> j + 1
    across = (np.arange(len(speed)) + 1) % hop == 0
    b, w = float(speed[across].mean()), float(speed[~across].mean())
    return {"boundary": b, "within": w, "ratio": b / max(w, 1e-12)}


def _make_backbone(settings: BackboneSettings | None = None, **kw) -> BackboneGenerator:
    if settings is not None and kw:
        raise ConfigError("make_generator('backbone'): pass either settings= or keyword settings, not both")
    if settings is None:
        known = set(BackboneSettings.__dataclass_fields__)
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ConfigError(f"unknown backbone setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = BackboneSettings(**kw)
    return BackboneGenerator(settings)


register_generator("backbone", _make_backbone)
