"""Training data for the motion backbone: audio feature rows + motion targets per clip.

Two sources, one format (:class:`Clip`):

* ``--data DIR``: the data engine's shards (engine.training.shards: ``manifest.json`` and
  ``shard-*.npz``; ``python -m emote.engine.training.build_data --out DIR``), read by
  :func:`load_shards`; or plain ``*.npz`` files holding ``features`` (n, F) and ``targets``
  (n, engine.motion.NUM_CHANNELS) arrays, or lists of them under ``features_<i>`` / ``targets_<i>``.
* the built-in stop-gap (:func:`make_clips`, used until the shards exist): espeak-ng speech synthesised
  in-process through libespeak-ng (ctypes; phoneme events carry their exact sample positions, so the
  phoneme timing is the audio's own), pseudo-word text in 30+ languages with random speaker variants,
  rates and pitch, -> ``engine.audio.FeatureStream`` rows; motion targets from the phoneme timing
  (:func:`phoneme_targets`): jaw by vowel height, lips pressed on p/b/m, rounding on o/u/w,
  spreading on i/e, lower lip tucked on f/v, with coarticulation by Gaussian smoothing, plus
  stochastic head (Ornstein-Uhlenbeck wander, bigger while speaking, nods), brows, blinks (more at
  pauses) and gaze, driven by the per-clip controls so the model can learn them.

Everything is a pure function of the seed. Data stays out of git: the clips are cached as one
``.npz`` under ``--cache`` (default ``~/.cache/emote/backbone_data``).
"""
from __future__ import annotations

import copy

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emote.engine import motion as M
from emote.engine.audio import AudioSettings, FeatureStream
from emote.engine.training import espeak

__all__ = ["Clip", "Phone", "is_validation", "VALIDATION_MOD", "TRAIN_LANGS", "HELDOUT_LANGS", "TRAIN_VARIANTS", "HELDOUT_VARIANTS",
           "synthesize", "pseudo_text", "phoneme_targets", "make_clips", "derive_controls", "load_shards", "load_or_make"]

ESPEAK_RATE_HZ = 22050
SR, FPS = 16000, 25.0

#: Latin-script espeak-ng voices whose letters make pronounceable pseudo-words.
TRAIN_LANGS = ("en-us", "en", "es", "fr", "de", "pt", "pt-br", "nl", "sv", "da", "nb", "fi", "et", "hu",
               "cs", "sk", "sl", "hr", "ro", "id", "ms", "lv", "eo", "ca", "eu", "cy", "is", "af", "sq", "mt",
               "la", "ia", "haw")
HELDOUT_LANGS = ("it", "pl", "tr", "sw")
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "Andrea", "Alex")
HELDOUT_VARIANTS = ("m7", "f5", "Alicia")


@dataclass(frozen=True)
class Phone:
    name: str
    start_s: float
    end_s: float


@dataclass
class Clip:
    """One utterance: feature rows (n, F) float32, motion targets (n, C) float32, controls (3,)."""
    features: np.ndarray
    targets: np.ndarray
    controls: np.ndarray
    lang: str = ""
    speaker: str = ""
    phones: list[Phone] = field(default_factory=list)
    text: str = ""
    uid: str = ""


# --------------------------------------------------------------------------------------------
# speech: libespeak-ng in-process
# --------------------------------------------------------------------------------------------

def synthesize(text: str, voice: str, rate_wpm: int = 160, pitch: int = 50, pitch_range: int = 50
               ) -> tuple[np.ndarray, list[Phone]]:
    """(float32 mono samples at 16 kHz, phonemes with times in s; espeak-ng mnemonics), through the
    project's one libespeak-ng binding (engine.training.espeak)."""
    from scipy.signal import resample_poly
    try:
        audio, events = espeak.phoneme_events(text, voice, rate_wpm, pitch, pitch_range, ipa=False)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    phones = []
    for k, (s, name) in enumerate(events):
        end = events[k + 1][0] if k + 1 < len(events) else audio.size
        if end > s:
            phones.append(Phone(name, s / ESPEAK_RATE_HZ, end / ESPEAK_RATE_HZ))
    y = resample_poly(audio.astype(np.float64) / 32768.0, 320, 441).astype(np.float32)
    return y, phones


_CONS = "p b m t d k g f v s z l n r h j w ch sh pr br bl pl tr dr st mp mb nd".split()
_VOW = "a e i o u a e o ai au ei ou ia ue".split()


def pseudo_text(rng: np.random.Generator) -> str:
    """A sentence of 5-14 pronounceable pseudo-words (CV(C) syllables), with commas and a stop."""
    words = []
    for _ in range(int(rng.integers(5, 15))):
        syl = []
        for _ in range(int(rng.integers(1, 4))):
            s = ("" if rng.random() < 0.15 else str(rng.choice(_CONS))) + str(rng.choice(_VOW))
            if rng.random() < 0.2:
                s += str(rng.choice(["n", "m", "s", "l", "r", "p", "t"]))
            syl.append(s)
        w = "".join(syl)
        if rng.random() < 0.12:
            w += ","
        words.append(w)
    words[0] = words[0].capitalize()
    return " ".join(words).rstrip(",") + str(rng.choice([".", ".", "?", "!"]))


# --------------------------------------------------------------------------------------------
# targets from phonemes
# --------------------------------------------------------------------------------------------

_VOWEL_START = set("aAeEiIoOuUyYV@03&29W")
_BILABIAL = {"p", "b", "m"}
_LABIODENTAL = {"f", "v"}
_SIBILANT = {"s", "z", "S", "Z", "tS", "dZ", "ts", "dz", "s2", "C", "c", "J"}
_C = M.INDEX
#: channel -> index, for the mouth articulation parameters
_JAW, _CLOSE, _FUN, _PUCK, _STR, _SMI, _ROLL = range(7)


def _base(name: str) -> str:
    return name.rstrip(":;#'!,.-").replace("#", "")


def is_vowel(name: str) -> bool:
    return bool(name) and name[0] in _VOWEL_START


def is_bilabial(name: str) -> bool:
    return _base(name) in _BILABIAL


def _phone_params(name: str) -> np.ndarray | None:
    """Articulation targets (jaw, close, funnel, pucker, stretch, smile, roll) of a phoneme, or None for a pause."""
    b = _base(name)
    v = np.zeros(7)
    if not b or b.startswith("_"):
        return None
    if is_vowel(b):
        c = b[0]
        v[_JAW] = 0.62 if c in "aA&" else (0.42 if c in "eEoO03V@29W" else 0.24)
        if len(b) > 1 and b[1] in "IiUu" and c in "aAeEoO":      # diphthongs: start high, glide
            v[_JAW] *= 0.9
        if c in "uUyYw":
            v[_PUCK], v[_FUN] = 0.65, 0.25
        elif c in "oO02W9":
            v[_FUN], v[_PUCK] = 0.55, 0.2
        elif c in "iIeE":
            v[_STR], v[_SMI] = 0.35 if c in "iI" else 0.22, 0.12
        return v
    if b in _BILABIAL:
        v[_CLOSE], v[_JAW] = 1.0, 0.04
    elif b in _LABIODENTAL:
        v[_ROLL], v[_JAW] = 0.75, 0.08
    elif b == "w":
        v[_PUCK], v[_FUN], v[_JAW] = 0.6, 0.3, 0.1
    elif b in _SIBILANT:
        v[_JAW], v[_STR] = 0.07, 0.12
        if b in ("S", "Z", "tS", "dZ"):
            v[_FUN], v[_STR] = 0.35, 0.0
    elif b in ("T", "D"):
        v[_JAW] = 0.15
    elif b in ("h", "x", "X", "H"):
        v[_JAW] = 0.25
    else:
        v[_JAW] = 0.14
    return v


def mouth_params(phones: list[Phone], n_frames: int, fps: float = FPS, jaw_gain: float = 1.0) -> np.ndarray:
    """(n_frames, 7) mouth articulation per frame from phoneme timing, with coarticulation."""
    hz = 400.0
    n = n_frames * int(hz / fps)
    grid = np.zeros((n, 7))
    speaking = np.zeros(n)
    for p in phones:
        a, b = int(round(p.start_s * hz)), int(round(p.end_s * hz))
        a, b = max(0, a), min(n, max(b, a + 1))
        v = _phone_params(p.name)
        if v is None or a >= n:
            continue
        grid[a:b] = v
        speaking[a:b] = 1.0
    from scipy.ndimage import gaussian_filter1d
    out = np.empty_like(grid)
    sig = {_JAW: 0.028, _CLOSE: 0.012, _FUN: 0.045, _PUCK: 0.045, _STR: 0.04, _SMI: 0.05, _ROLL: 0.02}
    for k, s in sig.items():
        out[:, k] = gaussian_filter1d(grid[:, k], s * hz, mode="constant")
    # closures: every bilabial reaches full closure in the frame of its midpoint
    for p in phones:
        if is_bilabial(p.name):
            c = int(round(0.5 * (p.start_s + p.end_s) * hz))
            w = max(2, int(0.5 * (p.end_s - p.start_s) * hz))
            lo, hi = max(0, c - w), min(n, c + w)
            if lo < hi:
                out[lo:hi, _CLOSE] = np.maximum(out[lo:hi, _CLOSE], 1.0)
    out[:, _CLOSE] = np.clip(out[:, _CLOSE] * 1.4, 0.0, 1.0)
    out[:, _JAW] *= jaw_gain * (1.0 - 0.85 * out[:, _CLOSE])
    per = out.reshape(n_frames, -1, 7)
    frame = per.mean(axis=1)
    frame[:, _CLOSE] = per[:, :, _CLOSE].max(axis=1)
    return frame


def _ou(rng: np.random.Generator, n: int, tau_frames: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Ornstein-Uhlenbeck process with per-frame time constant and std ``scale``, smoothed; starts near 0."""
    x = np.zeros(n)
    v = 0.0
    e = rng.standard_normal(n)
    for i in range(1, n):
        a = math.exp(-1.0 / max(tau_frames[i], 1.0))
        v = a * v + math.sqrt(1.0 - a * a) * e[i]
        x[i] = v
    # smoothing (160 ms) so the head drifts without jitter, rescaled to keep the stationary std
    from scipy.ndimage import gaussian_filter1d
    y = gaussian_filter1d(x, 4.0, mode="nearest")
    return y * (x.std() / max(y.std(), 1e-9)) * scale


def _bump(n: int, at: int, rise: float, fall: float) -> np.ndarray:
    t = np.arange(n) - at
    y = np.where(t < 0, np.exp(-(t / rise) ** 2), np.exp(-(t / fall) ** 2))
    return y


def phoneme_targets(phones: list[Phone], n_frames: int, rng: np.random.Generator, controls: np.ndarray,
                    f0: np.ndarray | None = None, fps: float = FPS) -> np.ndarray:
    """Motion targets (n_frames, C) float32 for a clip.

    ``controls`` = (expression_intensity, head_motion_speed, head_motion_amplitude): intensity scales
    the brows, rounding/spreading and smiles; speed scales the head's time constants; amplitude its size.
    """
    intensity, speed, amp = (float(c) for c in controls)
    mp = mouth_params(phones, n_frames, fps, jaw_gain=float(rng.uniform(0.85, 1.15)))
    out = np.zeros((n_frames, M.NUM_CHANNELS))
    sh = min(1.0, 0.7 + 0.3 * intensity)
    out[:, _C["jawOpen"]] = mp[:, _JAW] * sh
    out[:, _C["mouthClose"]] = mp[:, _CLOSE]
    out[:, _C["mouthFunnel"]] = mp[:, _FUN] * intensity
    out[:, _C["mouthPucker"]] = mp[:, _PUCK] * intensity
    asym = rng.uniform(-0.08, 0.08)
    for side, s in (("Left", 1.0 + asym), ("Right", 1.0 - asym)):
        out[:, _C["mouthStretch" + side]] = mp[:, _STR] * intensity * s
        out[:, _C["mouthSmile" + side]] = mp[:, _SMI] * intensity * s
        out[:, _C["mouthUpperUp" + side]] = 0.25 * mp[:, _JAW] * s
        out[:, _C["mouthLowerDown" + side]] = 0.35 * mp[:, _JAW] * s
    out[:, _C["mouthRollLower"]] = mp[:, _ROLL]
    # speech activity (smoothed), pauses
    speak = np.zeros(n_frames)
    for p in phones:
        if _phone_params(p.name) is not None:
            a, b = int(p.start_s * fps), int(math.ceil(p.end_s * fps))
            speak[max(0, a):min(n_frames, b)] = 1.0
    from scipy.ndimage import gaussian_filter1d
    act = gaussian_filter1d(speak, 10.0, mode="nearest")
    # head: OU wander, bigger while speaking; nods on some stressed-looking vowel onsets
    tau = 1.2 * fps / max(speed, 0.2) * np.ones(n_frames)
    level = amp * (0.35 + 0.65 * act)
    yaw = _ou(rng, n_frames, tau, 3.0 * level)
    pitch = _ou(rng, n_frames, tau, 2.0 * level)
    roll = _ou(rng, n_frames, tau, 1.5 * level)
    brow = np.zeros(n_frames)
    last = -100
    for p in phones:
        if is_vowel(p.name) and (p.end_s - p.start_s) > 0.09:
            i = int(p.start_s * fps)
            if i - last > 8 and rng.random() < 0.3:
                s = rng.uniform(0.5, 1.0)
                pitch += amp * 2.5 * s * _bump(n_frames, i + 2, 2.0, 5.0)
                if rng.random() < 0.6:
                    brow += s * _bump(n_frames, i + 1, 2.0, 7.0)
                last = i
    # a little bob with the jaw
    pitch += amp * 0.8 * gaussian_filter1d(out[:, _C["jawOpen"]], 2.0)
    # ease in from the photo's pose over the first second
    ease = np.clip(np.arange(n_frames) / fps / 1.0, 0.0, 1.0)
    ease = ease * ease * (3.0 - 2.0 * ease)
    yaw, pitch, roll = yaw * ease, pitch * ease, roll * ease
    out[:, _C["headYaw_deg"]], out[:, _C["headPitch_deg"]], out[:, _C["headRoll_deg"]] = yaw, pitch, roll
    out[:, _C["headTx"]] = 0.003 * yaw
    out[:, _C["headTy"]] = 0.0015 * pitch
    brow = np.clip(brow, 0.0, 1.0) * 0.4 * intensity
    out[:, _C["browInnerUp"]] = brow
    out[:, _C["browOuterUpLeft"]] = out[:, _C["browOuterUpRight"]] = 0.7 * brow
    # blinks: hazard 16/min, x4 in the first 600 ms of a pause
    blink = np.zeros(n_frames)
    since = 100
    p_frame = 16.0 / 60.0 / fps
    pause_start = np.zeros(n_frames, bool)
    quiet = 0
    for i in range(n_frames):
        quiet = quiet + 1 if speak[i] == 0 else 0
        pause_start[i] = 0 < quiet <= int(0.6 * fps) and any(speak[max(0, i - 40):i])
    for i in range(n_frames):
        since += 1
        h = p_frame * (4.0 if pause_start[i] else 1.0)
        if since > 10 and rng.random() < h:
            dur = rng.uniform(3.0, 4.0)       # frames (120-160 ms)
            t = np.arange(n_frames) - i
            blink = np.maximum(blink, np.where((t >= -1) & (t <= dur), np.sin(np.pi * np.clip((t + 1) / (dur + 1), 0, 1)), 0))
            since = 0
    out[:, _C["eyeBlinkLeft"]] = out[:, _C["eyeBlinkRight"]] = blink
    # gaze: piecewise-constant targets smoothed (saccades), mostly back to the camera
    gz = np.zeros((n_frames, 2))
    tgt = np.zeros(2)
    for i in range(n_frames):
        if rng.random() < 0.4 / fps:
            tgt = np.zeros(2) if rng.random() < 0.5 else rng.uniform(-1, 1, 2) * np.array([4.0, 2.4])
        gz[i] = tgt
    gz = gaussian_filter1d(gz, 0.8, axis=0, mode="nearest") * ease[:, None]
    out[:, _C["gazeYaw_deg"]], out[:, _C["gazePitch_deg"]] = gz[:, 0], gz[:, 1]
    return M.clip(out.astype(np.float32))


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------

def _features(x: np.ndarray) -> np.ndarray:
    fs = FeatureStream(AudioSettings())
    fs.push(x)
    return np.concatenate([fs.pull(), fs.finish()]).astype(np.float32)


def _one_clip(args) -> Clip:
    seed, langs, variants = args
    rng = np.random.default_rng(seed)
    lang = str(rng.choice(langs))
    var = str(rng.choice(variants))
    voice = lang + ("+" + var if var else "")
    text = " ".join(pseudo_text(rng) for _ in range(int(rng.integers(1, 4))))
    rate = int(rng.integers(120, 260)) if rng.random() < 0.85 else int(rng.integers(260, 380))
    x, phones = synthesize(text, voice, rate, int(rng.integers(25, 80)), int(rng.integers(20, 90)))
    lead, tail = rng.uniform(0.2, 1.0), rng.uniform(0.3, 1.0)
    pre, post = np.zeros(int(lead * SR), np.float32), np.zeros(int(tail * SR), np.float32)
    x = np.concatenate([pre, x, post])
    phones = [Phone(p.name, p.start_s + lead, p.end_s + lead) for p in phones]
    # level and noise augmentation (the live microphone path)
    x = x * np.float32(10.0 ** (rng.uniform(-24.0, 2.0) / 20.0))
    if rng.random() < 0.4:
        snr = rng.uniform(15.0, 45.0)
        rms = float(np.sqrt(np.mean(x ** 2)) + 1e-9)
        x = x + rng.standard_normal(x.size).astype(np.float32) * np.float32(rms * 10.0 ** (-snr / 20.0))
    x = np.clip(x, -1.0, 1.0)
    feats = _features(x)
    controls = np.array([rng.uniform(0.3, 1.7), rng.uniform(0.4, 1.8), rng.uniform(0.3, 1.7)], np.float32)
    if rng.random() < 0.4:
        controls[:] = 1.0
    targets = phoneme_targets(phones, len(feats), rng, controls)
    return Clip(feats, targets, controls, lang, voice, phones, text)


def make_clips(n: int, seed: int = 0, heldout: bool = False, workers: int = 2) -> list[Clip]:
    """``n`` stop-gap clips (see the module docstring); ``heldout`` uses the held-out languages
    and speaker variants only."""
    langs = HELDOUT_LANGS if heldout else TRAIN_LANGS
    variants = HELDOUT_VARIANTS if heldout else TRAIN_VARIANTS
    jobs = [(seed * 1_000_003 + i + (7_777_777 if heldout else 0), langs, variants) for i in range(n)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            return pool.map(_one_clip, jobs, chunksize=8)
    return [_one_clip(j) for j in jobs]


def save_clips(clips: list[Clip], path: Path) -> None:
    arrays = {}
    meta = []
    for i, c in enumerate(clips):
        arrays[f"features_{i}"], arrays[f"targets_{i}"], arrays[f"controls_{i}"] = c.features, c.targets, c.controls
        meta.append({"lang": c.lang, "speaker": c.speaker, "text": c.text,
                     "phones": [(p.name, p.start_s, p.end_s) for p in c.phones]})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=json.dumps(meta), **arrays)
    os.replace(tmp, path)


def _read_npz(path: Path) -> list[Clip]:
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"])) if "meta" in z.files else []
    if isinstance(meta, dict):
        meta = [meta]
    out = []
    if "features" in z.files:
        keys = [("features", "targets", "controls", 0)]
    else:
        idx = sorted(int(k.split("_")[1]) for k in z.files if k.startswith("features_"))
        keys = [(f"features_{i}", f"targets_{i}", f"controls_{i}", i) for i in idx]
    for fk, tk, ck, i in keys:
        m = meta[i] if i < len(meta) else {}
        ctrl = z[ck] if ck in z.files else np.ones(3, np.float32)
        phones = [Phone(str(a), float(b), float(c)) for a, b, c in m.get("phones", [])]
        out.append(Clip(z[fk].astype(np.float32), z[tk].astype(np.float32), ctrl.astype(np.float32),
                        str(m.get("lang", "")), str(m.get("speaker", "")), phones, str(m.get("text", ""))))
    return out


def _load_dataset(d: Path, splits: tuple[str, ...] | None) -> list[Clip]:
    """The data engine's shards (engine.training.shards: manifest.json + shard-*.npz)."""
    from .shards import open_dataset
    ds = open_dataset(d)
    if tuple(ds.channel_names) != M.NAMES:
        raise ValueError(f"{d}: motion channels differ from engine.motion's; rebuild the data")
    out = []
    for u in ds.utterances(with_audio=False, where=lambda m: splits is None or m["split"] in splits):
        m = u.meta
        out.append(Clip(u.features.astype(np.float32), u.targets.astype(np.float32), np.ones(3, np.float32),
                        str(m.get("language", "")), str(m.get("speaker", "")),
                        [Phone(str(a), float(b), float(c)) for a, b, c in m.get("phonemes", [])], str(m.get("text", "")),
                        u.id))
    return out


#: One train-split utterance in VALIDATION_MOD is kept out of training (by a hash of its id), for
#: calibrations that must not see the held-out splits (engine/training/calibrate.py).
VALIDATION_MOD = 20


#: speaker-id prefixes of natural voices: the data engine's real sources and Festival's voices
NATURAL_SPEAKERS = ("asterisk-", "fillets-", "festival-")


def is_natural(clip: Clip) -> bool:
    """Is the clip spoken by a natural voice: a real recording or a Festival voice (made of real
    speakers' recordings), not espeak-ng's formant synthesis (speaker ids "syn07-m7", "en+m3")?"""
    return clip.speaker.startswith(NATURAL_SPEAKERS)


def is_validation(uid: str) -> bool:
    """Is the train-split utterance ``uid`` in the validation set (never trained on)?"""
    import zlib
    return bool(uid) and zlib.crc32(uid.encode()) % VALIDATION_MOD == 0


def warp_voice(features: np.ndarray, formant: float, pitch: float, fmin_hz: float = 20.0,
               fmax_hz: float = 8000.0) -> np.ndarray:
    """Feature rows (n, 12 + n_mels) of engine.audio as if another voice had spoken: its vocal
    tract ``formant`` times as short (formant and mel frequencies x ``formant``: vocal-tract length
    perturbation) and its pitch x ``pitch``. The mel bands are resampled along frequency (ln power,
    linear in band-centre frequency, edges held); f0, centroid, F1 and F2 are scaled (0 stays
    0: unvoiced or none); energies, voicing, flatness and the band fractions are kept. A training
    augmentation: unseen voices differ from the trained ones mostly in these two scales."""
    from emote.kernels.audio import hz_to_mel, mel_to_hz
    x = np.array(features, np.float32, copy=True)
    n_mels = x.shape[1] - 12
    centres = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))[1:-1]
    src = np.clip(centres / float(formant), centres[0], centres[-1])
    j = np.clip(np.searchsorted(centres, src, side="right") - 1, 0, n_mels - 2)   # linear interpolation
    w = (src - centres[j]) / (centres[j + 1] - centres[j])                        # weights, all rows at once
    mel = x[:, 12:].astype(np.float64)
    x[:, 12:] = mel[:, j] * (1.0 - w) + mel[:, j + 1] * w
    x[:, 3] *= float(pitch)
    for col in (5, 10, 11):
        x[:, col] *= float(formant)
    return x


def warp_clips(clips: list[Clip], share: float, seed: int = 0, formant_range: tuple[float, float] = (0.85, 1.18),
               pitch_range: tuple[float, float] = (0.7, 1.45)) -> list[Clip]:
    """A copy of ``clips`` in which a ``share`` of them (chosen at random) speak with a warped
    voice (:func:`warp_voice`: formant and pitch scales log-uniform in their ranges, pitch
    following the formant scale half the time, as a smaller speaker's both rise)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in clips:
        if rng.random() >= share:
            out.append(c)
            continue
        f = float(np.exp(rng.uniform(*np.log(formant_range))))
        p = f ** 2 if rng.random() < 0.5 else float(np.exp(rng.uniform(*np.log(pitch_range))))
        w = copy.copy(c)
        w.features = warp_voice(c.features, f, float(np.clip(p, *pitch_range)))
        out.append(w)
    return out


def derive_controls(clips: list[Clip], fps: float = FPS) -> None:
    """Controls of clips whose data does not record them, measured from their own target motion
    (as EMO's speed buckets are measured from the data), each relative to the median clip (= 1):
    head-motion amplitude (std of the head angles), head-motion speed (mean head angular speed /
    that std) and expression intensity (mean of the brow, rounding and spreading channels while they
    move). Clipped to 0.2..1.9. Changes the clips in place."""
    head = M.idx("headYaw_deg", "headPitch_deg", "headRoll_deg")
    expr = M.idx("browInnerUp", "browOuterUpLeft", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthSmileLeft")
    raw = []
    for c in clips:
        h = c.targets[:, head].astype(np.float64)
        amp = float(h.std(axis=0).mean()) + 1e-6
        speed = float(np.abs(np.diff(h, axis=0)).mean() * fps) / amp if len(h) > 1 else 1.0
        e = c.targets[:, expr].astype(np.float64)
        inten = float(e.max(axis=0).mean()) + 1e-6
        raw.append((inten, speed, amp))
    raw = np.array(raw)
    ref = np.median(raw, axis=0)
    for c, r in zip(clips, raw):
        c.controls = np.clip(r / ref, 0.2, 1.9).astype(np.float32)


def load_shards(directory: str | os.PathLike, splits: tuple[str, ...] | None = None) -> list[Clip]:
    """Every clip of a data set: the data engine's (``manifest.json`` present; ``splits`` selects
    them, e.g. ``("train",)``), else the ``*.npz`` files under ``directory`` (module docstring).
    Clips from the data engine get controls measured from their targets (:func:`derive_controls`)."""
    d = Path(directory)
    if (d / "manifest.json").is_file():
        clips = _load_dataset(d, splits)
        derive_controls(clips)
        return clips
    files = sorted(d.rglob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no .npz shards under {d}")
    clips = [c for f in files for c in _read_npz(f)]
    for c in clips:
        if c.targets.shape != (len(c.features), M.NUM_CHANNELS):
            raise ValueError(f"shard clip with features {c.features.shape} and targets {c.targets.shape}: "
                             f"need (n, F) and (n, {M.NUM_CHANNELS})")
    return clips


def load_or_make(n: int, seed: int, heldout: bool, cache: str | os.PathLike | None, workers: int = 2) -> list[Clip]:
    """Cached :func:`make_clips`."""
    d = Path(cache or os.environ.get("EMOTE_BACKBONE_DATA", Path.home() / ".cache" / "emote" / "backbone_data"))
    path = d / f"clips_{'heldout' if heldout else 'train'}_{n}_{seed}.npz"
    if path.is_file():
        return _read_npz(path)
    clips = make_clips(n, seed, heldout, workers)
    save_clips(clips, path)
    return clips
