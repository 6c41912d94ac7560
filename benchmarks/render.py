"""Render benchmark: frames per second of the renderer alone and of the whole offline pipeline.

    python -m emote.benchmarks.render [--sizes 256 512 1024] [--frames 300] [--out benchmarks/results]

* renderer: motion -> frame only (rig, warp, mouth, eyelids), one thread (cv2.setNumThreads(1)),
  on a speech-like motion sequence from the default generator;
* pipeline: photo + audio file -> MP4 through engine.pipeline.render_file (features, motion,
  render, H.264 + AAC encode), the avatar already cached, on the embedded demo speech.

Prints a table and writes render.json and render.png into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _motion_sequence(frames: int, seed: int = 0) -> np.ndarray:
    """Speech-like motion from the baseline generator fed the demo speech (looped to `frames`)."""
    from emote.engine.audio import AudioSettings, FeatureStream, load_audio
    from emote.engine.generator import make_generator
    from emote.engine.resources import demo_speech_path

    audio = load_audio(demo_speech_path())
    need = frames * AudioSettings().samples_per_frame
    audio = np.resize(audio, need)
    fs, gen = FeatureStream(), make_generator("baseline", fps=25.0, seed=seed)
    fs.push(audio)
    gen.push(fs.finish())
    return gen.finish()[:frames]


def bench_renderer(size_px: int, motion: np.ndarray, cache_dir: str) -> dict:
    import cv2

    from emote.engine.avatar import AvatarSettings, prepare
    from emote.engine.renderer import Renderer
    from emote.engine.resources import default_portrait_path

    cv2.setNumThreads(1)
    av = prepare(default_portrait_path(), AvatarSettings(size_px=size_px), cache_dir=cache_dir)
    t = time.perf_counter()
    r = Renderer(av)
    setup_ms = (time.perf_counter() - t) * 1e3
    for m in motion[:10]:
        r(m)
    times = []
    for m in motion:
        t = time.perf_counter()
        r(m)
        times.append(time.perf_counter() - t)
    cv2.setNumThreads(-1)
    ms = np.array(times) * 1e3
    return {"size_px": size_px, "frames": len(ms), "fps": float(1e3 / ms.mean()), "ms_mean": float(ms.mean()),
            "ms_p50": float(np.percentile(ms, 50)), "ms_p95": float(np.percentile(ms, 95)), "setup_ms": setup_ms}


def bench_pipeline(size_px: int, seconds: float, cache_dir: str) -> dict:
    import av

    from emote.engine.audio import load_audio
    from emote.engine.pipeline import PipelineSettings, render_file
    from emote.engine.resources import default_portrait_path, demo_speech_path

    with tempfile.TemporaryDirectory() as tmp:
        audio = load_audio(demo_speech_path())
        n = int(seconds * 16000)
        audio = np.resize(audio, n).astype(np.float32)
        wav = Path(tmp) / "speech.wav"
        with av.open(str(wav), "w") as c:
            st = c.add_stream("pcm_s16le", rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
            frame.sample_rate = 16000
            for p in st.encode(frame):
                c.mux(p)
            for p in st.encode(None):
                c.mux(p)
        settings = PipelineSettings(size_px=size_px, cache_dir=cache_dir)
        render_file(default_portrait_path(), wav, Path(tmp) / "warm.mp4", settings, progress=False)  # caches avatar
        t = time.perf_counter()
        rep = render_file(default_portrait_path(), wav, Path(tmp) / "out.mp4", settings, progress=False)
        dt = time.perf_counter() - t
    return {"size_px": size_px, "frames": rep.frames, "seconds": dt, "fps": rep.frames / dt,
            "realtime_factor": rep.frames / 25.0 / dt}


def bench_stages(seconds: float = 20.0) -> dict:
    """CPU milliseconds per frame of the audio features and the motion generator, over a file and live."""
    from emote.engine.audio import AudioSettings, FeatureStream, load_audio
    from emote.engine.generator import make_generator
    from emote.engine.resources import demo_speech_path

    spf = AudioSettings().samples_per_frame
    x = np.resize(load_audio(demo_speech_path()), int(seconds * 16000)).astype(np.float32)
    out = {}
    for mode in ("file", "live"):
        fs, gen = FeatureStream(), make_generator("baseline", fps=25.0)
        block = len(x) if mode == "file" else spf
        tf = tg = 0.0
        n = 0
        for i in range(0, len(x), block):
            t = time.process_time()
            fs.push(x[i:i + block])
            rows = fs.pull()
            tf += time.process_time() - t
            t = time.process_time()
            gen.push(rows)
            n += len(gen.pull())
            tg += time.process_time() - t
        out[mode] = {"features_ms": tf * 1e3 / max(n, 1), "motion_ms": tg * 1e3 / max(n, 1)}
    return out


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size_px"] for r in results["renderer"]]
    x = np.arange(len(sizes))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [r["fps"] for r in results["renderer"]], 0.4, label="renderer (1 thread)")
    ax.bar(x + 0.2, [r["fps"] for r in results["pipeline"]], 0.4, label="whole pipeline + encode")
    ax.axhline(25, color="k", lw=0.8, ls="--", label="real time (25 fps)")
    ax.set_xticks(x, [f"{s} px" for s in sizes])
    ax.set_ylabel("frames per second")
    ax.set_title(f"emote render speed ({platform.machine()}, {os.cpu_count()} cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="frame sizes in pixels")
    ap.add_argument("--frames", type=int, default=300, help="frames timed for the renderer alone")
    ap.add_argument("--seconds", type=float, default=12.0, help="seconds of audio for the whole-pipeline run")
    ap.add_argument("--out", default="benchmarks/results", help="folder for render.json and render.png")
    args = ap.parse_args(argv)
    cache = tempfile.mkdtemp(prefix="emote-bench-")
    motion = _motion_sequence(args.frames)
    results = {"machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
               "renderer": [], "pipeline": []}
    print(f"{'size':>6} {'renderer fps':>13} {'p95 ms':>8} {'pipeline fps':>13} {'x real time':>12}")
    for s in args.sizes:
        r = bench_renderer(s, motion, cache)
        p = bench_pipeline(s, args.seconds, cache)
        results["renderer"].append(r)
        results["pipeline"].append(p)
        print(f"{s:>6} {r['fps']:>13.1f} {r['ms_p95']:>8.2f} {p['fps']:>13.1f} {p['realtime_factor']:>12.2f}", flush=True)
    results["stages"] = bench_stages()
    for mode, v in results["stages"].items():
        print(f"{mode:>6}: features {v['features_ms']:.3f} ms/frame, motion {v['motion_ms']:.3f} ms/frame (CPU time)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "render.json").write_text(json.dumps(results, indent=2))
    _plot(results, out / "render.png")
    print(f"wrote {out / 'render.json'} and {out / 'render.png'}")
    return results


if __name__ == "__main__":
    main()
