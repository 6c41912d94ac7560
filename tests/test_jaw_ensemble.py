"""engine.training.jaw_ensemble: a second motion model grafted in, its jaw averaged with the first's."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from emote.engine import motion as M                                   # noqa: E402
from emote.engine.backbone import BackboneGenerator, BackboneModel, BackboneSettings  # noqa: E402
from emote.engine.training import espeak                               # noqa: E402

pytestmark = pytest.mark.skipif(not espeak.available(), reason="libespeak-ng is not loadable")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two smoke backbones trained alike with different seeds, with closure heads (--smoke makes
    its own tiny data set: no shards needed)."""
    from emote.engine.training.train_backbone import main as train
    root = tmp_path_factory.mktemp("jaw")
    models = []
    for seed in (0, 1):
        models.append(root / f"m{seed}.onnx")
        train(["--smoke", "--out", str(models[-1]), "--cache", str(root / f"smoke{seed}"), "--threads", "1",
               "--hop", "2", "--closure-head", "--seed", str(seed)])
    return models


def test_the_jaw_is_the_mean_and_the_rest_the_first_models(two_models, tmp_path):
    import onnxruntime as ort
    from emote.engine.training.jaw_ensemble import main
    a, b = two_models
    out = tmp_path / "j.onnx"
    assert main([str(a), "--with", str(b), "--out", str(out)]) == 0
    assert not list(tmp_path.glob("*.tmp.onnx"))
    m = BackboneModel(out)
    assert m.meta["jaw_ensemble"]["channels"] == ["jawOpen"] and m.has_closure
    g = np.random.default_rng(0)
    feeds = {"x": g.normal(size=(4, m.hop, M.NUM_CHANNELS)).astype(np.float32),
             "t": (g.random(4) * 999).astype(np.float32),
             "audio": g.normal(size=(4, m.window, m.meta["model"]["features"])).astype(np.float32),
             "past": (g.normal(size=(4, m.past, M.NUM_CHANNELS)) * 0.2).astype(np.float32),
             "controls": np.ones((4, 3), np.float32)}
    ra, rb, rm = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)
                  for p in (a, b, out))
    j = M.INDEX["jawOpen"]
    np.testing.assert_allclose(rm[1][..., j], 0.5 * (ra[1][..., j] + rb[1][..., j]), atol=1e-5)
    rest = [k for k in range(M.NUM_CHANNELS) if k != j]
    np.testing.assert_array_equal(rm[1][..., rest], ra[1][..., rest])   # head, lips, eyes: the first model's
    np.testing.assert_array_equal(rm[2], ra[2])                         # and its closure
    assert not np.allclose(ra[1][..., j], rb[1][..., j], atol=1e-3)     # two different models
    gen = BackboneGenerator(BackboneSettings(), m)
    gen.push(g.normal(size=(12, 52)).astype(np.float32))
    assert np.concatenate([gen.pull(), gen.finish()]).shape == (12, M.NUM_CHANNELS)


def test_models_of_other_shapes_are_refused(two_models, tmp_path):
    from emote.engine.training.jaw_ensemble import main
    with pytest.raises(SystemExit):
        main([str(two_models[0]), "--with", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists()
