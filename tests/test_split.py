"""engine.training.split: the backbone's per-chunk part as a second ONNX graph, and BackboneModel
running the pair (cond graph once a chunk, step graph every step) exactly as the whole graph.

The split tests make small models (torch, the train extra); the shipped-pair test runs on the
committed engine/assets files (ONNX Runtime only) and is skipped until they are split.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import emote.engine.backbone as B
from emote.engine import motion as M
from emote.engine.backbone import SILENT_ROW, BackboneGenerator, BackboneModel, BackboneSettings
from emote.engine.exceptions import ModelFileError

ASSETS = Path(B.__file__).resolve().parent / "assets"
needs_torch = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "onnx")),
                                 reason="making a model needs the train extra (torch, diffusers, onnx)")


def _meta(path: Path) -> dict:
    """The emote_backbone metadata of an ONNX file, read with ONNX Runtime (no onnx package)."""
    from emote.kernels.onnx import session
    return json.loads(session(path).get_modelmeta().custom_metadata_map.get("emote_backbone", "{}"))


def _shipped_is_split() -> bool:
    p = ASSETS / "backbone.onnx"
    return p.is_file() and "cond_model" in _meta(p)


def _rows(n: int = 160, seed: int = 0) -> np.ndarray:
    """Feature rows that vary like speech: level, pitch, voicing and mel bands, with pauses."""
    rng = np.random.default_rng(seed)
    rows = np.tile(SILENT_ROW, (n, 1))
    loud = (np.arange(n) // 15) % 3 != 2
    rows[loud, :3] = rng.uniform(-40.0, -12.0, (int(loud.sum()), 3))
    rows[loud, 3] = rng.uniform(90.0, 220.0, int(loud.sum()))
    rows[loud, 4] = rng.uniform(0.0, 1.0, int(loud.sum()))
    rows[loud, 12:] = rng.uniform(-12.0, 2.0, (int(loud.sum()), 40))
    return rows


def _motion(model: BackboneModel, steps: int, rows: np.ndarray, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Generator output (n, C) and the closure probabilities (n,) of rows pushed in uneven pieces."""
    g = BackboneGenerator(BackboneSettings(steps=steps, seed=seed, mouth_noise=0.5), model)
    out, shut, i = [], [], 0
    for n in (7, 1, 30, 13, 200):
        g.push(rows[i:i + n])
        out.append(g.pull())
        shut.append(g.last_closure)
        i += n
    out.append(g.finish())
    shut.append(g.last_closure)
    return np.concatenate(out), np.concatenate(shut)


def _split_copy(whole: Path, d: Path, name: str = "m.onnx") -> tuple[Path, Path]:
    from emote.engine.training.split import split_backbone
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(whole, d / name)
    return split_backbone(d / name)


@pytest.fixture(scope="module")
def closure_pair(tmp_path_factory):
    """A smoke-trained backbone with a closure head (test_backbone's helper), whole and split:
    (whole path, step path, cond path, split log)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from test_backbone import _smoke_closure_model
    from emote.engine.training.split import split_backbone
    d = tmp_path_factory.mktemp("closure")
    whole = _smoke_closure_model(d).path
    shutil.copy(whole, d / "split.onnx")
    log: list[str] = []
    step, cond = split_backbone(d / "split.onnx", log=log.append)
    return whole, step, cond, log


@pytest.fixture(scope="module")
def plain_pair(tmp_path_factory):
    """A small untrained backbone without a closure head (random output layer, so that the motion
    depends on every input), exported the way train_backbone exports, whole and split."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from emote.engine.training.backbone_model import ModelConfig, MotionDiT
    from emote.engine.training.distill import student_schedules
    from emote.engine.training.export import export_onnx
    torch.manual_seed(0)
    cfg = ModelConfig(hop=3, dim=32, heads=2, layers=2)
    model = MotionDiT(cfg, np.zeros(cfg.features), np.ones(cfg.features), M.rest(1)[0], np.full(cfg.channels, 0.1))
    torch.nn.init.normal_(model.out.weight, std=0.5)
    d = tmp_path_factory.mktemp("plain")
    whole = export_onnx(model, d / "whole.onnx", {"schedules": {str(k): v for k, v in student_schedules().items()}})
    return (whole, *_split_copy(whole, d / "split"))


@pytest.fixture
def shipped_or_smoke(request):
    """(step, cond) of a split model to break: the shipped pair once it is split, else the smoke one."""
    if _shipped_is_split():
        return ASSETS / "backbone.onnx", ASSETS / "backbone.cond.onnx"
    return request.getfixturevalue("closure_pair")[1:3]


@needs_torch
def test_split_writes_the_pair_and_its_metadata(closure_pair):
    """In place over the file, the cond graph beside it; the metadata names it, its boundary tensors
    and its sha256; the step graph reads x, t and those tensors only; the closure comes from the
    cond graph; the pair is bit-identical to the whole graph at batch 1 and 3."""
    from emote.kernels.onnx import session
    from emote.engine.training.split import max_abs_diff
    whole, step, cond, log = closure_pair
    assert step.name == "split.onnx" and cond == step.with_name("split.cond.onnx") and cond.is_file()
    meta, before = _meta(step), _meta(whole)
    assert meta["cond_model"] == "split.cond.onnx"
    assert meta["cond_sha256"] == hashlib.sha256(cond.read_bytes()).hexdigest()
    assert {k: v for k, v in meta.items() if not k.startswith("cond_")} == before
    s, c = session(step), session(cond)
    assert [i.name for i in s.get_inputs()] == ["x", "t", *meta["cond_outputs"]] and meta["cond_outputs"]
    assert [o.name for o in s.get_outputs()] == ["x0", "motion"]
    assert [o.name for o in c.get_outputs()] == [*meta["cond_outputs"], "closure"]
    assert [i.name for i in c.get_inputs()] == ["audio", "past", "controls"]
    assert max_abs_diff(str(whole), str(step), str(cond), batches=(1, 3), seed=7) == 0.0
    assert "max abs diff" in log[0] and log[0].rstrip().endswith(": 0")


@needs_torch
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_split_model_makes_the_same_motion(closure_pair, steps):
    """The generator on the split file gives the whole file's motion and closure, bit for bit."""
    whole, step, _, _ = closure_pair
    a, b = BackboneModel(whole), BackboneModel(step)
    assert (a.split, b.split) == (False, True) and a.cond_session is None and b.cond_session is not None
    assert a.outputs == b.outputs == ["x0", "motion", "closure"] and a.has_closure and b.has_closure
    assert b.step_outputs == ["x0", "motion"] and a.step_outputs == a.outputs
    rows = _rows()
    ma, pa = _motion(a, steps, rows)
    mb, pb = _motion(b, steps, rows)
    assert ma.shape == (len(rows), M.NUM_CHANNELS) and np.ptp(ma[:, M.INDEX["jawOpen"]]) > 0
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(pa, pb)
    assert np.all((pa > 0) & (pa < 1))


@needs_torch
def test_split_without_a_closure_head(plain_pair):
    """A model without a closure head: no closure in either layout, the same motion."""
    whole, step, cond = plain_pair
    a, b = BackboneModel(whole), BackboneModel(step)
    assert a.outputs == b.outputs == ["x0", "motion"] and not a.has_closure and not b.has_closure
    assert b.split and b.cond_path == cond
    rows = _rows(90, seed=1)
    for steps in (1, 4):
        ma, _ = _motion(a, steps, rows)
        mb, _ = _motion(b, steps, rows)
        assert np.ptp(ma, axis=0).max() > 1e-3            # the motion follows the inputs
        assert np.abs(ma - mb).max() < 1e-6


@needs_torch
def test_calibration_metadata_can_be_written_into_a_split_file(closure_pair, tmp_path):
    """write_gain edits the step file's metadata; the cond file (and so its sha256) is untouched,
    and with a closure threshold (the lips shut from the cond graph's closure) the motion of the
    two layouts stays identical."""
    from emote.engine.training.calibrate import write_gain
    whole, step, cond, _ = closure_pair
    shutil.copy(whole, tmp_path / "w.onnx")
    shutil.copy(step, tmp_path / "s.onnx")
    shutil.copy(cond, tmp_path / cond.name)                 # the name the step file's metadata gives
    before = cond.read_bytes()
    for p in ("w.onnx", "s.onnx"):
        write_gain(str(tmp_path / p), 1.4, closure_threshold=0.3)
    assert (tmp_path / cond.name).read_bytes() == before
    a, b = BackboneModel(tmp_path / "w.onnx"), BackboneModel(tmp_path / "s.onnx")
    assert b.split and b.articulation_gain == 1.4 and b.closure_threshold == 0.3
    assert b.meta["cond_model"] == cond.name
    ma, _ = _motion(a, 2, _rows())
    mb, _ = _motion(b, 2, _rows())
    np.testing.assert_array_equal(ma, mb)


@needs_torch
def test_refuses_a_split_file_and_a_non_backbone(closure_pair, tmp_path):
    import onnx
    from onnx import TensorProto, helper
    from emote.engine.training.split import split_backbone
    _, step, cond, _ = closure_pair
    shutil.copy(step, tmp_path / "s.onnx")
    shutil.copy(cond, tmp_path / cond.name)
    before = (tmp_path / "s.onnx").read_bytes()
    with pytest.raises(ModelFileError, match="already split.*split the whole graph"):
        split_backbone(tmp_path / "s.onnx")
    assert (tmp_path / "s.onnx").read_bytes() == before and not (tmp_path / "s.cond.onnx").exists()
    v = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [v],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), str(tmp_path / "other.onnx"))
    with pytest.raises(ModelFileError, match="not an emote backbone"):
        split_backbone(tmp_path / "other.onnx")
    with pytest.raises(ModelFileError, match="not found"):
        split_backbone(tmp_path / "nope.onnx")


@needs_torch
def test_out_leaves_the_source_alone_and_the_cli_reports(plain_pair, tmp_path, capsys):
    from emote.engine.training.split import main
    whole = plain_pair[0]
    src = tmp_path / "whole.onnx"
    shutil.copy(whole, src)
    assert main([str(src), "--out", str(tmp_path / "o" / "fast.onnx"), "--repeats", "5"]) == 0
    assert src.read_bytes() == whole.read_bytes() and (tmp_path / "o" / "fast.cond.onnx").is_file()
    out = capsys.readouterr().out
    assert "max abs diff" in out and "4 step(s) whole" in out
    assert BackboneModel(tmp_path / "o" / "fast.onnx").split
    assert main([str(tmp_path / "o" / "fast.onnx")]) == 1
    assert "already split" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out


def test_missing_or_altered_cond_file_is_a_clear_error(shipped_or_smoke, tmp_path):
    """A step file whose cond file is missing, or not the one it was split with, does not load;
    the message names both files and says to copy the cond file or split again."""
    step, cond = shipped_or_smoke
    shutil.copy(step, tmp_path / step.name)
    with pytest.raises(ModelFileError, match=rf"{step.name} is a split backbone.*{cond.name} is missing.*split"):
        BackboneModel(tmp_path / step.name)
    data = bytearray(cond.read_bytes())
    data[len(data) // 2] ^= 0x01                   # one flipped bit in the weights
    (tmp_path / cond.name).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=rf"{cond.name} does not belong to .*{step.name}.*split"):
        BackboneModel(tmp_path / step.name)
    shutil.copy(cond, tmp_path / cond.name)
    assert BackboneModel(tmp_path / step.name).split


@pytest.mark.skipif(not _shipped_is_split(), reason="engine/assets/backbone.onnx is not split")
def test_the_shipped_pair_loads_and_matches():
    """The committed step file and its cond file: the sha256 matches, both sessions load, and every
    distilled step count samples a chunk with the closure from the cond graph."""
    step = ASSETS / "backbone.onnx"
    meta = _meta(step)
    cond = ASSETS / meta["cond_model"]
    assert cond.name == "backbone.cond.onnx"
    assert hashlib.sha256(cond.read_bytes()).hexdigest() == meta["cond_sha256"]
    m = BackboneModel(step)
    assert m.split and m.cond_path == cond and m.step_outputs == ["x0", "motion"]
    assert m.has_closure == ("closure" in [o.name for o in m.cond_session.get_outputs()])
    audio = B.FeaturePrep(m.fps, m.n_mels, m.spectral_norm)(_rows(m.window))
    for steps in m.schedules:
        motion, p = m.sample(audio, M.rest(m.past), np.ones(3, np.float32),
                             np.zeros((m.hop, M.NUM_CHANNELS), np.float32), steps)
        assert motion.shape == (m.hop, M.NUM_CHANNELS) and np.isfinite(motion).all()
        assert (p is None) == (not m.has_closure)


@needs_torch
def test_join_gives_back_the_whole_graph_and_renames_a_pair(closure_pair, tmp_path, capsys):
    """split --join: the pair joined into one graph that reproduces it exactly, with the whole
    file's metadata; split again under another name, it loads under that name."""
    from emote.engine.training.split import join_split, main, max_abs_diff
    whole, step, cond, _ = closure_pair
    joined = tmp_path / "joined.onnx"
    assert main([str(step), "--join", "--out", str(joined)]) == 0
    assert "max abs diff against the pair 0" in capsys.readouterr().out
    assert max_abs_diff(str(joined), str(step), str(cond), batches=(1, 3)) == 0.0
    assert _meta(joined) == _meta(whole)
    assert main([str(joined), "--out", str(tmp_path / "renamed.onnx"), "--repeats", "5"]) == 0
    renamed = BackboneModel(tmp_path / "renamed.onnx")
    assert renamed.cond_path == tmp_path / "renamed.cond.onnx" and renamed.meta["cond_model"] == "renamed.cond.onnx"
    with pytest.raises(ModelFileError, match="not split"):
        join_split(whole)
    with pytest.raises(SystemExit) as e:
        main([str(step), "--join"])
    assert e.value.code == 2
