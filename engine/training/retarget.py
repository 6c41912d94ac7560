"""Recompute the mouth targets of a built data set from its stored phonemes, in place.

    python -m emote.engine.training.retarget data/motion

The mouth channels are a pure function of an utterance's phoneme timing, its speaker's style and
its effort (engine.training.targets.mouth_channels), all stored in the shards; audio, features and
the prosody-driven channels are left as they are. Use it after a change to the viseme model
(engine/training/visemes.py) instead of a full rebuild. Each shard is rewritten atomically; the
manifest records ``targets_version`` and the viseme parameters used.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from emote.engine import motion as M

from . import targets as TG
from . import visemes as V
from .espeak import Phone

__all__ = ["retarget_shard", "retarget", "TARGETS_VERSION"]

#: 2: bilabial closures release at the burst (spread 30 -> 12 ms; 35 -> 15 ms for bilabial fricatives).
#: 3: only the lip closure got the short reach; the jaw keeps 30 / 35 ms (a jaw cannot move half its
#: range in one 40 ms frame).
TARGETS_VERSION = 3


def _style(speaker: str, seed: int) -> TG.Style:
    from .build_data import speaker_style
    return speaker_style(speaker, seed)


def retarget_shard(path: Path, seed: int, fps: float) -> int:
    """Rewrite one shard's mouth targets; returns the number of utterances."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    metas = json.loads(str(arrays["meta"]))
    targ, fo = arrays["targets"].copy(), arrays["frame_offsets"]
    cols = M.idx(*M.MOUTH)
    for i, m in enumerate(metas):
        n = int(fo[i + 1] - fo[i])
        phones = [Phone(p, float(s0), float(s1)) for p, s0, s1 in m["phonemes"]]
        mouth = TG.mouth_channels(phones, n, fps, _style(m["speaker"], seed), float(m.get("effort", 1.0)))
        targ[fo[i]:fo[i + 1], cols] = mouth[:, cols]
    arrays["targets"] = M.clip(targ).astype(np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return len(metas)


def retarget(root: str | os.PathLike, progress: bool = True) -> dict:
    root = Path(root)
    mf = root / "manifest.json"
    man = json.loads(mf.read_text())
    seed, fps = int(man["config"]["seed"]), float(man["fps"])
    t0, n = time.perf_counter(), 0
    shards = man["shards"]
    for k, s in enumerate(shards):
        n += retarget_shard(root / s["file"], seed, fps)
        if progress:
            print(f"\r  retarget {k + 1}/{len(shards)} shards", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    man["targets_version"] = TARGETS_VERSION
    man["visemes"] = {k: {"spread_ms": v.spread_ms, "close_spread_ms": v.close_spread_ms} for k, v in V.VISEMES.items()}
    tmp = mf.with_suffix(".tmp")
    tmp.write_text(json.dumps(man, indent=1, ensure_ascii=False))
    os.replace(tmp, mf)
    return {"utterances": n, "shards": len(shards), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emote.engine.training.retarget", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a data set built by engine.training.build_data")
    a = ap.parse_args(argv)
    print(json.dumps(retarget(a.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
