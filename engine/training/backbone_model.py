"""The motion diffusion transformer (torch; training and export only).

Inputs of one chunk (B = batch):

* ``x``        (B, T, C)  the noisy chunk, in normalised motion units (per-channel mean/std);
* ``t``        (B,)       diffusion timestep 0..999 (float);
* ``audio``    (B, W, P)  prepared feature rows (engine.backbone.FeaturePrep) of the audio window,
                          W = context + T + lookahead;
* ``past``     (B, K, C)  the last K motion frames already generated, in engine.motion units;
* ``controls`` (B, 3)     expression intensity, head-motion speed, head-motion amplitude.

Outputs: ``x0`` (B, T, C) the predicted clean chunk (normalised) and ``motion`` = x0 * std + mean;
with ``closure_head`` also ``closure`` (B, T): logits that the lips are pressed shut on each chunk
frame (a bilabial closure), read from the audio encoder alone (so the same at every step and for
every seed). A diffusion sampler of few steps smooths a closure of one or two frames into a
half-open dip or misses it; a classifier head trained on the closures themselves does not.

Architecture (EMO's ideas in motion space): an audio encoder (per-frame MLP + position embedding +
one self-attention block over the window); K + T motion tokens (past frames, clean, then the noisy
chunk) with position embeddings; a conditioning vector from the timestep (sinusoidal + MLP) and the
controls (MLP, EMO's speed layers) that modulates every block (adaLN shift/scale/gate); blocks of
self-attention over the time axis (temporal modules), cross-attention from motion tokens to audio
tokens (audio-attention) and an MLP. The head reads the T chunk tokens. Classifier-free guidance:
``drop_audio`` / ``drop_controls`` masks replace the audio tokens / the controls embedding by learned
null embeddings.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["ModelConfig", "MotionDiT", "ClosureNet"]


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 28
    features: int = 53
    hop: int = 5
    context: int = 3
    lookahead: int = 2
    past: int = 4
    n_controls: int = 3
    dim: int = 96
    heads: int = 4
    layers: int = 3
    audio_layers: int = 1
    mlp_ratio: float = 2.0
    closure_head: bool = False
    closure_layers: int = 0      # > 0: the closure head has its own audio encoder (ClosureNet) of this many blocks

    @property
    def window(self) -> int:
        return self.context + self.hop + self.lookahead

    def as_dict(self) -> dict:
        return asdict(self)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        self.h, self.dh = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        S = mem.shape[1]
        q = self.q(x).reshape(B, L, self.h, self.dh).transpose(1, 2)
        kv = self.kv(mem).reshape(B, S, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        a = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.dh)), dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(B, L, D))


class _AudioBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.n1(a)
        a = a + self.attn(h, h)
        return a + self.mlp(self.n2(a))


class ClosureNet(nn.Module):
    """The closure head with its own audio encoder (``closure_layers`` > 0): a per-frame MLP, a
    position embedding and ``closure_layers`` self-attention blocks over the window, then a
    per-frame MLP -> (B, W) logits that the lips are shut, for every window frame (the runtime
    reads the chunk's). Independent of the motion model's weights, so it is trained on its own
    (train_backbone.train_closure) without moving the motion model."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, mlp = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
        self.inp = nn.Sequential(nn.Linear(cfg.features, d), nn.GELU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.randn(cfg.window, d) * 0.02)
        self.blocks = nn.ModuleList(_AudioBlock(d, cfg.heads, mlp) for _ in range(cfg.closure_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, audio_n: torch.Tensor) -> torch.Tensor:
        """audio_n: (B, W, P) normalised feature rows -> (B, W) logits."""
        a = self.inp(audio_n) + self.pos
        for blk in self.blocks:
            a = blk(a)
        return self.out(self.norm(a)).squeeze(-1)


class _Block(nn.Module):
    """adaLN-modulated: self-attention over time, cross-attention to audio, MLP."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.n2 = nn.LayerNorm(dim)
        self.n3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attn = _Attention(dim, heads)
        self.cross = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        self.mod = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, b1, g1, s3, b3, g3 = self.mod(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)
        h = self.n1(x) * (1.0 + s1) + b1
        x = x + (1.0 + g1) * self.self_attn(h, h)
        x = x + self.cross(self.n2(x), audio)
        h = self.n3(x) * (1.0 + s3) + b3
        return x + (1.0 + g3) * self.mlp(h)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MotionDiT(nn.Module):
    def __init__(self, cfg: ModelConfig, feat_mean, feat_std, motion_mean, motion_std) -> None:
        super().__init__()
        self.cfg = cfg
        d, mlp = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
        self.register_buffer("feat_mean", torch.as_tensor(feat_mean, dtype=torch.float32))
        self.register_buffer("feat_std", torch.as_tensor(feat_std, dtype=torch.float32))
        self.register_buffer("motion_mean", torch.as_tensor(motion_mean, dtype=torch.float32))
        self.register_buffer("motion_std", torch.as_tensor(motion_std, dtype=torch.float32))
        self.audio_in = nn.Sequential(nn.Linear(cfg.features, d), nn.GELU(), nn.Linear(d, d))
        self.audio_pos = nn.Parameter(torch.randn(cfg.window, d) * 0.02)
        self.audio_null = nn.Parameter(torch.zeros(cfg.window, d))
        self.audio_blocks = nn.ModuleList(_AudioBlock(d, cfg.heads, mlp) for _ in range(cfg.audio_layers))
        self.audio_norm = nn.LayerNorm(d)
        self.motion_in = nn.Linear(cfg.channels, d)
        self.pos = nn.Parameter(torch.randn(cfg.past + cfg.hop, d) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.c_mlp = nn.Sequential(nn.Linear(cfg.n_controls, d), nn.SiLU(), nn.Linear(d, d))
        self.c_null = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(_Block(d, cfg.heads, mlp) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(d)
        if cfg.closure_head and cfg.closure_layers > 0:
            self.closure_net = ClosureNet(cfg)
        elif cfg.closure_head:
            self.closure = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.out = nn.Linear(d, cfg.channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode_audio(self, audio: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        a = self.audio_in((audio - self.feat_mean) / self.feat_std) + self.audio_pos
        if drop is not None:
            a = torch.where(drop[:, None, None], self.audio_null.expand_as(a), a)
        for blk in self.audio_blocks:
            a = blk(a)
        return self.audio_norm(a)

    def forward(self, x, t, audio, past, controls, drop_audio=None, drop_controls=None):
        cfg = self.cfg
        mem = self.encode_audio(audio, drop_audio)
        c = self.c_mlp(controls)
        if drop_controls is not None:
            c = torch.where(drop_controls[:, None], self.c_null.expand_as(c), c)
        c = c + self.t_mlp(timestep_embedding(t, cfg.dim))
        p = (past - self.motion_mean) / self.motion_std
        h = self.motion_in(torch.cat([p, x], dim=1)) + self.pos
        for blk in self.blocks:
            h = blk(h, mem, c)
        x0 = self.out(self.out_norm(h[:, cfg.past:]))
        if not cfg.closure_head:
            return x0, x0 * self.motion_std + self.motion_mean
        return x0, x0 * self.motion_std + self.motion_mean, self.closure_logits(mem, audio)

    def closure_logits(self, mem: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(B, W, dim) encoded audio (or, with a ClosureNet, the (B, W, P) feature rows ``audio``)
        -> (B, T) closure logits of the chunk's frames."""
        c, hop = self.cfg.context, self.cfg.hop
        if self.cfg.closure_layers > 0:
            return self.closure_window_logits(audio)[:, c:c + hop]
        return self.closure(mem[:, c:c + hop]).squeeze(-1)

    def closure_window_logits(self, audio: torch.Tensor) -> torch.Tensor:
        """With a ClosureNet: (B, W, P) feature rows -> (B, W) logits, without the motion model."""
        return self.closure_net((audio - self.feat_mean) / self.feat_std)
