"""Shards on disk: one ``.npz`` per shard plus ``manifest.json`` at the root.

A shard holds several utterances, concatenated:

* ``features`` (N, F) float32: rows of engine.audio.FeatureStream on the utterance's audio at
  16 kHz, 25 fps (the exact runtime features); names in the manifest;
* ``targets`` (N, C) float32: motion in engine.motion order (names in the manifest);
* ``audio`` (S,) int16 at 16 kHz (optional: ``--audio none`` drops it);
* ``frame_offsets`` (U+1,), ``audio_offsets`` (U+1,) int64: utterance u is rows
  ``frame_offsets[u]:frame_offsets[u+1]``;
* ``meta``: a JSON string, a list of U dicts (id, split, language, speaker, source, variant,
  text, phonemes [[ipa, start_s, end_s], ...] in the utterance's own time, augmentation, ...).

``open_dataset(root)`` reads it back: ``for utt in ds.utterances(split="heldout_language"): ...``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["Utterance", "ShardWriter", "write_shard", "Dataset", "open_dataset", "SPLITS"]

SPLITS = ("train", "heldout_speaker", "heldout_language")


@dataclass
class Utterance:
    meta: dict
    features: np.ndarray      # (T, F) float32
    targets: np.ndarray       # (T, C) float32
    audio: np.ndarray | None  # (S,) int16 at 16 kHz, or None

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def phonemes(self) -> list[tuple[str, float, float]]:
        return [tuple(p) for p in self.meta["phonemes"]]

    def float_audio(self) -> np.ndarray:
        if self.audio is None:
            raise ValueError(f"{self.id}: the shard was built without audio")
        return self.audio.astype(np.float32) / 32768.0


def write_shard(path: str | os.PathLike, utts: list[Utterance]) -> dict:
    """Write one shard atomically (``.tmp`` then rename); returns its summary for the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fo = np.zeros(len(utts) + 1, np.int64)
    ao = np.zeros(len(utts) + 1, np.int64)
    for i, u in enumerate(utts):
        fo[i + 1] = fo[i] + u.features.shape[0]
        ao[i + 1] = ao[i] + (0 if u.audio is None else u.audio.size)
    f_dim = utts[0].features.shape[1] if utts else 0
    c_dim = utts[0].targets.shape[1] if utts else 0
    arrays = {
        "features": np.concatenate([u.features for u in utts]).astype(np.float32) if utts else np.zeros((0, f_dim), np.float32),
        "targets": np.concatenate([u.targets for u in utts]).astype(np.float32) if utts else np.zeros((0, c_dim), np.float32),
        "audio": (np.concatenate([u.audio for u in utts if u.audio is not None]).astype(np.int16)
                  if any(u.audio is not None for u in utts) else np.zeros(0, np.int16)),
        "frame_offsets": fo, "audio_offsets": ao,
        "meta": np.array(json.dumps([u.meta for u in utts], ensure_ascii=False)),
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return {"file": path.name, "utterances": len(utts), "frames": int(fo[-1]),
            "seconds": float(sum(u.meta["duration_s"] for u in utts))}


class ShardWriter:
    """Collects utterances and writes ``{prefix}-{k:05d}.npz`` every ``max_utts`` utterances."""

    def __init__(self, root: str | os.PathLike, prefix: str, max_utts: int = 64) -> None:
        self.root, self.prefix, self.max_utts = Path(root), prefix, max_utts
        self.pending: list[Utterance] = []
        self.k = 0
        self.written: list[dict] = []

    def add(self, utt: Utterance) -> None:
        self.pending.append(utt)
        if len(self.pending) >= self.max_utts:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.written.append(write_shard(self.root / f"{self.prefix}-{self.k:05d}.npz", self.pending))
            self.k += 1
            self.pending = []


class Dataset:
    """A built data set: ``manifest`` (dict) and utterance iteration by split/language."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        mf = self.root / "manifest.json"
        if not mf.is_file():
            raise FileNotFoundError(f"no manifest.json in {self.root}: build it with "
                                    "`python -m emote.engine.training.build_data --out {self.root}`")
        self.manifest = json.loads(mf.read_text())

    @property
    def feature_names(self) -> list[str]:
        return self.manifest["feature_names"]

    @property
    def channel_names(self) -> list[str]:
        return self.manifest["channel_names"]

    def shard_files(self) -> list[Path]:
        return [self.root / s["file"] for s in self.manifest["shards"]]

    def metas(self, split: str | None = None) -> Iterator[dict]:
        """The utterances' metadata (dicts), in order, of one split or all; reads only each
        shard's metadata, not its arrays."""
        for entry in self.manifest["shards"]:
            if split is not None and "splits" in entry and split not in entry["splits"]:
                continue
            with np.load(self.root / entry["file"], allow_pickle=False) as z:
                yield from (m for m in json.loads(str(z["meta"])) if split is None or m["split"] == split)

    def utterances(self, split: str | None = None, language: str | None = None,
                   with_audio: bool = True, where=None) -> Iterator[Utterance]:
        for entry in self.manifest["shards"]:
            if split is not None and "splits" in entry and split not in entry["splits"]:
                continue                                   # the manifest says: nothing of this split
            f = self.root / entry["file"]
            with np.load(f, allow_pickle=False) as z:
                metas = json.loads(str(z["meta"]))
                want = [i for i, m in enumerate(metas)
                        if (split is None or m["split"] == split) and (language is None or m["language"] == language)
                        and (where is None or where(m))]
                if not want:
                    continue
                feats, targ, fo = z["features"], z["targets"], z["frame_offsets"]
                audio, ao = (z["audio"], z["audio_offsets"]) if with_audio else (None, None)
                for i in want:
                    a = None
                    if audio is not None and ao[i + 1] > ao[i]:
                        a = audio[ao[i]:ao[i + 1]]
                    yield Utterance(metas[i], feats[fo[i]:fo[i + 1]], targ[fo[i]:fo[i + 1]], a)


def open_dataset(root: str | os.PathLike) -> Dataset:
    return Dataset(root)
