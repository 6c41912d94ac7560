"""engine.expression: emotion presets, gaze mode and blink rate, on top of any generator."""
from __future__ import annotations

import numpy as np
import pytest

from emote.engine import motion as M
from emote.engine.exceptions import ConfigError
from emote.engine.expression import EMOTIONS, ExpressionSettings, ExpressionStage

FPS = 25
SMILE = M.idx("mouthSmileLeft", "mouthSmileRight")
BLINK = M.idx("eyeBlinkLeft", "eyeBlinkRight")
GAZE = M.idx(*M.GAZE)


def _wander(n: int, seed: int = 1) -> np.ndarray:
    """Rows with some gaze and blink activity, as a generator makes them."""
    rng = np.random.default_rng(seed)
    rows = M.rest(n).copy()
    rows[:, GAZE] = np.cumsum(rng.normal(0, 0.3, (n, 2)), 0).clip(-8, 8)
    rows[::50, BLINK[0]] = rows[::50, BLINK[1]] = 1.0
    return rows.astype(np.float32)


def _blinks(rows: np.ndarray) -> int:
    closed = rows[:, BLINK[0]] > 0.5
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def test_neutral_wander_and_generator_blinks_leave_rows_unchanged():
    rows = _wander(200)
    out = ExpressionStage()(rows)
    assert out.dtype == np.float32 and out.shape == rows.shape
    np.testing.assert_allclose(out, M.clip(rows), atol=1e-6)


@pytest.mark.parametrize("emotion", [e for e in EMOTIONS if e != "neutral"])
def test_each_emotion_ramps_in_without_a_jump_and_reaches_its_bias(emotion):
    stage = ExpressionStage()
    rows = M.rest(60)
    stage(rows[:10])
    stage.set_controls(emotion=emotion)
    out = stage(rows[10:])
    bias = np.array([EMOTIONS[emotion].get(c, 0.0) for c in M.NAMES], np.float32)
    np.testing.assert_allclose(out[-1], M.clip(M.rest(1)[0] + bias), atol=0.01)
    step = np.abs(np.diff(np.vstack([M.rest(1), out]), axis=0)).max(0)
    assert (step <= 0.2 * np.abs(bias) + 1e-6).all()          # 250 ms ramp: at most ~15 % a frame


def test_expression_intensity_scales_the_emotion():
    full, half = ExpressionStage(ExpressionSettings(emotion="happy", ramp_ms=0)), \
        ExpressionStage(ExpressionSettings(emotion="happy", ramp_ms=0))
    half.set_controls(expression_intensity=0.5)
    a, b = full(M.rest(5)), half(M.rest(5))
    assert a[-1, SMILE[0]] == pytest.approx(0.55, abs=1e-4) and b[-1, SMILE[0]] == pytest.approx(0.275, abs=1e-4)


def test_gaze_at_the_camera_holds_the_eyes_still():
    rows = _wander(150)
    assert np.abs(rows[:, GAZE]).max() > 3
    out = ExpressionStage(ExpressionSettings(gaze="camera"))(rows)
    assert np.abs(out[:, GAZE]).max() < 1e-6
    stage = ExpressionStage()
    first = stage(rows[:50])
    stage.set_controls(gaze="camera")
    rest = stage(rows[50:])
    np.testing.assert_allclose(first[:, GAZE], rows[:50, GAZE], atol=1e-6)
    assert np.abs(rest[25:, GAZE]).max() < 0.05 * np.abs(rows[75:, GAZE]).max() + 1e-3


@pytest.mark.parametrize("rate", [6.0, 15.0, 30.0])
def test_blink_rate_is_honoured(rate):
    minutes = 4
    out = ExpressionStage(ExpressionSettings(blink_rate_per_min=rate, seed=3))(_wander(FPS * 60 * minutes))
    per_min = _blinks(out) / minutes
    assert abs(per_min - rate) <= 0.25 * rate + 1.5, per_min
    closed = out[:, BLINK[0]] > 0.5
    assert np.array_equal(closed, out[:, BLINK[1]] > 0.5)      # both eyes together
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0])))[::2]
    assert runs.max() <= 4                                     # a blink, not a nap: <= 160 ms closed


def test_blink_rate_zero_means_none_and_none_means_the_generators():
    rows = _wander(FPS * 30)
    assert _blinks(ExpressionStage(ExpressionSettings(blink_rate_per_min=0.0))(rows)) == 0
    assert _blinks(ExpressionStage()(rows)) == _blinks(rows) > 0


def test_same_seed_same_blinks_whatever_the_batching():
    rows = _wander(FPS * 40)
    s = ExpressionSettings(blink_rate_per_min=20.0, emotion="sad", seed=7)
    whole = ExpressionStage(s)(rows)
    stage, parts, i = ExpressionStage(s), [], 0
    for n in [1, 7, 3, 50, 2, 400, 9]:
        parts.append(stage(rows[i:i + n]))
        i += n
    parts.append(stage(rows[i:]))
    np.testing.assert_array_equal(np.vstack(parts), whole)
    other = ExpressionStage(ExpressionSettings(blink_rate_per_min=20.0, emotion="sad", seed=8))(rows)
    assert not np.array_equal(other[:, BLINK[0]], whole[:, BLINK[0]])


def test_bad_controls_are_config_errors_and_change_nothing():
    stage = ExpressionStage()
    for bad in [{"emotion": "smug"}, {"gaze": "left"}, {"blink_rate_per_min": -1}, {"blink_rate_per_min": 99},
                {"wink": 1}]:
        with pytest.raises(ConfigError):
            stage.set_controls(**bad)
    assert stage.controls["emotion"] == "neutral" and stage.controls["gaze"] == "wander"
    with pytest.raises(ConfigError):
        ExpressionSettings(emotion="bored")


def test_the_landmarker_sees_the_emotions_on_a_rendered_face(tmp_path):
    """Render the astronaut at rest with each preset; MediaPipe's blendshapes must move the same way."""
    from emote.engine.avatar import AvatarSettings, prepare
    from emote.engine.landmarks import shared_landmarker
    from emote.engine.renderer import Renderer
    from portraits import astronaut

    av = prepare(astronaut(), AvatarSettings(size_px=384, cache_dir=str(tmp_path)))
    ren, lm = Renderer(av), shared_landmarker()
    seen = {}
    for emotion in EMOTIONS:
        row = ExpressionStage(ExpressionSettings(emotion=emotion, ramp_ms=0))(M.rest(1))[0]
        faces = lm.detect(ren(row))
        assert faces, emotion
        seen[emotion] = faces[0].blendshapes
    n = seen["neutral"]
    smile = lambda b: b["mouthSmileLeft"] + b["mouthSmileRight"]        # noqa: E731
    brows_up = lambda b: b["browInnerUp"] + b["browOuterUpLeft"] + b["browOuterUpRight"]   # noqa: E731
    assert smile(seen["happy"]) > smile(n) + 0.05
    assert brows_up(seen["surprised"]) > brows_up(n) + 0.1
    assert seen["angry"]["browDownLeft"] + seen["angry"]["browDownRight"] > n["browDownLeft"] + n["browDownRight"] + 0.05
    assert seen["sad"]["browInnerUp"] > n["browInnerUp"] + 0.05
