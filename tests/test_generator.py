"""engine.generator: the baseline motion generator on real speech in several languages."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from emote.engine import motion as M
from emote.engine.audio import FEATURE_NAMES, FeatureStream, load_audio
from emote.engine.exceptions import ConfigError
from emote.engine.generator import (CONTROLS, BaselineGenerator, BaselineSettings, MotionGenerator,
                                    available_generators, make_generator, register_generator)

import speech as sp

SR, FPS, SPF = 16000, 25.0, 640
JAW, CLOSE = M.INDEX["jawOpen"], M.INDEX["mouthClose"]
MOUTH = M.idx(*M.MOUTH)
HEAD = M.idx(*M.HEAD)
LO = np.array([c.lo for c in M.CHANNELS], np.float32)
HI = np.array([c.hi for c in M.CHANNELS], np.float32)


def feats(x: np.ndarray) -> np.ndarray:
    fs = FeatureStream()
    fs.push(x)
    return np.concatenate([fs.pull(), fs.finish()])


def run(rows: np.ndarray, gen: MotionGenerator | None = None, **controls) -> np.ndarray:
    g = gen or make_generator()
    if controls:
        g.set_controls(**controls)
    g.push(rows)
    return np.concatenate([g.pull(), g.finish()])


def padded(x: np.ndarray, before_s: float = 1.0, after_s: float = 1.0) -> np.ndarray:
    return np.concatenate([np.zeros(int(before_s * SR), np.float32), x, np.zeros(int(after_s * SR), np.float32)])


needs_phonemes = pytest.mark.skipif(not sp.have_phonemes(), reason="libespeak-ng is not loadable")


@pytest.fixture(scope="module")
def clip_rows(speech_clips):
    """Per language: (features, motion) of the sentence with 1 s of silence on both sides."""
    out = {}
    for lang, clip in speech_clips.items():
        rows = feats(padded(clip.samples))
        out[lang] = (rows, run(rows))
    return out


# ------------------------------------------------------------------------------------------
# interface
# ------------------------------------------------------------------------------------------

def test_registry_and_settings():
    g = make_generator()
    assert isinstance(g, BaselineGenerator) and isinstance(g, MotionGenerator)
    assert g.fps == 25.0 and g.lookahead_frames == 2 and "baseline" in available_generators()
    assert make_generator("baseline", seed=7, blink_rate_per_min=10).settings.seed == 7
    assert make_generator("baseline", settings=BaselineSettings(lookahead_frames=0)).lookahead_frames == 0
    with pytest.raises(ConfigError, match="unknown motion generator"):
        make_generator("nope")
    with pytest.raises(ConfigError, match="unknown baseline setting"):
        make_generator("baseline", blink_rate=3)
    for bad in (dict(fps=0), dict(lookahead_frames=-1), dict(jaw_attack_ms=0), dict(blink_min_ms=200),
                dict(head_yaw_amplitude_deg=45), dict(silence_db=0)):
        with pytest.raises(ConfigError):
            BaselineSettings(**bad)
    register_generator("test-double", lambda **kw: BaselineGenerator(BaselineSettings(**kw)))
    assert isinstance(make_generator("test-double", seed=1), BaselineGenerator)


def test_controls_are_validated():
    g = make_generator()
    assert set(g.controls) == set(CONTROLS)
    g.set_controls(expression_intensity=2.0, head_motion_speed=0.0, head_motion_amplitude=1.5)
    with pytest.raises(ConfigError, match="unknown control"):
        g.set_controls(smile=1)
    with pytest.raises(ConfigError, match="outside"):
        g.set_controls(expression_intensity=3)
    assert g.controls["expression_intensity"] == 2.0          # a failed call changes nothing


def test_rows_in_equal_rows_out_with_lookahead(clip_rows):
    rows, _ = clip_rows["en"]
    g = make_generator()
    g.push(rows[:10])
    assert len(g.pull()) == 8                                   # 2 frames of lookahead
    g.push(rows[10:])
    assert len(g.pull()) == len(rows) - 10
    assert len(g.finish()) == 2 and g.frames_out == len(rows) and len(g.finish()) == 0
    with pytest.raises(RuntimeError):
        g.push(rows[:1])
    with pytest.raises(ValueError):
        make_generator().push(np.zeros((3, 5), np.float32))


def test_outputs_are_float32_and_in_range(clip_rows):
    for rows, motion in clip_rows.values():
        assert motion.shape == (len(rows), M.NUM_CHANNELS) and motion.dtype == np.float32
        assert np.isfinite(motion).all()
        assert np.all(motion >= LO) and np.all(motion <= HI)


# ------------------------------------------------------------------------------------------
# mouth
# ------------------------------------------------------------------------------------------

@needs_phonemes
@pytest.mark.parametrize("lang", list(sp.SENTENCES))
def test_phoneme_timing_matches_the_cli_audio(speech_clips, lang):
    """The reference timing (libespeak-ng events) lines up with the CLI's wav, within a frame."""
    clip = speech_clips[lang]
    phs = sp.phonemes(clip.text, clip.voice)
    spoken = [p for p in phs if not p.name.startswith("_")]
    env = sp.speech_envelope(clip.samples, SR, FPS)
    onset = np.flatnonzero(env > 0.1)[0] / FPS
    assert abs(onset - spoken[0].start_s) <= 1.5 / FPS
    assert spoken[-1].end_s <= clip.samples.size / SR + 1 / FPS
    for p in phs:                                   # long pauses inside the sentence are quiet
        if p.name.startswith("_") and p.end_s - p.start_s > 0.15 and p is not phs[-1]:
            mid = int((p.start_s + p.end_s) / 2 * FPS)
            assert env[mid] < 0.3

@needs_phonemes
@pytest.mark.parametrize("lang", list(sp.SENTENCES))
def test_jaw_follows_speech(speech_clips, clip_rows, lang):
    clip = speech_clips[lang]
    rows, motion = clip_rows[lang]
    jaw = motion[:, JAW]
    env = sp.speech_envelope(padded(clip.samples), SR, FPS)
    assert np.corrcoef(jaw, env)[0, 1] >= 0.6
    ref = sp.phoneme_openness(sp.phonemes(clip.text, clip.voice), len(jaw) - 25)
    ref = np.concatenate([np.zeros(25), ref])                    # 1 s of leading silence
    assert np.corrcoef(jaw, ref)[0, 1] >= 0.6
    speaking = env > 0.5
    assert 0.3 < np.percentile(jaw[speaking], 90) <= 0.8         # visibly open, never gaping


@pytest.mark.parametrize("lang", list(sp.SENTENCES))
def test_mouth_rests_in_silence(speech_clips, clip_rows, lang):
    rows, motion = clip_rows[lang]
    n = len(speech_clips[lang].samples) // SPF
    lead = motion[:25 - 3, MOUTH]                        # before the speech (minus the lookahead)
    tail = motion[25 + n + 10:, MOUTH]                   # from 0.4 s after the speech ends
    assert (lead == 0).all() and (tail == 0).all()
    assert motion[25:25 + n, JAW].max() > 0.3


def test_jaw_is_level_independent_and_ignores_noise(speech_clips, clip_rows):
    clean = clip_rows["de"][1]
    x = padded(speech_clips["de"].samples)
    noise = 10 ** (-55 / 20) * np.random.default_rng(4).standard_normal(x.size)
    quiet = run(feats((0.1 * x + noise).astype(np.float32)))            # -20 dB speech in -55 dBFS hiss
    assert np.corrcoef(quiet[:, JAW], clean[:, JAW])[0, 1] > 0.9
    assert abs(quiet[:, JAW].max() - clean[:, JAW].max()) < 0.1
    assert (quiet[:22, MOUTH] == 0).all() and (quiet[-12:, MOUTH] == 0).all()


def test_mouth_rests_in_room_noise():
    rng = np.random.default_rng(3)
    noise = (10 ** (-60 / 20) * rng.standard_normal(10 * SR)).astype(np.float32)   # -60 dBFS hiss
    motion = run(feats(noise))
    assert (motion[:, MOUTH] == 0).all()
    assert (run(feats(np.zeros(3 * SR, np.float32)))[:, MOUTH] == 0).all()


@needs_phonemes
@pytest.mark.parametrize("lang", list(sp.SENTENCES))
def test_lips_close_on_bilabials(speech_clips, clip_rows, lang):
    clip = speech_clips[lang]
    rows, motion = clip_rows[lang]
    close = motion[:, CLOSE]
    phs = sp.phonemes(clip.text, clip.voice)
    near = np.zeros(len(close), bool)
    hits = total = 0
    for k, p in enumerate(phs):
        if not sp.is_bilabial(p.name):
            continue
        a, b = 25 + int(p.start_s * FPS) - 3, 25 + int(np.ceil(p.end_s * FPS)) + 1   # closure precedes the release
        near[a:b] = True
        after_speech = k > 0 and not phs[k - 1].name.startswith("_")
        if after_speech:
            total += 1
            hits += close[a:b].max() > 0.5
    speech = rows[:, 0] > -45
    far = speech & ~near
    assert total >= 4 and hits >= 0.6 * total, f"{hits}/{total} bilabials closed the lips"
    assert close[near].mean() > 1.25 * close[far].mean()
    assert np.mean(close[far] > 0.5) < 0.25


def test_rounding_and_spreading_follow_vowels(tmp_path):
    if not sp.have_espeak():
        pytest.skip("espeak-ng is not installed")
    shapes = {}
    for word in ("who", "he"):
        motion = run(feats(padded(load_audio(sp.make_speech(word, "en", tmp_path / f"{word}.wav")), 0.2, 0.2)))
        shapes[word] = motion.max(axis=0)
    round_ = M.idx("mouthFunnel", "mouthPucker")
    spread = M.idx("mouthStretchLeft", "mouthSmileLeft")
    assert shapes["who"][round_].sum() > 2 * shapes["he"][round_].sum()
    assert shapes["he"][spread].sum() > 2 * shapes["who"][spread].sum()


# ------------------------------------------------------------------------------------------
# head, brows, eyes
# ------------------------------------------------------------------------------------------

def test_determinism_and_seeds(clip_rows):
    rows, motion = clip_rows["de"]
    again = run(rows)
    np.testing.assert_array_equal(motion, again)
    other = run(rows, make_generator(seed=1))
    assert np.abs(other[:, HEAD[:3]] - motion[:, HEAD[:3]]).max() > 0.3      # degrees
    np.testing.assert_array_equal(other[:, MOUTH], motion[:, MOUTH])     # the mouth follows the audio only
    g = make_generator(seed=1)
    run(rows, g)
    g.reset(seed=0)
    np.testing.assert_array_equal(run(rows, g), motion)
    g.reset()                                                            # back to its own seed
    np.testing.assert_array_equal(run(rows, g), other)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=20), st.integers(0, 3))
def test_motion_does_not_depend_on_push_sizes(clip_rows, blocks, seed):
    rows, _ = clip_rows["fr"]
    ref = run(rows, make_generator(seed=seed))
    g, out, pos = make_generator(seed=seed), [], 0
    for size, pull in blocks:
        g.push(rows[pos:pos + size])
        pos += size
        if pull:
            out.append(g.pull())
    g.push(rows[pos:])
    got = np.concatenate(out + [g.pull(), g.finish()])
    np.testing.assert_array_equal(got, ref)


def _long_rows(speech_clips, seconds: float = 60.0) -> np.ndarray:
    """Speech clips separated by 1.5 s pauses, repeated to about ``seconds``."""
    parts, total = [], 0
    while total < seconds * SR:
        for clip in speech_clips.values():
            parts += [clip.samples, np.zeros(int(1.5 * SR), np.float32)]
            total += clip.samples.size + int(1.5 * SR)
    return feats(np.concatenate(parts))


def test_head_motion_is_small_smooth_and_controllable(speech_clips):
    rows = _long_rows(speech_clips, 40)
    m = run(rows)
    yaw, pitch, roll = (m[:, M.INDEX[n]] for n in ("headYaw_deg", "headPitch_deg", "headRoll_deg"))
    for a in (yaw, pitch, roll):
        assert np.abs(a).max() < 8.0 and np.abs(np.diff(a)).max() < 1.0   # a few degrees, no jumps
    assert yaw.std() > 0.3 and pitch.std() > 0.3                        # it does move
    assert np.abs(m[:, M.idx("headTx", "headTy", "headScale")]).max() < 0.05
    assert (m[0, HEAD + M.idx(*M.GAZE)] == 0).all()                     # a new stream starts at the photo
    assert np.abs(m[:15, HEAD[:3]]).max() < 0.3 < np.abs(m[50:, HEAD[:3]]).max()   # and eases in
    still = run(rows, head_motion_amplitude=0.0)
    assert np.abs(still[50:, HEAD]).max() < 0.05                         # after the 300 ms control ramp
    fast, slow = run(rows, head_motion_speed=2.0), run(rows, head_motion_speed=0.5)
    speed = lambda mm: np.abs(np.diff(mm[:, M.INDEX["headYaw_deg"]])).mean()
    assert speed(fast) > 2 * speed(slow)
    calm = run(rows, expression_intensity=0.0)
    assert np.abs(calm[20:, M.idx(*M.BROWS, "mouthSmileLeft", "mouthFunnel")]).max() < 0.02


def test_pitch_accents_raise_brows_and_nod():
    flat = np.tile(feats(np.zeros(SPF, np.float32))[0], (150, 1))
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    voiced = flat.copy()
    voiced[:, col["energy_db"]] = voiced[:, col["energy_max_db"]] = -15.0
    voiced[:, col["energy_min_db"]] = -16.0
    voiced[:, col["f0_hz"]], voiced[:, col["voicing"]] = 110.0, 0.95
    voiced[:, col["centroid_hz"]], voiced[:, col["band_low"]] = 800.0, 0.6
    gaps = np.arange(len(voiced)) % 5 == 4                               # syllables: 160 ms on, 40 ms gap
    voiced[gaps, col["energy_db"]] = voiced[gaps, col["energy_max_db"]] = -40.0
    voiced[gaps, col["energy_min_db"]] = -45.0
    voiced[gaps, col["f0_hz"]], voiced[gaps, col["voicing"]] = 0.0, 0.2
    accented = voiced.copy()
    accented[100:104, col["f0_hz"]] = [130.0, 150.0, 160.0, 140.0]      # a 6-semitone pitch peak
    base, acc = run(voiced), run(accented)
    brow = M.INDEX["browInnerUp"]
    assert base[:, brow].max() == 0.0 and acc[100:115, brow].max() > 0.15
    gain = acc[100:115, M.INDEX["headPitch_deg"]] - base[100:115, M.INDEX["headPitch_deg"]]
    assert gain.max() > 1.0                                              # a nod (pitch > 0 = down)


def test_blinks(speech_clips):
    rows = _long_rows(speech_clips, 120)
    m = run(rows, make_generator(seed=5))
    blink = m[:, M.INDEX["eyeBlinkLeft"]]
    np.testing.assert_array_equal(blink, m[:, M.INDEX["eyeBlinkRight"]])
    closed = blink > 0.5
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    minutes = len(rows) / FPS / 60
    assert 7 * minutes < len(onsets) < 30 * minutes                    # ~15 per minute
    assert blink.max() > 0.95
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], (blink > 0).astype(int), [0]]))))[::2]
    assert runs.max() <= 5                                               # 100-150 ms: at most 5 frames
    speaking = rows[:, 0] > -50
    pause_start = np.zeros(len(rows), bool)            # first 600 ms of each pause (>= 0.5 s of silence)
    for k in np.flatnonzero(speaking[:-1] & ~speaking[1:]):
        if not speaking[k + 1:k + 13].any():
            pause_start[k + 1:k + 16] = True
    rate_pause = np.isin(onsets, np.flatnonzero(pause_start)).sum() / pause_start.sum()
    rate_other = (~np.isin(onsets, np.flatnonzero(pause_start))).sum() / (~pause_start).sum()
    assert rate_pause > 1.5 * rate_other
