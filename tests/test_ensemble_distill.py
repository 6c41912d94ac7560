"""engine.training.ensemble_distill: a jaw ensemble distilled back into one motion model."""
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
def ensemble(tmp_path_factory):
    """A tiny data set; two smoke motion models (seeds 0, 1) with a closure net merged into the
    first, then the second's jaw averaged in and the file split, as the shipped one is made."""
    from emote.engine.training import build_data as B
    from emote.engine.training.closure_net import main as closure
    from emote.engine.training.jaw_ensemble import main as jaw
    from emote.engine.training.split import split_backbone
    from emote.engine.training.train_backbone import main as train
    root = tmp_path_factory.mktemp("edistill")
    data = root / "data"
    B.build(B.BuildConfig(out=str(data), seed=5, hours_synthetic=0.02, languages=("en",), real=False,
                          workers=1, utts_per_shard=6, sentences_per_utt=(1, 2), words_per_sentence=(5, 9),
                          p_sing=0.0, p_augment=0.0), progress=False)
    for seed in (0, 1):
        train(["--smoke", "--threads", "1", "--hop", "2", "--out", str(root / f"m{seed}.onnx"),
               "--cache", str(root / f"s{seed}"), "--seed", str(seed)])
    ens = root / "ens.onnx"
    assert closure([str(root / "m0.onnx"), "--data", str(data), "--layers", "1", "--dim", "16", "--iters", "10",
                    "--threads", "1", "--out", str(ens)]) == 0
    assert jaw([str(ens), "--with", str(root / "m1.onnx")]) == 0
    split_backbone(ens)
    return data, ens


def test_the_student_moves_towards_the_ensemble_and_keeps_the_rest(ensemble, tmp_path):
    from emote.engine.training.ensemble_distill import main
    from emote.engine.training.pack import reference_outputs
    data, ens = ensemble
    before = ens.read_bytes()
    out = tmp_path / "new" / "one.onnx"                                 # a folder not made yet
    assert main([str(ens), "--data", str(data), "--out", str(out), "--iters", "150", "--batch", "64", "--lr", "1e-3",
                 "--threads", "1"]) == 0
    assert ens.read_bytes() == before and not list(tmp_path.rglob("*tmp*"))
    a, b = BackboneModel(ens), BackboneModel(out)
    assert b.split and "jaw_ensemble" not in b.meta and "packed" in b.meta
    assert b.meta["packed"]["motion_models"] == 1 and b.meta["packed"]["closure_nets"] == 1
    info = b.meta["ensemble_distilled"]
    assert info["jaw_ensemble"] == a.meta["jaw_ensemble"] and info["iters"] == 150 and info["mouth_noise"] == 0.0
    for steps in ("1", "2", "4"):                                    # nearer the ensemble's jaw than its first model
        assert info["gap_after"][steps]["jaw_rms"] < info["gap_before"][steps]["jaw_rms"], info
    for k in ("schedules", "articulation_gain", "head_gain", "closure_threshold", "closure_net"):
        assert b.meta.get(k) == a.meta.get(k), k
    _, ra = reference_outputs(ens, batch=4, seed=3)
    _, rb = reference_outputs(out, batch=4, seed=3)
    np.testing.assert_allclose(rb["closure"], ra["closure"], atol=1e-5)   # the closure nets are the source's
    g = BackboneGenerator(BackboneSettings(steps=4), b)
    g.push(np.random.default_rng(0).normal(size=(20, 52)).astype(np.float32))
    assert np.concatenate([g.pull(), g.finish()]).shape == (20, M.NUM_CHANNELS)


def test_refuses_a_model_without_a_jaw_ensemble_or_packed(ensemble, tmp_path, capsys):
    from emote.engine.training.ensemble_distill import main
    from emote.engine.training.pack import pack
    data, ens = ensemble
    packed = tmp_path / "p.onnx"
    pack(ens, packed, log=lambda s: None)
    assert main([str(packed), "--data", str(data), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "is packed" in capsys.readouterr().err
    plain = ens.with_name("m1.onnx")
    assert main([str(plain), "--data", str(data), "--out", str(tmp_path / "y.onnx")]) == 1
    assert "no jaw ensemble" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()
    for bad in (["--iters", "0"], ["--mouth-noise", "2"]):
        with pytest.raises(SystemExit) as e:
            main([str(ens), "--data", str(data), *bad])
        assert e.value.code == 2


def test_the_retrain_script_runs_every_step_in_smoke_mode(tmp_path):
    """scripts/retrain_backbone.sh --smoke: the model card's whole sequence on tiny data and models,
    ending in a split pair without a jaw ensemble that the runtime loads."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["bash", str(root / "scripts" / "retrain_backbone.sh"), "--smoke", "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8/8 written as" in r.stdout and "done: score it" in r.stdout
    m = BackboneModel(tmp_path / "backbone.onnx")
    assert m.split and m.cond_path == tmp_path / "backbone.cond.onnx" and m.closure_threshold == 0.2
    assert "ensemble_distilled" in m.meta and "jaw_ensemble" not in m.meta
    g = BackboneGenerator(BackboneSettings(), m)
    g.push(np.random.default_rng(1).normal(size=(10, 52)).astype(np.float32))
    assert np.isfinite(np.concatenate([g.pull(), g.finish()])).all()
    bad = subprocess.run(["bash", str(root / "scripts" / "retrain_backbone.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --nope" in bad.stderr


def test_noise_is_drawn_as_the_runtime_draws_it():
    """No noise on the mouth channels by default (the runtime's mouth_noise 0), full elsewhere."""
    import torch
    from emote.engine.training.ensemble_distill import noise
    mouth = list(M.idx(*M.MOUTH))
    rest = [c for c in range(M.NUM_CHANNELS) if c not in mouth]
    z = noise(512, 2, torch.Generator().manual_seed(0), 0.0)
    assert z.shape == (512, 2, M.NUM_CHANNELS) and bool((z[..., mouth] == 0).all())
    assert 0.9 < float(z[..., rest].std()) < 1.1
    z1 = noise(512, 2, torch.Generator().manual_seed(0), 1.0)
    assert 0.9 < float(z1[..., mouth].std()) < 1.1
