"""Give an exported backbone a ClosureNet: train one on the data engine's shards and graft it into
the ONNX file, in place of the closure head the backbone has (or adding one).

    python -m emote.engine.training.closure_net engine/assets/backbone.onnx --data data/motion \\
        [--layers 2] [--dim 96] [--iters 12000] [--voice-warp 0.8] [--seed 0] [--out PATH]
    python -m emote.engine.training.closure_net engine/assets/backbone.onnx --merge A.onnx B.onnx ... [--out PATH]

A ClosureNet (engine.training.backbone_model) reads the audio window with its own encoder and
gives the probability that the lips are shut on each frame (a bilabial closure). It is trained
alone (train_backbone.train_closure: every window frame labelled, the motion model not run), so
a trained backbone keeps its motion exactly: the graft removes the graph's old ``closure``
output and the nodes only it used, and adds the net's nodes (prefixed ``cnet/``) reading the same
``audio`` input. ``train_backbone --closure-head --closure-layers N`` trains the same net in the
same way after distillation, from scratch; this command gives one to a backbone already trained.
The closure threshold is then recalibrated (engine.training.calibrate); the graft drops the old one.

The grafted ``closure`` output holds the chunk's frames and the next one (the first lookahead
frame, estimated from less audio after it), which the runtime's peak rule reads
(engine.backbone.closure_peaks). ``--merge`` grafts an ensemble instead: the mean of the window
logits of the closure nets that earlier runs grafted into A, B, ... (nets trained with other seeds
or sizes make different mistakes on unseen voices; the mean is surer than any one of them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["ClosureExport", "model_config", "train_for", "export_net", "graft", "check_graft", "ensemble_net",
           "check_ensemble", "merge", "prefixed", "main"]

PREFIX = "cnet/"


class ClosureExport(torch.nn.Module):
    """(B, W, P) feature rows -> (B, hop + 1) closure logits of the chunk's frames and the next
    frame (B, hop without lookahead), the net's normalisation folded in: the graph the graft adds."""

    def __init__(self, net, feat_mean, feat_std, context: int, hop: int) -> None:
        super().__init__()
        self.net, self.context, self.hop = net, int(context), int(hop)
        self.frames = self.hop + (1 if net.pos.shape[0] > self.context + self.hop else 0)
        self.register_buffer("feat_mean", torch.as_tensor(feat_mean, dtype=torch.float32))
        self.register_buffer("feat_std", torch.as_tensor(feat_std, dtype=torch.float32))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net((audio - self.feat_mean) / self.feat_std)[:, self.context:self.context + self.frames]


def model_config(backbone_meta: dict, layers: int, dim: int):
    """The backbone's ModelConfig (from its metadata) with a ClosureNet of ``layers`` blocks of ``dim``."""
    from .backbone_model import ModelConfig
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = ModelConfig(**{k: v for k, v in backbone_meta["model"].items() if k in fields})
    return dataclasses.replace(cfg, closure_head=True, closure_layers=layers, dim=dim, heads=4 if dim >= 64 else 2)


def train_for(cfg, data_dir: str, iters: int, voice_warp: float = 0.8, seed: int = 0, batch: int = 256,
              log=print):
    """Train a ClosureNet of ``cfg`` on the train split of ``data_dir`` (validation utterances left
    out, voice warp as train_backbone's) -> (ClosureExport module, training report)."""
    from . import backbone_data as D
    from .backbone_model import ClosureNet
    from .train_backbone import ChunkData, train_closure
    torch.manual_seed(seed)
    train = [c for c in D.load_shards(data_dir, ("train",)) if not D.is_validation(c.uid)]
    if not train:
        raise SystemExit(f"no train-split utterances in {data_dir}")
    if voice_warp > 0:
        train = D.warp_clips(train, voice_warp, seed=seed)
    data = ChunkData(train, cfg)
    fm, fs, _, _ = data.stats()
    net = ClosureNet(cfg)
    log(f"{len(data)} chunks of {len(train)} utterances; ClosureNet {sum(p.numel() for p in net.parameters()):,} "
        f"parameters ({cfg.closure_layers} blocks of {cfg.dim})")
    rep = train_closure(net, fm, fs, data, iters, batch=batch, seed=seed, log=log)
    return ClosureExport(net, fm, fs, cfg.context, cfg.hop).eval(), rep


def export_net(module, cfg, path: str | os.PathLike) -> Path:
    """The ClosureExport module as its own ONNX graph: input ``audio`` (B, W, P), output ``closure``."""
    path = Path(path)
    ex = torch.randn(1, cfg.window, cfg.features)
    with torch.no_grad():
        torch.onnx.export(module, (ex,), str(path), dynamo=False, opset_version=17, input_names=["audio"],
                          output_names=["closure"], dynamic_axes={"audio": {0: "batch"}, "closure": {0: "batch"}})
    return path


def _needed(graph, outputs: set[str]) -> list:
    """The graph's nodes that the named outputs depend on, in the graph's order."""
    producer = {o: n for n in graph.node for o in n.output}
    keep, todo = set(), list(outputs)
    while todo:
        name = todo.pop()
        n = producer.get(name)
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        todo.extend(n.input)
    return [n for n in graph.node if id(n) in keep]


def graft(backbone_path: str | os.PathLike, net_path: str | os.PathLike, out_path: str | os.PathLike,
          info: dict) -> Path:
    """Write ``out_path``: the backbone's graph with its ``closure`` output (if any) and the nodes
    only it used removed, plus the net's graph (names prefixed, reading the backbone's ``audio``
    input) giving ``closure``; ``info`` merged into the emote_backbone metadata (model.closure_layers
    etc.), closure_threshold dropped (recalibrate)."""
    import onnx
    from onnx import helper
    bb, net = onnx.load(str(backbone_path)), onnx.load(str(net_path))
    g, ng = bb.graph, net.graph
    keep_outs = [o for o in g.output if o.name != "closure"]
    nodes = _needed(g, {o.name for o in keep_outs})
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    rename = {i.name: i.name for i in ng.input}                    # the net's input is the backbone's audio
    for t in ng.initializer:
        rename[t.name] = PREFIX + t.name
    for n in ng.node:
        for o in n.output:
            rename[o] = "closure" if o == ng.output[0].name else PREFIX + o
    new_nodes = []
    for n in ng.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = PREFIX + n.name
        m.input[:] = [rename.get(i, i) for i in n.input]
        m.output[:] = [rename.get(o, o) for o in n.output]
        new_nodes.append(m)
    new_inits = []
    for t in ng.initializer:
        u = onnx.TensorProto()
        u.CopyFrom(t)
        u.name = rename[t.name]
        new_inits.append(u)
    out_vi = onnx.ValueInfoProto()
    out_vi.CopyFrom(ng.output[0])
    out_vi.name = "closure"
    graph = helper.make_graph(nodes + new_nodes, g.name, list(g.input), keep_outs + [out_vi],
                              inits + new_inits)
    model = helper.make_model(graph, opset_imports=list(bb.opset_import), producer_name=bb.producer_name)
    model.ir_version = bb.ir_version
    for prop in bb.metadata_props:
        value = prop.value
        if prop.key == "emote_backbone":
            meta = json.loads(value)
            meta.pop("closure_threshold", None)
            meta.pop("mouth_close_map", None)
            meta["model"].update({"closure_head": True, "closure_layers": info["layers"]})
            meta["closure_net"] = info
            value = json.dumps(meta)
        entry = model.metadata_props.add()
        entry.key, entry.value = prop.key, value
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    os.replace(tmp, out_path)
    return out_path


def prefixed(graph, nodes: list, prefix: str, keep: set[str]) -> tuple[list, list]:
    """Copies of ``nodes`` (of ``graph``) and of the initializers they read, every node, tensor and
    initializer name prefixed with ``prefix`` except the names in ``keep`` (the graph inputs they
    share with the graph they are grafted into)."""
    import onnx
    ren = lambda x: x if (x in keep or x == "") else prefix + x  # noqa: E731
    out = []
    for n in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = prefix + n.name
        c.input[:] = [ren(i) for i in n.input]
        c.output[:] = [ren(o) for o in n.output]
        out.append(c)
    used = {i for n in nodes for i in n.input}
    inits = []
    for t in graph.initializer:
        if t.name in used:
            u = onnx.TensorProto()
            u.CopyFrom(t)
            u.name = ren(t.name)
            inits.append(u)
    return out, inits


def _net_part(path: str | os.PathLike, prefix: str) -> tuple[list, list, str, dict]:
    """The closure net grafted into backbone ``path`` (by this module: nodes named ``cnet/...``):
    its nodes and initializers renamed with ``prefix`` (the ``audio`` input kept), the name of its
    window-logits tensor (B, W), and the file's closure_net metadata."""
    import onnx
    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    last = producer.get("closure")
    if last is None or last.op_type != "Slice" or not last.name.startswith(PREFIX):
        raise SystemExit(f"{path} has no closure net grafted by this command (no {PREFIX}... Slice giving "
                         f"'closure'): train one into it first (closure_net MODEL --data DATA --out {path})")
    window = last.input[0]
    nodes = _needed(g, {window})
    foreign = [n.name for n in nodes if not n.name.startswith(PREFIX)]
    if foreign:
        raise SystemExit(f"{path}: the closure net reads the motion model's nodes ({foreign[0]}): not mergeable")
    out_nodes, inits = prefixed(g, nodes, prefix, keep={"audio"})
    meta = json.loads({p.key: p.value for p in m.metadata_props}["emote_backbone"])
    return out_nodes, inits, prefix + window, meta.get("closure_net", {})


def ensemble_net(sources: list, out_path: str | os.PathLike, context: int, hop: int, window: int,
                 features: int) -> tuple[Path, list[dict]]:
    """Write an ONNX graph ``audio`` (B, W, P) -> ``closure`` (B, hop + 1): the mean of the window
    logits of the closure nets grafted into the backbone files ``sources``, sliced to the chunk's
    frames and the next. Returns the path and the sources' closure_net metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, windows, infos = [], [], [], []
    for i, src in enumerate(sources):
        n, t, w, info = _net_part(src, f"e{i}/")
        nodes += n
        inits += t
        windows.append(w)
        infos.append(info)
    frames = hop + (1 if window > context + hop else 0)
    inits += [numpy_helper.from_array(np.array(1.0 / len(windows), np.float32), "ens/scale"),
              numpy_helper.from_array(np.array([context], np.int64), "ens/starts"),
              numpy_helper.from_array(np.array([context + frames], np.int64), "ens/ends"),
              numpy_helper.from_array(np.array([1], np.int64), "ens/axes")]
    nodes += [helper.make_node("Sum", windows, ["ens/sum"], name="ens/Sum"),
              helper.make_node("Mul", ["ens/sum", "ens/scale"], ["ens/mean"], name="ens/Mul"),
              helper.make_node("Slice", ["ens/mean", "ens/starts", "ens/ends", "ens/axes"], ["closure"],
                               name="ens/Slice")]
    graph = helper.make_graph(nodes, "closure_ensemble",
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", window, features])],
                              [helper.make_tensor_value_info("closure", TensorProto.FLOAT, ["batch", frames])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return Path(out_path), infos


def check_ensemble(backbone_path, out_path, sources: list, batch: int = 16) -> dict:
    """Max abs differences on random inputs: the merged file's x0 / motion against the backbone's
    (0: untouched), and its chunk frames' closure against the mean of the sources' closure outputs."""
    import onnxruntime as ort

    from .split import random_feeds
    b = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    feeds = random_feeds(b, batch, np.random.default_rng(2))
    a = ort.InferenceSession(str(backbone_path), providers=["CPUExecutionProvider"])
    ra, rb = a.run(["x0", "motion"], feeds), b.run(["x0", "motion", "closure"], feeds)
    srcs = [ort.InferenceSession(str(s), providers=["CPUExecutionProvider"]).run(["closure"], feeds)[0]
            for s in sources]
    hop = srcs[0].shape[1]
    mean = np.mean([s[:, :hop] for s in srcs], axis=0)
    return {"motion_max_abs_diff": float(max(np.abs(x - y).max() for x, y in zip(ra, rb[:2]))),
            "closure_max_abs_diff": float(np.abs(rb[2][:, :hop] - mean).max()), "frames": int(rb[2].shape[1])}


def _graft_checked(model, out: Path, make_net, check) -> dict:
    """Write ``out``: ``make_net(path)`` writes a net's graph to ``path`` and returns its metadata,
    which is grafted into ``model`` and checked by ``check(grafted path)`` (max abs diffs). Nothing
    is written if the motion moved or the closure disagrees; temporary files never stay."""
    tmp_net, tmp_out = out.with_suffix(".net.tmp.onnx"), out.with_suffix(".grafted.tmp.onnx")
    try:
        graft(model, tmp_net, tmp_out, make_net(tmp_net))
        diffs = check(tmp_out)
        if diffs["motion_max_abs_diff"] > 1e-6 or diffs["closure_max_abs_diff"] > 1e-4:
            raise SystemExit(f"the grafted graph does not agree: {diffs}; {model} is unchanged")
        os.replace(tmp_out, out)
    finally:
        for t in (tmp_net, tmp_out):
            t.unlink(missing_ok=True)
    return diffs


def merge(model: str, sources: list, out: Path, log=print) -> dict:
    """Graft the ensemble of the closure nets in ``sources`` into ``model``, written to ``out``."""
    from emote.engine.backbone import BackboneModel
    meta = BackboneModel(model).meta
    cfg = model_config(meta, 1, 8)

    def make_net(path: Path) -> dict:
        _, infos = ensemble_net(sources, path, cfg.context, cfg.hop, cfg.window, cfg.features)
        return {"layers": max(int(i.get("layers", 1)) for i in infos), "ensemble": infos,
                "sources": [str(s) for s in sources], "merged": time.strftime("%Y-%m-%d")}

    diffs = _graft_checked(model, out, make_net, lambda grafted: check_ensemble(model, grafted, sources))
    log(f"wrote {out}: an ensemble of {len(sources)} closure nets, {diffs['frames']} frames a chunk; motion max "
        f"abs diff {diffs['motion_max_abs_diff']:.1e} (untouched), closure against the sources' mean "
        f"{diffs['closure_max_abs_diff']:.1e}; now calibrate its threshold")
    return diffs


def check_graft(backbone_path, out_path, module, cfg, batch: int = 32) -> dict:
    """Max abs differences on random inputs: the grafted file's x0 / motion against the original
    backbone's (0: the motion model is untouched), its closure against torch's."""
    import onnxruntime as ort
    g = np.random.default_rng(1)
    feeds = {"x": g.normal(size=(batch, cfg.hop, cfg.channels)).astype(np.float32),
             "t": (g.random(batch) * 999).astype(np.float32),
             "audio": g.normal(size=(batch, cfg.window, cfg.features)).astype(np.float32),
             "past": (g.normal(size=(batch, cfg.past, cfg.channels)) * 0.2).astype(np.float32),
             "controls": (g.random((batch, 3)) * 2).astype(np.float32)}
    so = ort.SessionOptions()
    a = ort.InferenceSession(str(backbone_path), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out_path), so, providers=["CPUExecutionProvider"])
    ra, rb = a.run(["x0", "motion"], feeds), b.run(["x0", "motion", "closure"], feeds)
    with torch.no_grad():
        ref = module(torch.from_numpy(feeds["audio"])).numpy()
    return {"motion_max_abs_diff": float(max(np.abs(x - y).max() for x, y in zip(ra, rb[:2]))),
            "closure_max_abs_diff": float(np.abs(rb[2] - ref).max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.closure_net",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an exported backbone (.onnx)")
    ap.add_argument("--data", help="the data engine's shards (build_data --out); needed unless --merge")
    ap.add_argument("--merge", nargs="+", metavar="FILE", default=None,
                    help="instead of training: graft the mean of the closure nets grafted into these backbone "
                         "files (earlier runs of this command) into MODEL")
    ap.add_argument("--out", default=None, help="output path (default: the model, in place)")
    ap.add_argument("--layers", type=int, default=2, help="self-attention blocks of the net's audio encoder")
    ap.add_argument("--dim", type=int, default=96, help="the net's width")
    ap.add_argument("--iters", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--voice-warp", type=float, default=0.8, metavar="SHARE",
                    help="share of training utterances with warped formants and pitch (as train_backbone's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from emote.engine.backbone import BackboneModel
    if "cond_model" in BackboneModel(a.model).meta:
        ap.error(f"{a.model} is split (engine.training.split): graft into the whole model, before the split")
    if a.merge:
        missing = [f for f in a.merge if not Path(f).is_file()]
        if missing:
            ap.error(f"--merge: no such file {missing[0]}")
        merge(a.model, a.merge, Path(a.out or a.model))
        return 0
    if not a.data:
        ap.error("--data is required (or --merge FILE ...)")
    if a.layers < 1 or a.dim < 8 or a.iters < 1:
        ap.error("--layers, --dim and --iters must be positive")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    cfg = model_config(BackboneModel(a.model).meta, a.layers, a.dim)
    module, rep = train_for(cfg, a.data, a.iters, a.voice_warp, a.seed, a.batch, log)
    out = Path(a.out or a.model)
    info = {"layers": a.layers, "dim": a.dim, "iters": a.iters, "voice_warp": a.voice_warp, "seed": a.seed,
            "data": str(a.data), "final_loss": round(float(rep["final_loss"]), 4),
            "train_seconds": round(rep["seconds"], 1), "trained": time.strftime("%Y-%m-%d")}
    diffs = _graft_checked(a.model, out, lambda path: (export_net(module, cfg, path), info)[1],
                           lambda grafted: check_graft(a.model, grafted, module, cfg))
    log(f"wrote {out}: ClosureNet {a.layers} x {a.dim}, motion max abs diff {diffs['motion_max_abs_diff']:.1e} "
        f"(untouched), closure ONNX vs torch {diffs['closure_max_abs_diff']:.1e}; now calibrate its threshold: "
        f"python -m emote.engine.training.calibrate {out} --data {a.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
