"""benchmarks.harness: lip-sync metrics, and the harness end to end on a tiny data set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emote.benchmarks import harness as H
from emote.engine import motion as M


def test_offset_of_a_delayed_copy_is_found():
    rng = np.random.default_rng(0)
    ref = np.convolve(rng.random(300), np.ones(4) / 4, mode="same")
    for shift in (-3, 0, 2):
        pred = np.roll(ref, shift)
        lag = H.peak_lag_ms(H.xcorr(pred, ref), 25.0)
        assert abs(lag - shift * 40.0) < 8.0, (shift, lag)


def test_closure_counts():
    n = 40
    speech = np.ones(n, bool)
    speech[:3] = speech[-3:] = False
    closed = np.zeros(n, bool)
    closed[[10, 11, 25, 33]] = True                   # two near bilabials, one spurious, one missed below
    c = H.closure_counts(closed, speech, bil=[11, 24, 18])
    assert c == {"bilabials": 3, "hits": 2, "runs": 3, "good_runs": 2}
    # closed runs that touch a pause are the mouth at rest, not closures
    closed2 = np.zeros(n, bool)
    closed2[:5] = True
    assert H.closure_counts(closed2, speech, bil=[20])["runs"] == 0


def test_sung_metric_finds_sustained_vowels_and_scores_openness():
    ph = [("_", 0.0, 0.2), ("m", 0.2, 0.3), ("a", 0.3, 1.3), ("p", 1.3, 1.4), ("i", 1.4, 1.5), ("o", 1.5, 2.0)]
    notes = H.sustained_vowel_frames(ph, 50, 25.0)
    assert len(notes) == 2                               # "a" (1 s) and "o" (0.5 s); "i" is too short
    assert notes[0][0] >= int(0.3 * 25) and notes[0][-1] <= int(1.3 * 25)
    ref = [np.full(k.size, 0.8) for k in notes]
    held = H.sung_stats([(np.full(k.size, 0.7), r) for k, r in zip(notes, ref)])
    shut = H.sung_stats([(np.full(k.size, 0.1), r) for k, r in zip(notes, ref)])
    assert held["open_fraction"] == 1.0 and held["open_ratio"] == pytest.approx(0.875)
    assert shut["open_fraction"] == 0.0 and shut["notes"] == 2
    assert H.sung_stats([]) is None


def test_openness_head_stats_and_blinks():
    m = M.rest(100)
    m[:, M.INDEX["jawOpen"]] = 0.5
    m[40:42, M.INDEX["mouthClose"]] = 1.0
    op = H.openness(m)
    assert op[0] == 0.5 and op[40] == 0.0
    m[:, M.INDEX["headYaw_deg"]] = np.linspace(0, 4, 100)     # 4 deg in 4 s: 1 deg/s
    m[10:13, M.INDEX["eyeBlinkLeft"]] = 1.0
    m[60:63, M.INDEX["eyeBlinkLeft"]] = 1.0
    st = H.head_stats([m], 25.0)
    assert st["yaw"]["speed_deg_s"] == pytest.approx(25.0 * 4 / 99, rel=1e-3)
    assert st["blinks_per_min"] == pytest.approx(2 / (100 / 25 / 60), rel=1e-3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from emote.engine.training import espeak
    if not espeak.available():
        pytest.skip("libespeak-ng is not loadable")
    from emote.engine.training import build_data as B
    out = tmp_path_factory.mktemp("harness") / "data"
    cfg = B.BuildConfig(out=str(out), seed=3, hours_synthetic=0.02, languages=("en", "it"), real=False, workers=1,
                        utts_per_shard=6, sentences_per_utt=(1, 2), words_per_sentence=(5, 9), p_sing=0.0,
                        p_augment=0.0)
    B.build(cfg, progress=False)
    return str(out)


def test_harness_end_to_end_on_a_tiny_set(tiny_data, tmp_path):
    res = H.evaluate("baseline", tiny_data, max_utts=40, render=1, size=192, seed=0, progress=False,
                     render_reference=True)
    mo = res["motion"]["overall"]
    assert res["generator"] == "baseline" and mo["utterances"] >= 2
    assert "it" in res["motion"]["per_language"]
    assert 0.2 < mo["corr"] <= 1.0 and abs(mo["offset_ms"]) <= 120.0
    assert 0.0 <= mo["closure_recall"] <= 1.0
    ref = res["reference_self_check"]                       # the reference scored against itself
    assert ref["corr"] == pytest.approx(1.0) and ref["closure_recall"] >= 0.9 and ref["offset_ms"] == 0.0
    ro = res["rendered"]["overall"]
    assert len(res["rendered_utterances"]) == 1 and ro["frames"] > 25
    assert ro["corr"] > 0.2                                  # the rendered lips follow the reference
    rr = res["rendered_reference"]                           # the reference itself, rendered: the ceiling
    assert rr["frames"] == ro["frames"] and rr["corr"] > max(0.6, ro["corr"])
    vv = res["rendered_vs_rendered_reference"]               # video against the reference's video
    assert vv["frames"] <= ro["frames"] and 0.2 < vv["corr"] <= 1.0
    assert vv["closure_recall"] == ro["closure_recall"]       # the generator video's closures either way
    for who in ("generator", "data_engine"):
        assert set(res["head"][who]) == {"yaw", "pitch", "roll", "blinks_per_min"}
    png = tmp_path / "h.png"
    H.plot(res, png)
    assert png.stat().st_size > 10_000
    res.pop("_example")
    json.dumps(res)


def test_replay_plays_rows_back_one_per_feature_row():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    r = H.Replay(rows, 25.0)
    r.push(np.zeros((3, 5)))
    assert np.array_equal(r.pull(), rows[:3]) and r.pull().shape == (0, 3)
    r.push(np.zeros((3, 5)))                                 # past the end: the last row held
    assert np.array_equal(r.finish(), rows[[3, 3, 3]])
    r.reset()
    r.push(np.zeros((1, 5)))
    assert np.array_equal(r.pull(), rows[:1])


def test_harness_command_line(tiny_data, tmp_path, capsys):
    assert H.main(["--generator", "baseline", "--data", tiny_data, "--out", str(tmp_path), "--render", "0",
                   "--quiet"]) == 0
    out = json.loads((tmp_path / "harness_baseline.json").read_text())
    assert out["rendered"] is None and out["motion"]["overall"]["corr"] > 0.2
    assert (tmp_path / "harness_baseline.png").is_file()
    assert "closure recall" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        H.main(["--generator", "nope", "--data", tiny_data, "--out", str(tmp_path)])
    one = tmp_path / "one"
    assert H.main(["--generator", "baseline", "--data", tiny_data, "--out", str(one), "--render", "0", "--quiet",
                   "--splits", "heldout_speaker"]) == 0
    res = json.loads((one / "harness_baseline.json").read_text())
    assert res["splits"] == ["heldout_speaker"] and list(res["motion_by_split"]) == ["heldout_speaker"]
    with pytest.raises(SystemExit, match="no utterances of the splits train2"):
        H.main(["--generator", "baseline", "--data", tiny_data, "--out", str(one), "--splits", "train2", "--quiet"])


def test_retarget_rewrites_only_the_mouth_from_the_phonemes(tiny_data, tmp_path):
    """engine.training.retarget: mouth columns = mouth_channels(phonemes, style, effort); the rest kept."""
    import shutil
    from emote.engine.training import build_data as B, retarget as RT, targets as TG
    from emote.engine.training.espeak import Phone
    from emote.engine.training.shards import open_dataset
    d = tmp_path / "copy"
    shutil.copytree(tiny_data, d)
    before = {u.id: u for u in open_dataset(d).utterances()}
    rep = RT.retarget(d, progress=False)
    assert rep["utterances"] == len(before) and open_dataset(d).manifest["targets_version"] == RT.TARGETS_VERSION
    mouth = M.idx(*M.MOUTH)
    other = [i for i in range(M.NUM_CHANNELS) if i not in mouth]
    seed = int(open_dataset(d).manifest["config"]["seed"])
    for u in open_dataset(d).utterances():
        b = before[u.id]
        np.testing.assert_array_equal(u.features, b.features)
        np.testing.assert_array_equal(u.targets[:, other], b.targets[:, other])
        ph = [Phone(p, s0, s1) for p, s0, s1 in u.meta["phonemes"]]
        want = TG.mouth_channels(ph, len(u.targets), 25.0, B.speaker_style(u.meta["speaker"], seed), u.meta["effort"])
        np.testing.assert_allclose(u.targets[:, mouth], want[:, mouth], atol=1e-6)

