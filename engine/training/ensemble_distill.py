"""Distil a jaw ensemble back into one motion model: the ensemble's lip sync at one model's cost.

    python -m emote.engine.training.ensemble_distill engine/assets/backbone.onnx --data data/motion \\
        [--iters 2000] [--out PATH]

The shipped backbone runs two motion models at every sampling step and averages their jaw
(engine.training.jaw_ensemble). Here the ensemble, rebuilt in torch from its ONNX weights
(engine.training.pack), is the teacher, and a copy of its first model the student: on the train
split's chunks, from seeded noise drawn as the runtime draws it (no noise on the mouth channels),
the teacher's own few-step sampler runs (the 1-, 2- and 4-step
schedules of the file), and at every state it visits the student learns the teacher's x0 there
(all channels; jawOpen, the only one the ensemble changes, weighted ``--jaw-weight``). The student
starts as the first model, so only its jaw has to move. The result keeps the file's closure nets,
calibration and schedules (the student imitates the calibrated ensemble) and is written packed
(and split again if the source was), with the sampler gap per step count in its metadata
(``ensemble_distilled``). Score it with the harness before shipping it. Needs the ``train`` extra.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from emote.engine import motion as M
from emote.engine.exceptions import ModelFileError

__all__ = ["student_from", "noise", "train_student", "sampler_gap", "main"]

_JAW = M.INDEX["jawOpen"]


def noise(n: int, hop: int, g: torch.Generator, mouth_noise: float) -> torch.Tensor:
    """(n, hop, C) sampler noise as the runtime draws it: the mouth channels scaled by
    ``mouth_noise`` (engine.backbone.BackboneSettings: 0 by default, the mouth follows the audio alone)."""
    z = torch.randn(n, hop, M.NUM_CHANNELS, generator=g)
    z[..., list(M.idx(*M.MOUTH))] *= mouth_noise
    return z


def student_from(weights: dict[str, np.ndarray], cfg: dict):
    """A MotionDiT (no closure head) holding the motion model ``weights`` (engine.training.pack
    .read_weights' entry for one model)."""
    from .backbone_model import ModelConfig, MotionDiT
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    mc = dataclasses.replace(ModelConfig(**{k: v for k, v in cfg.items() if k in fields}),
                             closure_head=False, closure_layers=0)
    net = MotionDiT(mc, weights["feat_mean"], weights["feat_std"], weights["motion_mean"], weights["motion_std"])
    state = {k: torch.from_numpy(v) for k, v in weights.items() if k in net.state_dict()}
    missing, _ = net.load_state_dict(state, strict=False)
    unused = [k for k in missing if not k.endswith("_null")]     # the guidance nulls are not in an export
    if unused:
        raise ModelFileError(f"the motion model's weights lack {unused[0]!r}: not a backbone train_backbone exported")
    return net


def train_student(teacher, student, data, schedules: dict[int, list], iters: int, batch: int = 256,
                  lr: float = 1e-4, jaw_weight: float = 4.0, seed: int = 0, mouth_noise: float = 0.0,
                  log=print) -> dict:
    """Fit ``student`` to ``teacher`` at the states of the teacher's sampler (module docstring);
    ``data`` is a train_backbone.ChunkData. Returns the loss and the seconds."""
    from .distill import optimizer_step, trajectory, warmup_cosine
    g = torch.Generator().manual_seed(seed)
    states = [(n, k) for n in sorted(schedules) for k in range(len(schedules[n]))]
    w = torch.ones(M.NUM_CHANNELS)
    w[_JAW] = jaw_weight
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sch = warmup_cosine(opt, iters)
    teacher.eval()
    student.train()
    ema, t0 = None, time.perf_counter()
    for it in range(iters):
        audio, past, ctrl, _ = data.batch(batch, g)
        n, k = states[int(torch.randint(0, len(states), (1,), generator=g))]
        z = noise(batch, student.cfg.hop, g, mouth_noise)
        x, target = trajectory(teacher, z, schedules[n], k, audio, past, ctrl)
        pred = student(x, torch.full((batch,), float(schedules[n][k][0])), audio, past, ctrl)[0]
        ema = optimizer_step(opt, sch, student.parameters(), (((pred - target) ** 2) * w).mean(), ema)
        if (it + 1) % 100 == 0 or it + 1 == iters:
            log(f"ensemble distill {it + 1}/{iters} loss {ema:.5f} ({time.perf_counter() - t0:.0f} s)")
    student.eval()
    return {"final_loss": float(ema), "seconds": time.perf_counter() - t0}


@torch.no_grad()
def sampler_gap(teacher, student, data, schedules: dict[int, list], n: int = 1024, seed: int = 99,
                mouth_noise: float = 0.0) -> dict:
    """RMS of student - teacher after each step count's whole sampler, jawOpen and all channels
    (normalised units), on ``n`` train chunks from fresh noise (:func:`noise`)."""
    from .distill import trajectory
    g = torch.Generator().manual_seed(seed)
    audio, past, ctrl, _ = data.batch(n, g)
    z = noise(n, student.cfg.hop, g, mouth_noise)
    out = {}
    for steps, t_ab in sorted(schedules.items()):
        a = trajectory(teacher, z, t_ab, len(t_ab) - 1, audio, past, ctrl)[1]
        b = trajectory(student, z, t_ab, len(t_ab) - 1, audio, past, ctrl)[1]
        out[str(steps)] = {"jaw_rms": round(float(((a - b)[..., _JAW] ** 2).mean().sqrt()), 5),
                           "all_rms": round(float(((a - b) ** 2).mean().sqrt()), 5)}
    return out


def _write(out: Path, student, meta: dict, props: list, nets: list, frames: int, info: dict, split: bool) -> None:
    """The student with the source's closure nets, packed; split if ``split``."""
    from .pack import PackedBackbone, write
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in student.state_dict().items()}
    module = PackedBackbone([sd], dict(meta["model"]), [], nets, frames).eval()
    meta = {k: v for k, v in meta.items() if k != "jaw_ensemble"}
    meta["ensemble_distilled"] = info
    write(module, out, meta, props, split)


def _run(a, log) -> int:
    from . import backbone_data as D
    from .pack import PackedBackbone, _net_order, _source, read_weights, reference_outputs
    from .train_backbone import ChunkData
    src, out = Path(a.model), Path(a.out or a.model)
    out.parent.mkdir(parents=True, exist_ok=True)            # before the training, not after it
    files, meta, props = _source(src)
    if "packed" in meta:
        raise ModelFileError(f"{src} is packed: distil the model it was packed from, then pack the result")
    if "jaw_ensemble" not in meta:
        raise ModelFileError(f"{src} has no jaw ensemble (engine.training.jaw_ensemble): nothing to distil")
    weights = read_weights(files)
    cfg = dict(meta["model"])
    avg = [M.INDEX[c] for c in meta["jaw_ensemble"]["channels"]]
    teacher = PackedBackbone([weights[""], weights["jaw2/"]], cfg, avg, [], 0).eval()
    student = student_from(weights[""], cfg)
    nets = [weights[k] for k in sorted(weights, key=_net_order) if k.startswith("cnet/") and "net.pos" in weights[k]]
    frames = reference_outputs(src, batch=1)[1]["closure"].shape[1] if nets else 0
    schedules = {int(k): [(float(t), float(ab)) for t, ab in v] for k, v in meta["schedules"].items()}
    clips = [c for c in D.load_shards(a.data, ("train",)) if not D.is_validation(c.uid)]
    if not clips:
        raise ModelFileError(f"no train-split utterances in {a.data}")
    data = ChunkData(clips, student.cfg, bool(meta.get("spectral_norm", False)))
    before = sampler_gap(teacher, student, data, schedules, mouth_noise=a.mouth_noise)
    log(f"{len(data)} chunks of {len(clips)} utterances; student (the first model) vs the ensemble before: {before}")
    rep = train_student(teacher, student, data, schedules, a.iters, a.batch, a.lr, a.jaw_weight, a.seed,
                        a.mouth_noise, log)
    after = sampler_gap(teacher, student, data, schedules, mouth_noise=a.mouth_noise)
    log(f"after: {after}")
    info = {"iters": a.iters, "batch": a.batch, "lr": a.lr, "jaw_weight": a.jaw_weight, "seed": a.seed,
            "mouth_noise": a.mouth_noise,
            "data": str(a.data), "final_loss": round(rep["final_loss"], 6), "train_seconds": round(rep["seconds"], 1),
            "gap_before": before, "gap_after": after, "jaw_ensemble": meta["jaw_ensemble"],
            "trained": time.strftime("%Y-%m-%d")}
    _write(out, student, meta, props, nets, frames, info, "cond_model" in meta)
    log(f"wrote {out}: one motion model in place of the jaw ensemble; score it with the harness "
        f"(EMOTE_BACKBONE_MODEL={out} python -m emote.benchmarks.harness --generator backbone)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.ensemble_distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a backbone with a jaw ensemble (jaw_ensemble), whole or split, packed or not")
    ap.add_argument("--data", required=True, help="the data engine's shards (its train split is used)")
    ap.add_argument("--out", default=None, help="output path (default: the model, in place)")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--jaw-weight", type=float, default=4.0, help="weight of jawOpen in the loss (others 1)")
    ap.add_argument("--mouth-noise", type=float, default=0.0,
                    help="the sampler noise's scale on the mouth channels, as the runtime's (BackboneSettings."
                         "mouth_noise, default 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not Path(a.model).is_file():
        ap.error(f"no such file {a.model}")
    if a.iters < 1 or a.batch < 1 or not a.lr > 0 or a.jaw_weight < 0 or not 0 <= a.mouth_noise <= 1:
        ap.error("--iters, --batch and --lr must be positive, --jaw-weight >= 0, --mouth-noise in 0..1")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    try:
        return _run(a, log)
    except ModelFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
