"""Backbone speed: the cost of one chunk through the distilled model for 1, 2 and 4 steps, on one core.

    .venv/bin/python -m emote.benchmarks.backbone [--model FILE] [--threads 1] [--repeats 300]

ONNX Runtime on the CPU provider with ``threads`` intra-op threads (1: one core), through the same
``BackboneModel.sample`` the generator calls (the step loop, the DDIM update, the session). Also the
whole generator per frame on real-time-shaped pushes (feature prep + sampling + bookkeeping).
Reports median and p95 wall ms and process CPU ms per chunk, and the least of the medians of
``--blocks`` blocks (the step counts take turns block by block): on a shared virtual machine, whose
timings wobble by up to 50 % from minute to minute, that is the cost on the quietest core time the run
saw (steadier than the medians within a run; machine D also has slow phases of minutes in which every
number, this one too, is about 1.5x). Writes benchmarks/results/backbone.json. A split model (engine.training.split) runs its per-chunk
part once a chunk, inside the timed call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from emote.engine import motion as M
from emote.engine.backbone import SILENT_ROW, BackboneGenerator, BackboneModel, BackboneSettings, FeaturePrep


def _time(fns: dict, repeats: int, blocks: int) -> dict[str, dict[str, float]]:
    """{name: fn} -> {name: timings}: ``repeats`` calls of each in ``blocks`` blocks, taking turns."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    block_medians = {k: [] for k in fns}
    per = max(1, repeats // blocks)
    for fn in fns.values():
        for _ in range(10):
            fn()
    for _ in range(blocks):
        for k, fn in fns.items():
            w = []
            for _ in range(per):
                t, c = time.perf_counter(), time.process_time()
                fn()
                w.append((time.perf_counter() - t) * 1e3)
                cpu[k].append((time.process_time() - c) * 1e3)
            wall[k] += w
            block_medians[k].append(float(np.median(w)))
    return {k: {"median_ms": float(np.median(wall[k])), "p95_ms": float(np.percentile(wall[k], 95)),
                "cpu_median_ms": float(np.median(cpu[k])), "best_block_median_ms": min(block_medians[k])}
            for k in fns}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m emote.benchmarks.backbone", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="ONNX file (default: the packaged backbone)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=300, help="timed calls per step count (default 300)")
    ap.add_argument("--blocks", type=int, default=10, help="blocks the calls are taken in (default 10)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "backbone.json"))
    args = ap.parse_args(argv)
    m = BackboneModel(args.model, threads=args.threads, provider="cpu")
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((m.window, FeaturePrep(m.fps, m.n_mels, m.spectral_norm).width)).astype(np.float32) * 0.5
    past = np.zeros((m.past, M.NUM_CHANNELS), np.float32)
    ctrl = np.ones(3, np.float32)
    z = rng.standard_normal((m.hop, M.NUM_CHANNELS)).astype(np.float32)
    res = {"model": str(m.path), "model_bytes": m.path.stat().st_size, "split": m.split,
           "cond_model_bytes": m.cond_path.stat().st_size if m.cond_path is not None else 0, "threads": args.threads,
           "hop_frames": m.hop, "fps": m.fps, "machine": platform.machine(), "cpus": os.cpu_count(),
           "providers": m.session.get_providers(), "chunk": {}, "generator_per_frame": {}}
    timed = _time({steps: (lambda s=steps: m.sample(audio, past, ctrl, z, s)) for steps in sorted(m.schedules)},
                  args.repeats, args.blocks)
    print(f"{'steps':>5} {'chunk median ms':>16} {'p95 ms':>8} {'cpu ms':>8} {'best block ms':>14} {'ms per frame':>13}")
    for steps, r in timed.items():
        r["ms_per_frame"] = r["median_ms"] / m.hop
        res["chunk"][str(steps)] = r
        print(f"{steps:>5} {r['median_ms']:>16.3f} {r['p95_ms']:>8.3f} {r['cpu_median_ms']:>8.3f} "
              f"{r['best_block_median_ms']:>14.3f} {r['ms_per_frame']:>13.3f}")
    for steps in sorted(m.schedules):
        g = BackboneGenerator(BackboneSettings(steps=steps), m)
        rows = np.tile(SILENT_ROW, (250, 1))
        rows[:, :3] = rng.uniform(-40, -15, (250, 3))
        t = time.perf_counter()
        g.reset()
        for i in range(250):
            g.push(rows[i:i + 1])
            g.pull()
        g.finish()
        res["generator_per_frame"][str(steps)] = (time.perf_counter() - t) * 1e3 / 250
    print("generator ms per frame (1-row pushes):",
          ", ".join(f"{k} step(s) {v:.3f}" for k, v in res["generator_per_frame"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
