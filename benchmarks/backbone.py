"""Backbone speed: the cost of one chunk through the distilled model for 1, 2 and 4 steps, on one core.

    .venv/bin/python -m emote.benchmarks.backbone [--model FILE] [--threads 1] [--repeats 300]

ONNX Runtime on the CPU provider with ``threads`` intra-op threads (1: one core), through the same
``BackboneModel.sample`` the generator calls (the step loop, the DDIM update, the session). Also the
whole generator per frame on real-time-shaped pushes (feature prep + sampling + bookkeeping).
Reports median and p95 wall ms and process CPU ms per chunk; writes benchmarks/results/backbone.json.
A split model (engine.training.split) runs its per-chunk part once a chunk, inside the timed call.
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


def _time(fn, repeats: int) -> dict[str, float]:
    for _ in range(10):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return {"median_ms": float(np.median(wall)), "p95_ms": float(np.percentile(wall, 95)),
            "cpu_median_ms": float(np.median(cpu))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m emote.benchmarks.backbone", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="ONNX file (default: the packaged backbone)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=300)
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
    print(f"{'steps':>5} {'chunk median ms':>16} {'p95 ms':>8} {'cpu ms':>8} {'ms per frame':>13}")
    for steps in sorted(m.schedules):
        r = _time(lambda: m.sample(audio, past, ctrl, z, steps), args.repeats)
        r["ms_per_frame"] = r["median_ms"] / m.hop
        res["chunk"][str(steps)] = r
        print(f"{steps:>5} {r['median_ms']:>16.3f} {r['p95_ms']:>8.3f} {r['cpu_median_ms']:>8.3f} {r['ms_per_frame']:>13.3f}")
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
