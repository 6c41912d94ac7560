"""engine.training.pack: an ensemble backbone re-exported with its models stacked, same outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from emote.engine import motion as M                                   # noqa: E402
from emote.engine.backbone import BackboneGenerator, BackboneModel, BackboneSettings, copy_model  # noqa: E402
from emote.engine.training import espeak                               # noqa: E402

pytestmark = pytest.mark.skipif(not espeak.available(), reason="libespeak-ng is not loadable")


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """An ensemble built as the shipped one is, small: two smoke motion models (seeds 0, 1), the
    second's jaw averaged in, and three closure nets merged (widths 16, 16, 24; 1, 2 and 1 blocks),
    so packing meets a group of one width with a shallower net to pad; also a smoke model whose
    closure head is its own."""
    from emote.engine.training import build_data as B
    from emote.engine.training.closure_net import main as closure
    from emote.engine.training.jaw_ensemble import main as jaw
    from emote.engine.training.train_backbone import main as train
    root = tmp_path_factory.mktemp("pack")
    data = root / "data"
    B.build(B.BuildConfig(out=str(data), seed=5, hours_synthetic=0.02, languages=("en",), real=False,
                          workers=1, utts_per_shard=6, sentences_per_utt=(1, 2), words_per_sentence=(5, 9),
                          p_sing=0.0, p_augment=0.0), progress=False)
    smoke = ["--smoke", "--threads", "1", "--hop", "2"]
    for seed in (0, 1):
        train([*smoke, "--out", str(root / f"m{seed}.onnx"), "--cache", str(root / f"s{seed}"), "--seed", str(seed)])
    train([*smoke, "--out", str(root / "head.onnx"), "--cache", str(root / "s0"), "--closure-head"])
    nets = []
    for i, (layers, dim) in enumerate(((1, 16), (2, 16), (1, 24))):
        nets.append(root / f"n{i}.onnx")
        assert closure([str(root / "m0.onnx"), "--data", str(data), "--layers", str(layers), "--dim", str(dim),
                        "--iters", "10", "--threads", "1", "--seed", str(i), "--out", str(nets[-1])]) == 0
    ens = root / "ens.onnx"
    assert closure([str(root / "m0.onnx"), "--merge", *map(str, nets), "--out", str(ens)]) == 0
    assert jaw([str(ens), "--with", str(root / "m1.onnx")]) == 0
    return root, ens


def _outputs(path, batch: int = 6) -> tuple[dict, dict]:
    from emote.engine.training.pack import reference_outputs
    return reference_outputs(path, batch=batch, seed=11)


def _node_count(path) -> int:
    import onnx
    m = BackboneModel(path)
    return sum(len(onnx.load(str(p)).graph.node) for p in (m.path, m.cond_path) if p is not None)


@pytest.mark.parametrize("group_closure, stack_motion", [(False, True), (True, True), (False, False)])
def test_packed_whole_graph_has_the_sources_outputs_and_fewer_ops(ensemble, tmp_path, group_closure, stack_motion):
    from emote.engine.training.pack import TOLERANCE, pack
    _, ens = ensemble
    out = tmp_path / "p.onnx"
    before = ens.read_bytes()
    diffs = pack(ens, out, group_closure=group_closure, stack_motion=stack_motion, log=lambda s: None)
    assert ens.read_bytes() == before and not list(tmp_path.glob("*tmp*"))
    assert diffs["written"] <= TOLERANCE
    feeds, ref = _outputs(ens)
    _, got = _outputs(out)
    assert set(got) == {"x0", "motion", "closure"}
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=TOLERANCE, rtol=0, err_msg=k)
    a, b = BackboneModel(ens), BackboneModel(out)
    assert not b.split                                           # a whole source stays whole
    packed = b.meta.pop("packed")
    assert packed["motion_models"] == 2 and packed["closure_nets"] == 3
    assert packed["motion_stacks"] == (1 if stack_motion else 2)
    assert [g["nets"] for g in packed["closure_groups"]] == ([2, 1] if group_closure else [1, 1, 1])
    assert b.meta == a.meta                                      # calibration, schedules, provenance kept
    assert _node_count(out) < _node_count(ens)


def test_packing_a_split_model_keeps_it_split_and_the_generator_moves_alike(ensemble, tmp_path):
    from emote.engine.training.pack import main
    from emote.engine.training.split import split_backbone
    _, ens = ensemble
    src = tmp_path / "src.onnx"
    copy_model(ens, src)
    split_backbone(src)
    out = tmp_path / "packed.onnx"
    assert main([str(src), "--out", str(out)]) == 0
    a, b = BackboneModel(src), BackboneModel(out)
    assert b.split and b.cond_path == tmp_path / "packed.cond.onnx"
    assert b.meta["cond_model"] == "packed.cond.onnx" and b.meta["jaw_ensemble"] == a.meta["jaw_ensemble"]
    feats = np.random.default_rng(2).normal(size=(30, 52)).astype(np.float32)
    runs = []
    for model in (a, b):
        g = BackboneGenerator(BackboneSettings(seed=3), model)
        g.push(feats)
        runs.append((np.concatenate([g.pull(), g.finish()]), g.last_closure))
    np.testing.assert_allclose(runs[1][0], runs[0][0], atol=1e-4)
    assert runs[0][0].shape == (30, M.NUM_CHANNELS) and np.ptp(runs[0][0][:, M.INDEX["jawOpen"]]) > 0


def test_in_place_then_refusals(ensemble, tmp_path, capsys):
    from emote.engine.training.pack import main
    root, ens = ensemble
    work = tmp_path / "w.onnx"
    copy_model(ens, work)
    assert main([str(work)]) == 0                                 # in place
    assert "packed" in BackboneModel(work).meta
    assert "max abs diff against the source" in capsys.readouterr().out
    head = root / "head.onnx"                                     # its closure head is its own: not packable
    before = head.read_bytes()
    assert main([str(head), "--out", str(tmp_path / "h.onnx")]) == 1
    assert "closure head is the motion model's own" in capsys.readouterr().err
    assert head.read_bytes() == before and not (tmp_path / "h.onnx").exists()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing.onnx")])
    assert e.value.code == 2
    meta = json.loads(json.dumps(BackboneModel(work).meta))
    assert meta["packed"]["motion_stacks"] == 1
