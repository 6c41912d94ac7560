"""engine.training.calibrate: the one-pass calibration of a backbone's gains and head smoother.

Runs on the committed engine/assets/backbone.onnx (ONNX Runtime, no torch)."""
from __future__ import annotations

import numpy as np
import pytest

from emote.engine import motion as M
from emote.engine.audio import FeatureStream
from emote.engine.backbone import BackboneGenerator, BackboneModel, BackboneSettings, default_model_path
from emote.engine.training import calibrate as C

HEAD = M.idx(*M.HEAD)


@pytest.fixture(scope="module")
def rows(speech_clips):
    fs = FeatureStream()
    x = speech_clips["en"].samples
    fs.push(np.concatenate([np.zeros(8000, np.float32), x, np.zeros(8000, np.float32)]))
    return np.concatenate([fs.pull(), fs.finish()])


def test_offline_smoothing_of_the_raw_output_is_the_runtime_head(rows):
    """The network's output without the smoother, smoothed offline (calibrate's one pass), is
    exactly the head the generator makes with the same time constants (gain 1)."""
    if not default_model_path().is_file():
        pytest.skip("engine/assets/backbone.onnx not built")
    model = BackboneModel()
    model.head_gain = np.ones(len(HEAD))
    model.head_tau_s = np.array([0.08, 0.0, 0.065, 0.08, 0.04, 0.03])
    raw = C.raw_motion(model, rows)
    for notch in (False, True):
        model.head_notch = notch
        g = BackboneGenerator(BackboneSettings(), model)
        g.push(rows)
        live = np.concatenate([g.pull(), g.finish()])
        assert raw.shape == live.shape
        assert np.abs(raw[:, HEAD] - live[:, HEAD]).max() > 1e-3          # the smoother did something
        off = C.smoothed_heads([(raw, raw)], model.head_tau_s, notch=notch)[0]
        np.testing.assert_allclose(off, live[:, HEAD] - live[:, HEAD].mean(axis=0), atol=1e-4)
        np.testing.assert_array_equal(raw[:, M.INDEX["jawOpen"]], live[:, M.INDEX["jawOpen"]])


def test_head_stats_measure_std_speed_and_roughness():
    t = np.arange(500) / 25.0
    slow = np.sin(2 * np.pi * 0.5 * t)[:, None]
    fast = np.sin(2 * np.pi * 2.0 * t)[:, None]
    a, b = C.head_stats([slow]), C.head_stats([fast])
    np.testing.assert_allclose(a["std"], b["std"], rtol=0.02)
    np.testing.assert_allclose(a["speed"], 4 * 0.5 * np.sqrt(2) * a["std"], rtol=0.03)   # 4 A f, A = sqrt2 std
    assert b["speed"][0] > 3.5 * a["speed"][0] and b["jerk"][0] > 10 * a["jerk"][0]


def test_head_gain_splits_the_difference_between_std_and_speed():
    data = {"std": np.array([2.0, 1.0, 1.0]), "speed": np.array([4.0, 2.0, 2.0])}
    model = {"std": np.array([1.0, 1.0, 0.0]), "speed": np.array([1.0, 2.0, 0.0])}
    g = C.head_gains(model, data)
    # channel 0: std wants x2, speed x4 -> harmonic mean 8/3: std +33 %, speed -33 %
    assert g[0] == pytest.approx(8 / 3)
    assert g[0] * 1.0 / 2.0 - 1 == pytest.approx(1 - g[0] * 1.0 / 4.0)
    assert g[1] == pytest.approx(1.0)            # already matches
    assert g[2] == 1.0                           # a still channel keeps gain 1
    assert C.head_gains({"std": np.array([0.01]), "speed": np.array([0.01])},
                        {"std": np.array([1.0]), "speed": np.array([1.0])})[0] == 4.0   # clipped


def test_smoothing_picks_the_shortest_time_constant_no_rougher_than_the_data():
    """A model whose head is the data's plus frame-to-frame flicker gets a longer time constant
    on the strongly flickering channel than on a slightly flickering one."""
    rng = np.random.default_rng(0)
    n = 2500
    t = np.arange(n) / 25.0
    targets = M.rest(n)
    for c in HEAD[:2]:                     # the data's head: a few slow sways
        targets[:, c] += sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in rng.uniform(0.1, 1.0, 4))
    raw = targets.copy()
    raw[:, HEAD[0]] += 0.2 * rng.standard_normal(n)
    raw[:, HEAD[1]] += 0.01 * rng.standard_normal(n)
    taus = C.head_smoothing([(raw.astype(np.float32), targets.astype(np.float32))])
    assert len(taus) == len(HEAD)
    assert taus[0] > taus[1], taus


def test_a_closure_threshold_outside_0_1_is_refused_before_any_work(tmp_path, capsys):
    from emote.engine.training.calibrate import main
    model = tmp_path / "m.onnx"
    model.write_bytes(b"untouched")
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit) as e:
            main([str(model), "--data", str(tmp_path / "nothing"), "--closure-threshold", bad])
        assert e.value.code == 2 and "--closure-threshold" in capsys.readouterr().err
    assert model.read_bytes() == b"untouched"


def test_calibration_utterances_of_each_split(tmp_path):
    """validation: the train split's left-out utterances; heldout: both held-out splits, evenly;
    a data set without them is a clear error."""
    import json

    from emote.engine.training.backbone_data import is_validation
    from emote.engine.training.shards import Utterance, write_shard
    metas = [{"id": f"u{i:03d}", "split": split, "language": "en", "duration_s": 1.0}
             for i, split in enumerate(["train"] * 60 + ["heldout_language"] * 6 + ["heldout_speaker"] * 6)]
    utts = [Utterance(m, np.zeros((3, 52), np.float32), np.zeros((3, M.NUM_CHANNELS), np.float32), None)
            for m in metas]
    entry = write_shard(tmp_path / "s.npz", utts)
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [entry]}))
    pick = lambda split, n: [u.meta for u in C.calibration_utterances(str(tmp_path), split, n)]  # noqa: E731
    val = pick("validation", 100)
    assert val and all(m["split"] == "train" and is_validation(m["id"]) for m in val)
    held = pick("heldout", 4)
    assert [m["split"] for m in held] == ["heldout_language"] * 2 + ["heldout_speaker"] * 2
    assert [m["id"] for m in held] == ["u060", "u063", "u066", "u069"]      # evenly through each split
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": []}))
    with pytest.raises(SystemExit, match="no utterances of the split"):
        C.calibration_utterances(str(tmp_path), "heldout", 10)
    with pytest.raises(ValueError, match="unknown calibration split"):
        C.calibration_utterances(str(tmp_path), "test", 10)
