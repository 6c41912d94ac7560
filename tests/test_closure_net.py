"""engine.training.closure_net: a ClosureNet trained for an exported backbone and grafted into its graph."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from emote.engine import motion as M                                   # noqa: E402
from emote.engine.backbone import BackboneGenerator, BackboneModel, BackboneSettings  # noqa: E402
from emote.engine.training import espeak                               # noqa: E402

pytestmark = pytest.mark.skipif(not espeak.available(), reason="libespeak-ng is not loadable")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny data set and two smoke backbones, one with a closure head and one without."""
    from emote.engine.training import build_data as B
    from emote.engine.training.train_backbone import main as train
    root = tmp_path_factory.mktemp("cnet")
    data = root / "data"
    B.build(B.BuildConfig(out=str(data), seed=5, hours_synthetic=0.02, languages=("en", "de"), real=False,
                          workers=1, utts_per_shard=6, sentences_per_utt=(1, 2), words_per_sentence=(5, 9),
                          p_sing=0.0, p_augment=0.0), progress=False)
    models = {}
    for name, extra in (("head", ["--closure-head"]), ("plain", [])):
        models[name] = root / f"{name}.onnx"
        train(["--smoke", "--out", str(models[name]), "--cache", str(root / "smoke"), "--threads", "1", "--hop", "2",
               *extra])
    return data, models


def _feeds(m: BackboneModel, batch: int = 8) -> dict:
    g = np.random.default_rng(3)
    return {"x": g.normal(size=(batch, m.hop, M.NUM_CHANNELS)).astype(np.float32),
            "t": (g.random(batch) * 999).astype(np.float32),
            "audio": g.normal(size=(batch, m.window, m.meta["model"]["features"])).astype(np.float32),
            "past": (g.normal(size=(batch, m.past, M.NUM_CHANNELS)) * 0.2).astype(np.float32),
            "controls": np.ones((batch, 3), np.float32)}


@pytest.mark.parametrize("which", ["head", "plain"])
def test_graft_keeps_the_motion_and_gives_the_nets_closure(built, tmp_path, which):
    import onnxruntime as ort
    from emote.engine.training.closure_net import main
    data, models = built
    src = models[which]
    before = src.read_bytes()
    out = tmp_path / "g.onnx"
    assert main([str(src), "--data", str(data), "--layers", "1", "--dim", "32", "--iters", "20", "--threads", "1",
                 "--out", str(out)]) == 0
    assert src.read_bytes() == before                                   # --out: the source is left alone
    a, b = BackboneModel(src), BackboneModel(out)
    assert b.has_closure and b.closure_threshold is None
    assert b.meta["model"]["closure_layers"] == 1 and b.meta["closure_net"]["iters"] == 20
    assert b.meta["schedules"] == a.meta["schedules"]
    feeds = _feeds(a)
    sa = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for x, y in zip(sa.run(["x0", "motion"], feeds), sb.run(["x0", "motion"], feeds)):
        np.testing.assert_array_equal(x, y)                             # the motion model is untouched
    closure = sb.run(["closure"], feeds)[0]
    # the chunk's frames and the next (the first lookahead frame), for the runtime's peak rule
    assert closure.shape == (8, a.hop + (1 if a.lookahead else 0)) and np.isfinite(closure).all()
    names = {n.name for n in __import__("onnx").load(str(out)).graph.node}
    assert any(n.startswith("cnet/") for n in names)
    g = BackboneGenerator(BackboneSettings(), b)
    rng = np.random.default_rng(0)
    g.push(rng.normal(size=(20, 52)).astype(np.float32))
    motion = np.concatenate([g.pull(), g.finish()])
    assert motion.shape == (20, M.NUM_CHANNELS) and np.all((g.last_closure > 0) & (g.last_closure < 1))


def test_in_place_and_bad_arguments(built, tmp_path):
    from emote.engine.training.closure_net import main
    data, models = built
    target = tmp_path / "m.onnx"
    target.write_bytes(models["head"].read_bytes())
    assert main([str(target), "--data", str(data), "--layers", "1", "--dim", "32", "--iters", "5",
                 "--threads", "1"]) == 0
    meta = json.loads(__import__("onnx").load(str(target)).metadata_props[0].value)
    assert meta["closure_net"]["layers"] == 1
    assert not list(tmp_path.glob("*.tmp.onnx"))                       # no temporary files left
    with pytest.raises(SystemExit):
        main([str(target), "--data", str(data), "--layers", "0"])


def test_merge_grafts_the_mean_of_several_nets(built, tmp_path):
    import onnxruntime as ort
    from emote.engine.training.closure_net import main
    data, models = built
    nets = []
    for seed in (0, 1):
        nets.append(tmp_path / f"n{seed}.onnx")
        assert main([str(models["plain"]), "--data", str(data), "--layers", "1", "--dim", "32", "--iters", "10",
                     "--threads", "1", "--seed", str(seed), "--out", str(nets[-1])]) == 0
    out = tmp_path / "ens.onnx"
    assert main([str(models["head"]), "--merge", *map(str, nets), "--out", str(out)]) == 0
    b = BackboneModel(out)
    assert b.has_closure and b.closure_threshold is None
    assert [e["seed"] for e in b.meta["closure_net"]["ensemble"]] == [0, 1]
    feeds = _feeds(b)
    run = lambda f: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, feeds)  # noqa: E731
    ens, head, parts = run(out), run(models["head"]), [run(n) for n in nets]
    np.testing.assert_array_equal(ens[0], head[0])                      # the motion model is untouched
    np.testing.assert_allclose(ens[2], np.mean([q[2] for q in parts], axis=0), atol=1e-5)   # the mean of the nets
    assert not np.allclose(parts[0][2], parts[1][2], atol=1e-3)         # two different nets were merged
    with pytest.raises(SystemExit):                                     # no grafted net to take
        main([str(models["head"]), "--merge", str(models["plain"]), "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists()
