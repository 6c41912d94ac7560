"""Split a backbone ONNX file into the part that runs once a chunk and the part that runs every step.

    python -m emote.engine.training.split engine/assets/backbone.onnx [--out OUT]
    python -m emote.engine.training.split PAIR.onnx --join --out WHOLE.onnx    # back to one graph

The backbone's graph (engine.backbone) takes the noisy chunk ``x`` and the timestep ``t`` with the
chunk's ``audio``, ``past`` motion and ``controls``; a few-step sampler runs it 1, 2 or 4 times a
chunk. Everything that depends only on audio/past/controls (the audio encoder, the cross-attention
keys and values, the control MLP, the closure head) is the same at every step. The split puts those
nodes in a *cond* graph (inputs audio, past, controls; outputs the tensors the step nodes read, then
any model output that needs neither x nor t, e.g. ``closure``) and the rest in a *step* graph (inputs
x, t, the cond tensors; outputs x0, motion). The runtime runs the cond graph once a chunk.

Nodes are classified in graph order: "step" if an input depends on x or t, "cond" if one depends on
audio, past or controls, else static (weights and constants only: left to the graph that reads them).
The step file replaces the whole file (in place by default, atomically) and keeps its
``emote_backbone`` metadata plus ``cond_model`` (the cond file's name, ``<stem>.cond.onnx`` beside
it), ``cond_outputs`` (the cond tensors the step graph reads, in order) and ``cond_sha256``. Before
anything is written the pair is checked against the whole graph on random inputs (batch 1 and 4)
with ONNX Runtime; a difference above :data:`TOLERANCE` stops the split. Measured on the shipped
model: every output bit-identical (the parts keep only the source's value_info: with the shapes that
shape inference adds, ONNX Runtime fuses one more Add + LayerNormalization in the cond graph and the
closure logits move by 1-2 float32 ulps). Run it last: after calibrate (which also works on a split
file) and after closure_net's graft (which needs the whole graph). Needs the ``onnx`` package
(``train`` extra).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from emote.engine.exceptions import EmoteError, ModelFileError

__all__ = ["TOLERANCE", "SPLIT_KEYS", "STEP_INPUTS", "COND_INPUTS", "cond_path_for", "plan_split", "split_backbone",
           "max_abs_diff", "random_feeds"]

#: largest |whole - split| accepted on any output (measured on the shipped model: 0)
TOLERANCE = 1e-5
#: the emote_backbone metadata keys a split adds to the step file
SPLIT_KEYS: tuple[str, ...] = ("cond_model", "cond_outputs", "cond_sha256")
STEP_INPUTS: tuple[str, ...] = ("x", "t")
COND_INPUTS: tuple[str, ...] = ("audio", "past", "controls")
_REDO = ("re-export the whole model (train_backbone) and split it with "
         "`python -m emote.engine.training.split MODEL`")


def cond_path_for(step_path: str | os.PathLike) -> Path:
    """backbone.onnx -> backbone.cond.onnx (beside it)."""
    p = Path(step_path)
    return p.with_name(p.stem + ".cond.onnx")


def _reads(node) -> list[str]:
    """The tensor names a node reads: its inputs and any outer-scope name used in its subgraphs
    (If/Loop/Scan bodies; names local to a body are included too, which is harmless)."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for n in g.node:
                names.extend(_reads(n))
    return names


def plan_split(model) -> tuple[list[str], list[str], list[str], list[str]]:
    """onnx ModelProto of a whole backbone -> (cond tensors the step nodes read, in graph order;
    raw cond inputs the step nodes read directly; step outputs; cond outputs that are model outputs).
    Raises ModelFileError if the graph lacks the backbone's inputs or has nothing per step."""
    g = model.graph
    inputs = [i.name for i in g.input]
    if not set(STEP_INPUTS + COND_INPUTS) <= set(inputs):
        raise ModelFileError(f"the graph's inputs are {inputs}, not the backbone's {list(STEP_INPUTS + COND_INPUTS)}: "
                             f"is this a backbone file? {_REDO}")
    step, cond = set(STEP_INPUTS), set(COND_INPUTS)
    boundary: list[str] = []
    for n in g.node:
        reads = _reads(n)
        if any(r in step for r in reads):
            step.update(n.output)
            boundary.extend(r for r in reads if r in cond and r not in boundary)
        elif any(r in cond for r in reads):
            cond.update(n.output)
    outs = [o.name for o in g.output]
    step_outs = [o for o in outs if o in step or o not in cond]
    cond_model_outs = [o for o in outs if o not in step_outs]
    if "x0" not in step or "motion" not in step:
        raise ModelFileError(f"the graph's x0/motion do not depend on x and t: nothing to split. {_REDO}")
    raw = [b for b in boundary if b in COND_INPUTS]
    return [b for b in boundary if b not in COND_INPUTS], raw, step_outs, cond_model_outs


def _backbone_info(model, path: Path) -> dict:
    """A whole graph's emote_backbone metadata (a split one is refused)."""
    info = _backbone_info_any(model, path)
    if "cond_model" in info:
        raise ModelFileError(f"{path} is already split (its per-chunk part is {info['cond_model']}): "
                             f"split the whole graph, not a step file. {_REDO}")
    return info


def _finish(part, source, info: dict | None, extra_key: str | None = None, extra: dict | None = None):
    """Copy the source's model-level fields and metadata into an extracted part; ``info`` replaces
    emote_backbone (None: dropped), ``extra`` is stored as JSON under ``extra_key``."""
    # only the source's value_info: shapes inferred for the extraction let ONNX Runtime fuse nodes
    # it does not fuse in the source (an Add + LayerNormalization), which changes the last bit
    known = {v.name for v in source.graph.value_info}
    kept = [v for v in part.graph.value_info if v.name in known]
    del part.graph.value_info[:]
    part.graph.value_info.extend(kept)
    part.producer_name, part.producer_version = source.producer_name, source.producer_version
    part.domain, part.model_version, part.doc_string = source.domain, source.model_version, source.doc_string
    del part.metadata_props[:]
    for prop in source.metadata_props:
        if prop.key != "emote_backbone":
            part.metadata_props.add(key=prop.key, value=prop.value)
        elif info is not None:
            part.metadata_props.add(key=prop.key, value=json.dumps(info))
    if extra_key is not None:
        part.metadata_props.add(key=extra_key, value=json.dumps(extra))
    return part


def _build(path: Path, step_name: str, cond_name: str) -> tuple[bytes, bytes, list[str]]:
    """Whole backbone file -> (step file bytes, cond file bytes, cond tensors the step graph reads)."""
    import onnx
    import onnx.utils
    try:
        src = onnx.load(str(path))
    except Exception as e:
        raise ModelFileError(f"cannot read {path} as ONNX ({' '.join(str(e).split())[:200]}): {_REDO}") from None
    info = _backbone_info(src, path)
    onnx.checker.check_model(src)
    boundary, raw, step_outs, cond_outs = plan_split(src)
    ex = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(src))
    cond = ex.extract_model(list(COND_INPUTS), boundary + cond_outs)
    step = ex.extract_model(list(STEP_INPUTS) + boundary + raw, step_outs)
    cond = _finish(cond, src, None, "emote_backbone_cond", {"step_model": step_name, "outputs": boundary + cond_outs})
    cond_bytes = cond.SerializeToString()
    info = {**info, "cond_model": cond_name, "cond_outputs": boundary,
            "cond_sha256": hashlib.sha256(cond_bytes).hexdigest()}
    step = _finish(step, src, info)
    for part in (cond, step):
        onnx.checker.check_model(part)
    return step.SerializeToString(), cond_bytes, boundary


def _sessions(*models: bytes | str):
    import onnxruntime as ort
    from emote.kernels.onnx import session_options
    return [ort.InferenceSession(m, session_options(1), providers=["CPUExecutionProvider"]) for m in models]


def random_feeds(sess, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for a whole backbone session: (batch, ...) float32 noise, t in 0..999, controls in 0..2."""
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        if i.name == "t":
            feeds[i.name] = rng.uniform(0.0, 999.0, shape).astype(np.float32)
        elif i.name == "controls":
            feeds[i.name] = rng.uniform(0.0, 2.0, shape).astype(np.float32)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _run_split(step, cond, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both parts on whole-graph feeds -> {output name: array} of every model output."""
    cond_names = [o.name for o in cond.get_outputs()]
    have = {**feeds, **dict(zip(cond_names, cond.run(cond_names, {k: feeds[k] for k in COND_INPUTS})))}
    step_names = [o.name for o in step.get_outputs()]
    out = dict(zip(step_names, step.run(step_names, {i.name: have[i.name] for i in step.get_inputs()})))
    return {**{k: v for k, v in have.items() if k not in feeds}, **out}


def max_abs_diff(whole: bytes | str, step: bytes | str, cond: bytes | str, batches=(1, 4), seed: int = 0) -> float:
    """Largest |whole - split| over every output of the whole graph, on random inputs of each batch
    size (files as paths or bytes)."""
    w, s, c = _sessions(whole, step, cond)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in batches:
        feeds = random_feeds(w, b, rng)
        names = [o.name for o in w.get_outputs()]
        split = _run_split(s, c, feeds)
        for name, ref in zip(names, w.run(names, feeds)):
            worst = max(worst, float(np.abs(ref.astype(np.float64) - split[name]).max()))
    return worst


def _write_atomic(data: bytes, path: Path) -> None:
    tmp = path.with_name(path.name + ".split-tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def split_backbone(path: str | os.PathLike, out: str | os.PathLike | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Split the whole backbone at ``path`` (module docstring): the step graph goes to ``out``
    (default: over ``path``), the cond graph to ``<out stem>.cond.onnx`` beside it. Checks the pair
    against the whole graph first (``log`` gets the max abs difference). Returns (step, cond) paths.
    Raises ModelFileError for a file that is not a whole backbone (or already split), EmoteError if
    the pair does not reproduce it."""
    src = Path(path)
    if not src.is_file():
        raise ModelFileError(f"backbone model not found: {src}")
    step_path = Path(out) if out is not None else src
    cond_path = cond_path_for(step_path)
    if cond_path.resolve() == src.resolve():
        raise ModelFileError(f"the cond file {cond_path} would overwrite the source: choose another --out")
    step_bytes, cond_bytes, boundary = _build(src, step_path.name, cond_path.name)
    diff = max_abs_diff(str(src), step_bytes, cond_bytes)
    if log:
        log(f"{src}: {len(boundary)} per-chunk tensors {boundary}; max abs diff whole vs split "
            f"(batch 1 and 4): {diff:.3g}")
    if not diff <= TOLERANCE:
        raise EmoteError(f"the split of {src} does not reproduce it (max abs diff {diff:.3g} > {TOLERANCE:g}); "
                         f"nothing was written: keep the whole file (the runtime runs it as it is)")
    step_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(cond_bytes, cond_path)
    _write_atomic(step_bytes, step_path)
    return step_path, cond_path


def time_per_step(whole: bytes | str, step: bytes | str, cond: bytes | str, repeats: int = 500) -> dict[str, float]:
    """Median wall ms at batch 1, one thread: a whole-graph run, a cond run, a step run."""
    w, s, c = _sessions(whole, step, cond)
    feeds = random_feeds(w, 1, np.random.default_rng(1))
    cond_names = [o.name for o in c.get_outputs()]
    have = {**feeds, **dict(zip(cond_names, c.run(cond_names, {k: feeds[k] for k in COND_INPUTS})))}
    step_feeds = {i.name: have[i.name] for i in s.get_inputs()}
    cond_feeds = {k: feeds[k] for k in COND_INPUTS}

    def median_ms(fn) -> float:
        for _ in range(20):
            fn()
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return float(np.median(t) * 1e3)
    return {"whole_ms": median_ms(lambda: w.run(None, feeds)), "cond_ms": median_ms(lambda: c.run(None, cond_feeds)),
            "step_ms": median_ms(lambda: s.run(None, step_feeds))}


def join_split(step_path: str | os.PathLike) -> bytes:
    """A split pair (the step file at ``step_path``, its cond file beside it) joined back into one
    whole graph (serialized ModelProto): the cond graph's nodes, then the step graph's; each
    node, initializer and value_info once; the metadata without the split's keys. Splitting it again
    (under another name, say) gives the same pair of graphs."""
    return _join(step_path)[0]


def _join(step_path: str | os.PathLike) -> tuple[bytes, Path]:
    """:func:`join_split`'s graph and the cond file's path."""
    from onnx import helper
    step = _load(Path(step_path))
    info = _backbone_info_any(step, Path(step_path))
    if "cond_model" not in info:
        raise ModelFileError(f"{step_path} is not split: it is a whole graph already")
    cond_path = Path(step_path).with_name(info["cond_model"])
    if hashlib.sha256(cond_path.read_bytes()).hexdigest() != info.get("cond_sha256"):
        raise ModelFileError(f"{cond_path} does not belong to {step_path} (its sha256 differs from the metadata's)")
    cond = _load(cond_path)
    produced = {o for n in cond.graph.node for o in n.output}
    inputs = list(cond.graph.input) + [i for i in step.graph.input if i.name not in produced
                                       and i.name not in {c.name for c in cond.graph.input}]
    outputs = list(step.graph.output) + [o for o in cond.graph.output if o.name not in info["cond_outputs"]]

    def once(items):
        seen, out = set(), []
        for t in items:
            if t.name not in seen:
                seen.add(t.name)
                out.append(t)
        return out
    nodes, made = [], set()
    for n in list(cond.graph.node) + list(step.graph.node):   # a static node both parts read is in both
        if n.output and all(o in made for o in n.output):
            continue
        made.update(n.output)
        nodes.append(n)
    graph = helper.make_graph(nodes, step.graph.name, inputs, outputs,
                              once(list(cond.graph.initializer) + list(step.graph.initializer)),
                              value_info=once(list(cond.graph.value_info) + list(step.graph.value_info)))
    whole = helper.make_model(graph, opset_imports=list(step.opset_import))
    whole.ir_version = step.ir_version
    plain = {k: v for k, v in info.items() if k not in SPLIT_KEYS}
    _finish(whole, step, plain)
    import onnx
    onnx.checker.check_model(whole)
    return whole.SerializeToString(), cond_path


def _load(path: Path):
    import onnx
    return onnx.load(str(path))


def _backbone_info_any(model, path: Path) -> dict:
    for prop in model.metadata_props:
        if prop.key == "emote_backbone":
            return json.loads(prop.value)
    raise ModelFileError(f"{path} is not an emote backbone model (no emote_backbone metadata)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.split", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="whole-graph backbone .onnx (replaced by the step graph unless --out)")
    ap.add_argument("--out", default=None, help="write the step graph here instead (the cond graph beside it)")
    ap.add_argument("--repeats", type=int, default=500, help="timed runs per graph (default 500)")
    ap.add_argument("--join", action="store_true",
                    help="instead: join the split pair MODEL (+ its cond file) back into one whole graph, written "
                         "to --out (needed), checked against the pair; split that again to rename a pair")
    a = ap.parse_args(argv)
    if a.join:
        return _join_main(a, ap)
    try:
        whole = Path(a.model).read_bytes()
        step, cond = split_backbone(a.model, a.out, log=print)
    except (OSError, EmoteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {step} ({step.stat().st_size} bytes) and {cond} ({cond.stat().st_size} bytes)")
    t = time_per_step(whole, str(step), str(cond), a.repeats)
    w, c, s = t["whole_ms"], t["cond_ms"], t["step_ms"]
    print(f"ms at batch 1, one thread: whole {w:.3f} a step; cond {c:.3f} a chunk + step {s:.3f} a step")
    print("per chunk:", "; ".join(f"{n} step(s) whole {n * w:.3f} split {c + n * s:.3f}" for n in (1, 2, 4)))
    return 0


def _join_main(a, ap) -> int:
    if not a.out:
        ap.error("--join needs --out (the whole graph's path)")
    try:
        whole, cond = _join(a.model)
        diff = max_abs_diff(whole, str(a.model), str(cond))
    except (OSError, EmoteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not diff <= TOLERANCE:
        print(f"error: the joined graph does not reproduce the pair (max abs diff {diff:.3g}); nothing written",
              file=sys.stderr)
        return 1
    _write_atomic(whole, Path(a.out))
    print(f"wrote {a.out}: the whole graph of {a.model} and its cond file; max abs diff against the pair {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
