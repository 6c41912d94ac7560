"""Pack an ensemble backbone into stacked graphs: the same models and outputs, fewer ops.

    python -m emote.engine.training.pack engine/assets/backbone.onnx [--out PATH] [--group-closure]

The shipped backbone is an ensemble, grafted together node by node: two motion models whose jaw is
averaged (engine.training.jaw_ensemble) and several closure nets whose logits are averaged
(closure_net --merge). Each model's ops are tiny (a chunk is a handful of frames), so ONNX Runtime's
time goes to running many small ops: two motion models cost nearly twice one. Packing reads the
weights back out of the graph and exports one torch module in which the motion models are stacked
on a leading axis (each layer one op for both), their LayerNorm affines folded into the Linears
after them and every adaLN scale's and gate's ``1 +`` folded into the modulation's bias. The outputs
(x0, motion, closure) equal the source's to float rounding (checked on random inputs before
anything is written: :data:`TOLERANCE`; measured 5e-6 on the shipped model); the calibration in the
metadata carries over unchanged. A split source (engine.training.split) is split again after
packing; a whole one stays whole. Run it last, after calibrate. Needs the ``train`` extra.

Measured on the shipped model (machine D, one thread, the least of 16 medians of 300 runs):
cond 0.93 -> 0.87 ms a chunk, step 0.70 -> 0.535 ms, so 1 / 2 / 4 steps 1.63 / 2.32 / 3.72 ->
1.41 / 1.94 / 3.01 ms. ``--group-closure`` also stacks the closure nets of one width (the shallower
ones padded with identity blocks, whose output projections are zero, so they add exactly nothing);
that makes the cond graph slower (1.01 against 0.82 ms): at these sizes ONNX Runtime's batched
MatMul costs more than separate ones ((2, 7, 96) @ (2, 96, 96): 8.5 us, against 2 x 3.1 us), which
the motion stack makes up for by the elementwise ops it saves.

Weights are found by name: a named initializer is the parameter of that name (``model.`` dropped);
an exported Linear's weight (``onnx::MatMul_N``) is named by the scope of the MatMul that reads it
(``/model/blocks.0/self_attn/q/MatMul`` -> ``blocks.0.self_attn.q.weight``, transposed). Grafted
parts carry their graft's prefix: ``jaw2/`` for the second motion model, ``cnet/`` (one net) or
``cnet/eK/cnet/`` (an ensemble's net K) for closure nets.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emote.engine import motion as M
from emote.engine.exceptions import ModelFileError

__all__ = ["TOLERANCE", "read_weights", "PackedBackbone", "build", "export", "write", "pack", "reference_outputs",
           "main"]

#: largest |packed - source| accepted on any output
TOLERANCE = 1e-4
INPUTS = ("x", "t", "audio", "past", "controls")
_CNET = re.compile(r"^cnet/(?:e\d+/cnet/)?")


def _param_path(scope: str) -> str:
    """'/model/blocks.0/mlp/mlp.0/MatMul' -> 'model.blocks.0.mlp.0' (a child's scope repeats its
    Sequential parent's name: 'mlp', 'mlp.0')."""
    path: list[str] = []
    for s in [s for s in scope.split("/")[:-1] if s]:
        if path and s.startswith(path[-1] + "."):
            path[-1] = s
        else:
            path.append(s)
    return ".".join(path)


def _component(name: str) -> str:
    """A tensor or node name's graft prefix: '' (the first motion model), 'jaw2/' or a closure net's."""
    if name.startswith("jaw2/"):
        return "jaw2/"
    m = _CNET.match(name)
    return m.group(0) if m else ""


def read_weights(paths: list[str | os.PathLike]) -> dict[str, dict[str, np.ndarray]]:
    """The parameters in the ONNX files ``paths`` (a whole backbone, or a step file and its cond
    file) -> {graft prefix: {parameter name: array}} (module docstring). Initializers that are not
    parameters (export constants) are skipped."""
    import onnx
    from onnx import numpy_helper
    out: dict[str, dict[str, np.ndarray]] = {}
    for p in paths:
        g = onnx.load(str(p)).graph
        readers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        for t in g.initializer:
            pre = _component(t.name)
            rest = t.name[len(pre):]
            arr = numpy_helper.to_array(t)
            if rest.startswith("onnx::"):
                nodes = readers.get(t.name, [])
                if len(nodes) != 1 or nodes[0].op_type != "MatMul" or nodes[0].input[1] != t.name:
                    continue
                key, arr = _param_path(nodes[0].name[len(pre):]) + ".weight", arr.T
            else:
                key = rest
            key = key.removeprefix("model.")
            out.setdefault(pre, {})[key] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def _stack(dicts: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, torch.Tensor]:
    """{name: tensor} of the parameters ``names`` that the models ``dicts`` have, shaped to
    broadcast against the activations: one model, as they are, a Linear's weight transposed to
    (in, out); E > 1 models stacked on a leading axis with a batch axis after it: (E, 1, in, out)
    weights, (E, 1, 1, D) vectors, (E, 1, L, D) position tables, for (E, B, L, D) activations."""
    st = {}
    for k in [k for k in names if k in dicts[0]]:
        a = np.stack([d[k] for d in dicts])
        if k.endswith(".weight") and a.ndim == 3:
            a = a.transpose(0, 2, 1)
        if len(dicts) == 1:
            a = a[0]
        else:
            a = a.reshape(a.shape[0], *[1] * (4 - a.ndim), *a.shape[1:])
        st[k] = torch.from_numpy(np.ascontiguousarray(a))
    return st


def _fold_norm(d: dict[str, np.ndarray], norm: str, linears: list[str]) -> None:
    """Move LayerNorm ``norm``'s scale and shift into the Linears that read it (W' = W diag(w),
    c' = c + W b) and drop them from ``d``: a stacked LayerNorm then needs no per-model affine ops."""
    w, b = d.pop(norm + ".weight").astype(np.float64), d.pop(norm + ".bias").astype(np.float64)
    for lin in linears:
        W = d[lin + ".weight"].astype(np.float64)
        d[lin + ".bias"] = (d[lin + ".bias"] + W @ b).astype(np.float32)
        d[lin + ".weight"] = (W * w[None, :]).astype(np.float32)


class _Stacked(torch.nn.Module):
    """The parameters of E same-shaped models (:func:`_stack`) and their layers. E = 1: activations
    (B, L, D), the layers as the source's; E > 1: (E, B, L, D), one op per layer for all E models."""

    def __init__(self, params: dict[str, torch.Tensor], heads: int, dim: int, n: int) -> None:
        super().__init__()
        self.heads, self.dim, self.n = heads, dim, n
        self.lead = (n, -1) if n > 1 else (-1,)
        self._names = {}
        for k, v in params.items():
            safe = k.replace(".", "__")
            self.register_buffer(safe, v)
            self._names[k] = safe

    def p(self, name: str) -> torch.Tensor:
        return getattr(self, self._names[name])

    def has(self, name: str) -> bool:
        return name in self._names

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """An input every model reads, (B, ...) -> broadcastable against the activations."""
        return x[None] if self.n > 1 else x

    def lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.matmul(x, self.p(name + ".weight")) + self.p(name + ".bias")

    def ln(self, x: torch.Tensor, name: str | None) -> torch.Tensor:
        """LayerNorm; its affine inside the op for one model, else folded away or applied after."""
        if name is None or not self.has(name + ".weight"):
            return F.layer_norm(x, (self.dim,), eps=1e-5)
        if self.n == 1:
            return F.layer_norm(x, (self.dim,), self.p(name + ".weight"), self.p(name + ".bias"), eps=1e-5)
        return F.layer_norm(x, (self.dim,), eps=1e-5) * self.p(name + ".weight") + self.p(name + ".bias")

    def attn(self, x: torch.Tensor, mem: torch.Tensor, name: str, L: int, S: int) -> torch.Tensor:
        """x (..., B, L, D) queries, mem (..., B, S, D) keys/values -> (..., B, L, D); the sizes are
        passed as ints so that the exported graph has no shape arithmetic."""
        D, h = self.dim, self.heads
        dh = D // h
        q = self.lin(x, name + ".q").reshape(*self.lead, L, h, dh).transpose(-3, -2)
        kv = self.lin(mem, name + ".kv").reshape(*self.lead, S, 2, h, dh)
        k, v = kv[..., 0, :, :].transpose(-3, -2), kv[..., 1, :, :].transpose(-3, -2)
        a = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)), dim=-1)
        return self.lin(torch.matmul(a, v).transpose(-3, -2).reshape(*self.lead, L, D), name + ".o")

    def mlp(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.lin(F.gelu(self.lin(x, name + ".0")), name + ".2")

    def audio_block(self, a: torch.Tensor, name: str, W: int) -> torch.Tensor:
        h = self.ln(a, name + ".n1")
        a = a + self.attn(h, h, name + ".attn", W, W)
        return a + self.mlp(self.ln(a, name + ".n2"), name + ".mlp")


def _motion_names(cfg: dict) -> list[str]:
    names = ["feat_mean", "feat_std", "motion_mean", "motion_std", "audio_pos", "pos"]
    lin = ["audio_in.0", "audio_in.2", "motion_in", "t_mlp.0", "t_mlp.2", "c_mlp.0", "c_mlp.2", "out"]
    for i in range(cfg["audio_layers"]):
        b = f"audio_blocks.{i}"
        lin += [f"{b}.attn.{k}" for k in ("q", "kv", "o")] + [f"{b}.mlp.0", f"{b}.mlp.2"]
        names += [f"{b}.n1.weight", f"{b}.n1.bias", f"{b}.n2.weight", f"{b}.n2.bias"]
    for i in range(cfg["layers"]):
        b = f"blocks.{i}"
        lin += [f"{b}.{a}.{k}" for a in ("self_attn", "cross") for k in ("q", "kv", "o")]
        lin += [f"{b}.mlp.0", f"{b}.mlp.2", f"{b}.mod"]
        names += [f"{b}.n2.weight", f"{b}.n2.bias"]
    names += ["audio_norm.weight", "audio_norm.bias", "out_norm.weight", "out_norm.bias"]
    return names + [f"{n}.{w}" for n in lin for w in ("weight", "bias")]


def _closure_names(layers: int) -> list[str]:
    names = ["feat_mean", "feat_std", "net.pos", "net.norm.weight", "net.norm.bias"]
    lin = ["net.inp.0", "net.inp.2", "net.out.0", "net.out.2"]
    for i in range(layers):
        b = f"net.blocks.{i}"
        lin += [f"{b}.attn.{k}" for k in ("q", "kv", "o")] + [f"{b}.mlp.0", f"{b}.mlp.2"]
        names += [f"{b}.n1.weight", f"{b}.n1.bias", f"{b}.n2.weight", f"{b}.n2.bias"]
    return names + [f"{n}.{w}" for n in lin for w in ("weight", "bias")]


def _identity_block(d: dict[str, np.ndarray], i: int, like: int) -> None:
    """Add block ``i`` to closure-net weights ``d``: shaped as block ``like``, its output
    projections zero (its attention and MLP add exactly 0: the block passes its input through)."""
    for k in [k for k in d if k.startswith(f"net.blocks.{like}.")]:
        new = k.replace(f"net.blocks.{like}.", f"net.blocks.{i}.", 1)
        zero = any(s in k for s in (".attn.o.", ".mlp.2."))
        d[new] = np.zeros_like(d[k]) if zero else d[k].copy()


def _motion_folds(cfg: dict) -> list[tuple[str, list[str]]]:
    """The motion model's LayerNorms with an affine and the Linears that read each."""
    out = []
    for i in range(cfg["audio_layers"]):
        b = f"audio_blocks.{i}"
        out += [(f"{b}.n1", [f"{b}.attn.q", f"{b}.attn.kv"]), (f"{b}.n2", [f"{b}.mlp.0"])]
    out.append(("audio_norm", [f"blocks.{j}.cross.kv" for j in range(cfg["layers"])]))
    out += [(f"blocks.{j}.n2", [f"blocks.{j}.cross.q"]) for j in range(cfg["layers"])]
    return out + [("out_norm", ["out"])]


def _closure_folds(layers: int) -> list[tuple[str, list[str]]]:
    out = []
    for i in range(layers):
        b = f"net.blocks.{i}"
        out += [(f"{b}.n1", [f"{b}.attn.q", f"{b}.attn.kv"]), (f"{b}.n2", [f"{b}.mlp.0"])]
    return out + [("net.norm", ["net.out.0"])]


def _depth(d: dict[str, np.ndarray]) -> int:
    return len({k.split(".")[2] for k in d if k.startswith("net.blocks.")})


class PackedBackbone(torch.nn.Module):
    """(x, t, audio, past, controls) -> (x0, motion[, closure]) as the source ensemble computes them:
    E motion models stacked, their ``avg_channels`` averaged (the rest are the first model's), and
    the closure nets' window logits averaged and sliced to the chunk's ``frames`` frames from
    ``context``; the nets run one by one, or (``group_closure``) stacked by width. Stacked groups
    have their LayerNorm affines folded into the next Linear; every adaLN scale and gate has its
    1 + folded into the modulation's bias."""

    def __init__(self, motion: list[dict[str, np.ndarray]], cfg: dict, avg_channels: list[int],
                 closure: list[dict[str, np.ndarray]], frames: int, group_closure: bool = False,
                 stack_motion: bool = True) -> None:
        super().__init__()
        self.cfg, self.frames = cfg, int(frames)
        self.window = cfg["context"] + cfg["hop"] + cfg["lookahead"]
        motion = [dict(d) for d in motion]
        d_ = cfg["dim"]
        for d in motion:
            if len(motion) > 1 and stack_motion:
                for norm, lins in _motion_folds(cfg):
                    _fold_norm(d, norm, lins)
            for j in range(cfg["layers"]):
                bias = d[f"blocks.{j}.mod.bias"].copy()
                for k in (0, 2, 3, 5):                 # s1, g1, s3, g3 of (s1, b1, g1, s3, b3, g3)
                    bias[k * d_:(k + 1) * d_] += 1.0
                d[f"blocks.{j}.mod.bias"] = bias
        self.ms = torch.nn.ModuleList(
            _Stacked(_stack(ms, _motion_names(cfg)), cfg["heads"], d_, len(ms))
            for ms in ([motion] if stack_motion else [[d] for d in motion]))
        self.n_motion = len(motion)
        mask = np.zeros(M.NUM_CHANNELS, np.float32)
        mask[avg_channels] = 1.0
        self.register_buffer("avg_mask", torch.from_numpy(mask))
        groups: list[list[dict[str, np.ndarray]]] = []
        if group_closure:
            by_dim: dict[int, list] = {}
            for d in closure:
                by_dim.setdefault(d["net.pos"].shape[1], []).append(dict(d))
            groups = [by_dim[k] for k in sorted(by_dim)]
        else:
            groups = [[dict(d)] for d in closure]
        self.groups = torch.nn.ModuleList()
        self.group_layers: list[int] = []
        for nets in groups:
            depth = max(_depth(d) for d in nets)
            for d in nets:
                for i in range(_depth(d), depth):
                    _identity_block(d, i, _depth(d) - 1)
                if len(nets) > 1:
                    for norm, lins in _closure_folds(depth):
                        _fold_norm(d, norm, lins)
            dim = nets[0]["net.pos"].shape[1]
            self.groups.append(_Stacked(_stack(nets, _closure_names(depth)), 4 if dim >= 64 else 2, dim, len(nets)))
            self.group_layers.append(depth)
        self.n_nets = len(closure)

    def forward(self, x, t, audio, past, controls):
        x0s, motions = [], []
        for m in self.ms:
            x0, motion = self._motion(m, x, t, audio, past, controls)
            x0s += list(x0.unbind(0)) if m.n > 1 else [x0]
            motions += list(motion.unbind(0)) if m.n > 1 else [motion]
        x0, motion = x0s[0], motions[0]
        if len(x0s) > 1:
            x0 = x0 + (sum(x0s[1:], x0s[0]) * (1.0 / len(x0s)) - x0) * self.avg_mask
            motion = motion + (sum(motions[1:], motions[0]) * (1.0 / len(motions)) - motion) * self.avg_mask
        if not self.n_nets:
            return x0, motion
        return x0, motion, self._closure(audio)

    def _motion(self, m, x, t, audio, past, controls):
        """One stack of motion models -> its (x0, motion), (E, B, T, C) or (B, T, C)."""
        from .backbone_model import timestep_embedding
        cfg = self.cfg
        a = (m.shared(audio) - m.p("feat_mean")) / m.p("feat_std")
        a = m.mlp(a, "audio_in") + m.p("audio_pos")
        for i in range(cfg["audio_layers"]):
            a = m.audio_block(a, f"audio_blocks.{i}", self.window)
        mem = m.ln(a, "audio_norm")
        c = m.lin(F.silu(m.lin(m.shared(controls[:, None, :]), "c_mlp.0")), "c_mlp.2")
        temb = m.shared(timestep_embedding(t, cfg["dim"])[:, None, :])
        c = c + m.lin(F.silu(m.lin(temb, "t_mlp.0")), "t_mlp.2")
        mm, ms = m.p("motion_mean"), m.p("motion_std")
        h = torch.cat([m.lin((m.shared(past) - mm) / ms, "motion_in"), m.lin(m.shared(x), "motion_in")], dim=-2)
        h = h + m.p("pos")
        for i in range(cfg["layers"]):
            h = self._block(m, h, mem, c, f"blocks.{i}")
        x0 = m.lin(m.ln(h[..., cfg["past"]:, :], "out_norm"), "out")
        return x0, x0 * ms + mm

    def _block(self, m, h, mem, c, name):
        L = self.cfg["past"] + self.cfg["hop"]
        s1, b1, g1, s3, b3, g3 = m.lin(F.silu(c), name + ".mod").chunk(6, dim=-1)   # scales and gates hold their 1 +
        u = m.ln(h, None) * s1 + b1
        h = h + g1 * m.attn(u, u, name + ".self_attn", L, L)
        h = h + m.attn(m.ln(h, name + ".n2"), mem, name + ".cross", L, self.window)
        u = m.ln(h, None) * s3 + b3
        return h + g3 * m.mlp(u, name + ".mlp")

    def _closure(self, audio):
        total = None
        for g, layers in zip(self.groups, self.group_layers):
            a = (g.shared(audio) - g.p("feat_mean")) / g.p("feat_std")
            a = g.mlp(a, "net.inp") + g.p("net.pos")
            for i in range(layers):
                a = g.audio_block(a, f"net.blocks.{i}", self.window)
            logits = g.mlp(g.ln(a, "net.norm"), "net.out")[..., 0]
            logits = logits.sum(0) if g.n > 1 else logits                         # (B, W)
            total = logits if total is None else total + logits
        c = self.cfg["context"]
        return (total * (1.0 / self.n_nets))[:, c:c + self.frames]


def _source(path: Path) -> tuple[list[Path], dict, list]:
    """A backbone file -> (its files: the step file and, if split, its cond file; its emote_backbone
    metadata; its other metadata_props)."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if "emote_backbone" not in props:
        raise ModelFileError(f"{path} is not an emote backbone model (no emote_backbone metadata)")
    meta = json.loads(props["emote_backbone"])
    files = [path]
    if "cond_model" in meta:
        files.append(path.with_name(meta["cond_model"]))
        if not files[-1].is_file():
            raise ModelFileError(f"{path} is split but its per-chunk part {files[-1]} is missing")
    return files, meta, [(p.key, p.value) for p in m.metadata_props if p.key != "emote_backbone"]


def reference_outputs(path: Path, batch: int = 8, seed: int = 0) -> tuple[dict, dict]:
    """(feeds, {output: array}) of the backbone at ``path`` (whole or split) on random inputs."""
    from emote.engine.backbone import BackboneModel

    from .split import _run_split
    bm = BackboneModel(path)
    rng = np.random.default_rng(seed)               # the same feeds for a whole and a split file
    feeds = {"x": rng.standard_normal((batch, bm.hop, M.NUM_CHANNELS)).astype(np.float32),
             "t": (rng.random(batch) * 999).astype(np.float32),
             "audio": rng.standard_normal((batch, bm.window, int(bm.meta["model"]["features"]))).astype(np.float32),
             "past": (rng.standard_normal((batch, bm.past, M.NUM_CHANNELS)) * 0.2).astype(np.float32),
             "controls": (rng.random((batch, 3)) * 2).astype(np.float32)}
    if bm.split:
        got = _run_split(bm.session, bm.cond_session, feeds)
        return feeds, {k: got[k] for k in bm.outputs}
    return feeds, dict(zip(bm.outputs, bm.session.run(bm.outputs, feeds)))


def build(path: Path, group_closure: bool = False, stack_motion: bool = True) -> tuple[PackedBackbone, dict, list]:
    """The PackedBackbone of the backbone at ``path``, its metadata and other metadata_props."""
    files, meta, props = _source(path)
    if "packed" in meta:
        raise ModelFileError(f"{path} is packed already ({meta['packed']}): pack the model it was made from")
    weights = read_weights(files)
    cfg = dict(meta["model"])
    motion = [weights.get("", {})]
    avg: list[int] = []
    if "jaw_ensemble" in meta:
        motion.append(weights.get("jaw2/", {}))
        avg = [M.INDEX[c] for c in meta["jaw_ensemble"]["channels"]]
    nets = [weights[k] for k in sorted(weights, key=_net_order) if k.startswith("cnet/") and "net.pos" in weights[k]]
    if cfg.get("closure_head") and not nets:
        raise ModelFileError(f"{path}: its closure head is the motion model's own (no grafted closure net): "
                             f"nothing to pack there; pack models made by closure_net and jaw_ensemble")
    for i, d in enumerate(motion):
        missing = [k for k in _motion_names(cfg) if k not in d]
        if missing:
            raise ModelFileError(f"{path}: motion model {i + 1} lacks weight {missing[0]!r}: not a backbone "
                                 f"exported by train_backbone (or renamed since)")
    _, ref = reference_outputs(path, batch=1)
    frames = ref["closure"].shape[1] if "closure" in ref else 0
    return PackedBackbone(motion, cfg, avg, nets, frames, group_closure, stack_motion).eval(), meta, props


def _net_order(prefix: str) -> int:
    m = re.match(r"cnet/e(\d+)/", prefix)
    return int(m.group(1)) if m else 0


def export(module: PackedBackbone, path: Path, meta: dict, props: list) -> Path:
    """Write ``module`` as a whole backbone graph with ``meta`` (the split keys dropped) + props."""
    import onnx
    cfg = module.cfg
    g = torch.Generator().manual_seed(0)
    ex = (torch.randn(1, cfg["hop"], cfg["channels"], generator=g), torch.rand(1, generator=g) * 999.0,
          torch.randn(1, cfg["context"] + cfg["hop"] + cfg["lookahead"], cfg["features"], generator=g),
          torch.randn(1, cfg["past"], cfg["channels"], generator=g) * 0.2, torch.rand(1, 3, generator=g) * 2.0)
    outs = ["x0", "motion"] + (["closure"] if module.n_nets else [])
    tmp = path.with_name(path.name + ".export-tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(module, ex, str(tmp), dynamo=False, opset_version=17, input_names=list(INPUTS),
                              output_names=outs, dynamic_axes={k: {0: "batch"} for k in (*INPUTS, *outs)})
        m = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    from .split import SPLIT_KEYS
    info = {k: v for k, v in meta.items() if k not in SPLIT_KEYS}
    info["packed"] = {"motion_models": module.n_motion, "motion_stacks": len(module.ms), "closure_nets": module.n_nets,
                      "closure_groups": [{"nets": g.n, "dim": g.dim, "layers": n}
                                         for g, n in zip(module.groups, module.group_layers)],
                      "packed": time.strftime("%Y-%m-%d")}
    for k, v in props:
        m.metadata_props.add(key=k, value=v)
    m.metadata_props.add(key="emote_backbone", value=json.dumps(info))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def write(module: PackedBackbone, dst: Path, meta: dict, props: list, split: bool, check=None) -> None:
    """Export ``module`` (:func:`export`) to a temporary whole graph, let ``check(path)`` raise if it
    is wrong, then write it to ``dst``: split there (engine.training.split) if ``split``, else as it
    is. Nothing is left behind but ``dst`` (and its cond file)."""
    from .split import split_backbone
    dst.parent.mkdir(parents=True, exist_ok=True)
    whole = dst.with_name(dst.stem + ".packed-tmp.onnx")
    try:
        export(module, whole, meta, props)
        if check is not None:
            check(whole)
        if split:
            split_backbone(whole, dst)
        else:
            os.replace(whole, dst)
    finally:
        whole.unlink(missing_ok=True)


def _max_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        raise ModelFileError(f"the packed graph's outputs {sorted(b)} differ from the source's {sorted(a)}")
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def pack(path: str | os.PathLike, out: str | os.PathLike | None = None, group_closure: bool = False,
         stack_motion: bool = True, log=print) -> dict:
    """Pack the backbone at ``path`` (module docstring) into ``out`` (default: in place). Nothing is
    written unless the packed outputs equal the source's within TOLERANCE. Returns the diffs."""
    src = Path(path)
    dst = Path(out) if out is not None else src
    was_split = "cond_model" in _source(src)[1]
    feeds, ref = reference_outputs(src)
    module, meta, props = build(src, group_closure, stack_motion)
    with torch.no_grad():
        got = [r.numpy() for r in module(*(torch.from_numpy(feeds[k]) for k in INPUTS))]
    diffs = {"torch": _max_diff(ref, dict(zip(["x0", "motion", "closure"], got)))}
    if diffs["torch"] > TOLERANCE:
        raise ModelFileError(f"the packed module does not reproduce {src} (max abs diff {diffs['torch']:.3g}); "
                             f"nothing was written")

    def check(whole: Path) -> None:
        diffs["onnx"] = _max_diff(ref, reference_outputs(whole)[1])
        if diffs["onnx"] > TOLERANCE:
            raise ModelFileError(f"the packed graph does not reproduce {src} (max abs diff {diffs['onnx']:.3g} > "
                                 f"{TOLERANCE:g}); nothing was written")
    write(module, dst, meta, props, was_split, check)
    diffs["written"] = _max_diff(ref, reference_outputs(dst)[1])
    log(f"wrote {dst}{' (split: ' + dst.stem + '.cond.onnx beside it)' if was_split else ''}: "
        f"{meta['model']['layers']}-layer motion models x {module.n_motion} in {len(module.ms)} stack(s), closure nets "
        f"{module.n_nets} in {len(module.groups)} group(s); max abs diff against the source {diffs['written']:.1e}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a backbone .onnx (whole, or a split step file with its cond file beside it)")
    ap.add_argument("--out", default=None, help="write here instead of over the model (a split model's cond "
                                                "file goes beside it)")
    ap.add_argument("--group-closure", action="store_true",
                    help="also stack the closure nets of one width (fewer ops; slower on ONNX Runtime's CPU "
                         "provider, whose batched MatMul loses to separate ones at these sizes)")
    a = ap.parse_args(argv)
    if not Path(a.model).is_file():
        ap.error(f"no such file {a.model}")
    try:
        pack(a.model, a.out, a.group_closure)
    except ModelFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
