"""Average the jaw of two motion models: graft a second backbone's motion model into a first one's
graph, whose ``x0`` and ``motion`` outputs then carry the mean of the two models on the averaged
channels (jawOpen by default) and the first model's everywhere else.

    python -m emote.engine.training.jaw_ensemble engine/assets/backbone.onnx --with OTHER.onnx [--out PATH]

Two models trained alike with different seeds make different errors on unseen voices (their jaws
correlate 0.92 on the held-out splits); their mean follows the reference better than either
(held-out openness r 0.759 without closures, against 0.752 and 0.737). Only the jaw is averaged:
the head, brows, blinks and gaze stay the first model's (its calibrated gains and smoother fit
them), and so does mouthClose (the closure nets shut the lips). The sampler's step loop is
unchanged: each step's x0 is the combined one, so both models see the same noisy chunk. The
second model's own closure output and the nodes only it needs are dropped. Recalibrate after
(engine.training.calibrate), then split (engine.training.split). Needs the ``onnx`` package.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from emote.engine import motion as M

__all__ = ["merge_jaw", "check_jaw", "main"]

PREFIX = "jaw2/"
INPUTS = ("x", "t", "audio", "past", "controls")


def merge_jaw(first: str | os.PathLike, second: str | os.PathLike, out: str | os.PathLike,
              channels: tuple[str, ...] = ("jawOpen",)) -> Path:
    """Write ``out``: ``first``'s graph with ``second``'s motion model grafted in (module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    from .closure_net import _needed, prefixed
    a, b = onnx.load(str(first)), onnx.load(str(second))
    ga, gb = a.graph, b.graph
    meta_a = json.loads({p.key: p.value for p in a.metadata_props}["emote_backbone"])
    meta_b = json.loads({p.key: p.value for p in b.metadata_props}["emote_backbone"])
    if "cond_model" in meta_a or "cond_model" in meta_b:
        raise SystemExit("merge whole models, before engine.training.split")
    for k in ("hop", "context", "lookahead", "past", "channels", "features", "schedules"):
        if meta_a[k] != meta_b[k]:
            raise SystemExit(f"the two models differ in {k!r}: they must be trained alike (seed aside)")
    # first model: its x0 / motion renamed so the combined tensors can take the output names
    ra = {"x0": "m1/x0", "motion": "m1/motion"}
    nodes_a = []
    for n in ga.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.input[:] = [ra.get(i, i) for i in n.input]
        c.output[:] = [ra.get(o, o) for o in n.output]
        nodes_a.append(c)
    nodes_b, inits_b = prefixed(gb, _needed(gb, {"x0", "motion"}), PREFIX, keep=set(INPUTS))
    mask = np.zeros((1, 1, M.NUM_CHANNELS), np.float32)
    mask[..., [M.INDEX[c] for c in channels]] = 0.5
    extra = [numpy_helper.from_array(mask, "jaw_ens/half_mask")]
    combine = []
    for name in ("x0", "motion"):
        combine += [helper.make_node("Sub", [PREFIX + name, f"m1/{name}"], [f"jaw_ens/{name}_d"]),
                    helper.make_node("Mul", [f"jaw_ens/{name}_d", "jaw_ens/half_mask"], [f"jaw_ens/{name}_h"]),
                    helper.make_node("Add", [f"m1/{name}", f"jaw_ens/{name}_h"], [name])]
    graph = helper.make_graph(nodes_a + nodes_b + combine, ga.name, list(ga.input), list(ga.output),
                              list(ga.initializer) + inits_b + extra)
    model = helper.make_model(graph, opset_imports=list(a.opset_import), producer_name=a.producer_name)
    model.ir_version = a.ir_version
    meta_a["jaw_ensemble"] = {"channels": list(channels), "second": str(second),
                              "second_model": meta_b.get("model"), "second_training": meta_b.get("training")}
    for prop in a.metadata_props:
        model.metadata_props.add(key=prop.key, value=json.dumps(meta_a) if prop.key == "emote_backbone" else prop.value)
    onnx.checker.check_model(model)
    out = Path(out)
    tmp = out.with_suffix(".jaw.tmp.onnx")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_jaw(first, second, merged, channels: tuple[str, ...] = ("jawOpen",), batch: int = 8) -> float:
    """Max abs difference between the merged graph's x0 / motion and the two sources' combined by
    hand on random inputs (the closure output must be the first's)."""
    import onnxruntime as ort

    from .split import random_feeds
    s = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (first, second, merged)]
    feeds = random_feeds(s[0], batch, np.random.default_rng(4))
    ra, rb, rm = (x.run(None, feeds) for x in s)
    idx = [M.INDEX[c] for c in channels]
    worst = 0.0
    for k in (0, 1):                                     # x0, motion
        want = ra[k].copy()
        want[..., idx] = 0.5 * (ra[k][..., idx] + rb[k][..., idx])
        worst = max(worst, float(np.abs(rm[k] - want).max()))
    if len(ra) > 2:
        worst = max(worst, float(np.abs(rm[2] - ra[2]).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.jaw_ensemble",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a whole backbone (.onnx): its graph and metadata are kept")
    ap.add_argument("--with", dest="other", required=True, help="a second whole backbone trained alike")
    ap.add_argument("--out", default=None, help="output path (default: the model, in place)")
    a = ap.parse_args(argv)
    for p in (a.model, a.other):
        if not Path(p).is_file():
            ap.error(f"no such file {p}")
    out = Path(a.out or a.model)
    tmp = out.with_suffix(".merged.tmp.onnx")
    try:
        merge_jaw(a.model, a.other, tmp)
        diff = check_jaw(a.model, a.other, tmp)
        if diff > 1e-5:
            raise SystemExit(f"the merged graph does not agree with its sources (max abs diff {diff:.2g}); "
                             f"{a.model} is unchanged")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out}: jawOpen averaged with {a.other}; max abs diff against the sources {diff:.1e}; "
          f"now calibrate, then split")
    return 0


if __name__ == "__main__":
    sys.exit(main())
