"""Export the distilled student to ONNX (one denoising step; the step loop and the noise live in
engine.backbone) and check that ONNX Runtime agrees with torch."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from emote.engine import motion as M
from emote.engine.audio import feature_names

__all__ = ["export_onnx", "check_onnx"]


class _Wrap(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, t, audio, past, controls):
        return self.model(x, t, audio, past, controls)


def _example(cfg, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, cfg.hop, cfg.channels, generator=g),
            torch.rand(batch, generator=g) * 999.0,
            torch.randn(batch, cfg.window, cfg.features, generator=g),
            torch.randn(batch, cfg.past, cfg.channels, generator=g) * 0.2,
            torch.rand(batch, 3, generator=g) * 2.0)


def output_names(cfg) -> list[str]:
    """The graph's outputs: x0, motion and, with a closure head, closure (logits)."""
    return ["x0", "motion"] + (["closure"] if getattr(cfg, "closure_head", False) else [])


def export_onnx(model, path: str | os.PathLike, meta: dict, n_mels: int = 40, fps: float = 25.0) -> Path:
    """Write ``model`` (MotionDiT, eval mode) to ``path`` with the emote_backbone metadata."""
    import onnx
    cfg = model.cfg
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    model.eval()
    outs = output_names(cfg)
    with torch.no_grad():
        torch.onnx.export(_Wrap(model), _example(cfg), str(tmp), dynamo=False, opset_version=17,
                          input_names=["x", "t", "audio", "past", "controls"], output_names=outs,
                          dynamic_axes={k: {0: "batch"} for k in ("x", "t", "audio", "past", "controls", *outs)})
    m = onnx.load(str(tmp))
    info = {"hop": cfg.hop, "context": cfg.context, "lookahead": cfg.lookahead, "past": cfg.past, "fps": fps,
            "n_mels": n_mels, "channels": list(M.NAMES), "features": list(feature_names(n_mels)),
            "model": cfg.as_dict(), **meta}
    entry = m.metadata_props.add()
    entry.key, entry.value = "emote_backbone", json.dumps(info)
    onnx.save(m, str(tmp))
    os.replace(tmp, path)
    return path


def check_onnx(model, path: str | os.PathLike, batch: int = 64) -> float:
    """Max abs difference between torch and ONNX Runtime outputs (x0, motion, closure) on random inputs."""
    import onnxruntime as ort
    ex = _example(model.cfg, batch, seed=1)
    with torch.no_grad():
        ref = [r.numpy() for r in model(*ex)]
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = s.run(output_names(model.cfg), dict(zip(["x", "t", "audio", "past", "controls"], [e.numpy() for e in ex])))
    return float(max(np.abs(a - b).max() for a, b in zip(out, ref)))
