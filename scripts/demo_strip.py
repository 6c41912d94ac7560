"""Make docs/demo_strip.png: frames of the demo render (the embedded portrait saying the demo sentence).

    .venv/bin/python scripts/demo_strip.py [--out docs/demo_strip.png] [--frames 8]

The first tile is the photo itself; the others are evenly spaced frames of the rendered video, each
labelled with its time. Also writes a second strip of one portrait per row for every --portrait given.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from emote.engine.pipeline import PipelineSettings, render_file
from emote.engine.resources import default_portrait_path, demo_speech_path


def strip(portrait: str, audio: str, n: int, tile: int, seed: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.mp4"
        render_file(portrait, audio, out, PipelineSettings(seed=seed), progress=False)
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    ref = cv2.cvtColor(cv2.imread(str(portrait)), cv2.COLOR_BGR2RGB)
    picks = np.linspace(len(frames) * 0.12, len(frames) * 0.88, n - 1).astype(int)
    tiles = [(ref, "photo")] + [(frames[i], f"{i / 25:.2f} s") for i in picks]
    out = []
    for img, label in tiles:
        h, w = img.shape[:2]
        s = min(h, w)
        img = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (tile, tile), interpolation=cv2.INTER_AREA)
        img = img.copy()
        cv2.putText(img, label, (6, tile - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return np.hstack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/demo_strip.png")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--portrait", action="append", default=[], help="extra portraits, one row each")
    args = ap.parse_args()
    rows = [strip(str(default_portrait_path()), str(demo_speech_path()), args.frames, args.tile, args.seed)]
    for p in args.portrait:
        rows.append(strip(p, str(demo_speech_path()), args.frames, args.tile, args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
