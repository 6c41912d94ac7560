"""Few-step distillation of the motion diffusion teacher (torch + diffusers).

The teacher is sampled with diffusers' DDIMScheduler (deterministic, ``teacher_steps`` steps,
trailing spacing, classifier-free guidance ``guidance`` on audio and controls together) from seeded
noise z; each (z, conditions) -> x0_T pair is the deterministic map the student must learn.

The student (initialised from the teacher) runs engine.backbone's few-step sampler: x = z at the
first timestep, then for each step x0 = student(x, t), x <- sqrt(ab') x0 + sqrt(1 - ab') eps with
eps = (x - sqrt(ab) x0) / sqrt(1 - ab). If the student returns x0_T, eps stays z, so every input it
meets is x_t = sqrt(ab_t) x0_T + sqrt(1 - ab_t) z; it is trained on exactly those inputs, at every
timestep of the 1-, 2- and 4-step schedules, to return x0_T (guidance baked in: the student runs
one pass per step). 1 step is then z -> x0_T; more steps let the student correct itself.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

__all__ = ["STUDENT_TIMESTEPS", "warmup_cosine", "optimizer_step", "make_scheduler", "ddim_scheduler", "teacher_sample", "student_schedules",
           "trajectory", "distill"]

#: Student timesteps per step count (subsets of the teacher's 20-step trailing schedule).
STUDENT_TIMESTEPS: dict[int, list[int]] = {1: [999], 2: [999, 499], 4: [999, 749, 499, 249]}


def warmup_cosine(opt, total: int, warmup: float = 0.05):
    """Linear warm-up over ``warmup`` of the steps, then a cosine decay to 2 % of the rate."""
    w = max(1, int(warmup * total))

    def f(i: int) -> float:
        if i < w:
            return (i + 1) / w
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (i - w) / max(1, total - w))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def optimizer_step(opt, sched, params, loss: torch.Tensor, ema: float | None) -> float:
    """One training step of ``loss`` (gradients clipped to norm 1, then the learning-rate
    schedule's step) -> the loss's running average (0.98 per step) for the log."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()


def make_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="sample", clip_sample=False)


def ddim_scheduler(steps: int):
    from diffusers import DDIMScheduler
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                      clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=True)
    s.set_timesteps(steps)
    return s


def student_schedules() -> dict[int, list[tuple[float, float]]]:
    """{steps: [(timestep, alpha_bar)]} for engine.backbone (from the training scheduler)."""
    ab = make_scheduler().alphas_cumprod.double().numpy()
    return {n: [(float(t), float(ab[t])) for t in ts] for n, ts in STUDENT_TIMESTEPS.items()}


def guided(model, x, t, audio, past, ctrl, guidance: float):
    if guidance == 1.0:
        return model(x, t, audio, past, ctrl)[0]
    B = x.shape[0]
    drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)])
    x0 = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([audio, audio]), torch.cat([past, past]),
               torch.cat([ctrl, ctrl]), drop_audio=drop, drop_controls=drop)[0]
    c, u = x0[:B], x0[B:]
    return u + guidance * (c - u)


@torch.no_grad()
def teacher_sample(model, z, audio, past, ctrl, steps: int = 20, guidance: float = 2.0) -> torch.Tensor:
    """x0 of the teacher's deterministic DDIM sampling from noise z (B, T, C), normalised units."""
    sched = ddim_scheduler(steps)
    x = z.clone()
    for t in sched.timesteps:
        tt = torch.full((z.shape[0],), float(t))
        x0 = guided(model, x, tt, audio, past, ctrl, guidance)
        x = sched.step(x0, int(t), x, eta=0.0).prev_sample
    return x0


@torch.no_grad()
def trajectory(model, z, t_ab: list[tuple[float, float]], k: int, audio, past, ctrl):
    """The few-step sampler of ``model`` (its first output is x0) from noise ``z`` to its ``k``-th
    step (0-based) of the schedule ``t_ab`` [(timestep, alpha_bar)] -> (x there, x0 there), the
    update engine.backbone.BackboneModel.sample makes at run time."""
    x = z
    for i in range(k + 1):
        x0 = model(x, torch.full((z.shape[0],), float(t_ab[i][0])), audio, past, ctrl)[0]
        if i < k:
            ab, ab_next = t_ab[i][1], t_ab[i + 1][1]
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(max(1.0 - ab, 1e-12))
            x = math.sqrt(ab_next) * x0 + math.sqrt(1.0 - ab_next) * eps
    return x, x0


def distill(teacher, student, batches, n_iters: int, lr: float = 5e-4, teacher_steps: int = 20,
            guidance: float = 2.0, n_pairs: int = 40000, seed: int = 0, batch: int = 256,
            closure_loss=None, log=print) -> dict:
    """Distil ``teacher`` into ``student`` in place. ``batches(n, gen)`` gives (audio, past, ctrl, x0_true)
    conditions (ground-truth past frames). ``closure_loss(logits, x0_true)``: with a closure head
    (ModelConfig.closure_head), the student's head keeps learning the true closures (it shares
    the audio encoder, which distillation changes). Returns stats."""
    head = bool(getattr(student.cfg, "closure_head", False)) and closure_loss is not None
    g = torch.Generator().manual_seed(seed + 17)
    t0 = time.perf_counter()
    teacher.eval()
    Z, X0, A, P, Cc, Y = [], [], [], [], [], []
    done = 0
    while done < n_pairs:
        audio, past, ctrl, x_true = batches(1024, g)
        Y.append(x_true)
        z = torch.randn(audio.shape[0], teacher.cfg.hop, teacher.cfg.channels, generator=g)
        Z.append(z)
        X0.append(teacher_sample(teacher, z, audio, past, ctrl, teacher_steps, guidance))
        A.append(audio), P.append(past), Cc.append(ctrl)
        done += audio.shape[0]
    Z, X0, A, P, Cc, Y = (torch.cat(v) for v in (Z, X0, A, P, Cc, Y))
    t_pairs = time.perf_counter() - t0
    log(f"distill: {len(Z)} teacher pairs ({teacher_steps} DDIM steps, guidance {guidance}) in {t_pairs:.0f} s")
    ab = make_scheduler().alphas_cumprod.float()
    ts = torch.tensor(sorted({t for v in STUDENT_TIMESTEPS.values() for t in v}))
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sch = warmup_cosine(opt, n_iters)
    student.train()
    ema = None
    for it in range(n_iters):
        i = torch.randint(0, len(Z), (batch,), generator=g)
        t = ts[torch.randint(0, len(ts), (batch,), generator=g)]
        a = ab[t][:, None, None]
        x = a.sqrt() * X0[i] + (1 - a).sqrt() * Z[i]
        out = student(x, t.float(), A[i], P[i], Cc[i])
        pred = out[0]
        pn = (P[i][:, -1:] - student.motion_mean) / student.motion_std       # the join with the past
        vp, vt = torch.cat([pn, pred], 1).diff(dim=1), torch.cat([pn, X0[i]], 1).diff(dim=1)
        loss = ((pred - X0[i]) ** 2).mean() + 0.5 * ((vp - vt) ** 2).mean() + 1.0 * ((vp[:, 0] - vt[:, 0]) ** 2).mean()
        if head:
            loss = loss + 0.5 * closure_loss(out[2], Y[i])
        ema = optimizer_step(opt, sch, student.parameters(), loss, ema)
        if (it + 1) % 250 == 0 or it + 1 == n_iters:
            log(f"distill {it + 1}/{n_iters} loss {ema:.4f} ({time.perf_counter() - t0:.0f} s)")
    student.eval()
    # how far the student is from the teacher, per step count (normalised units, held-in pairs)
    with torch.no_grad():
        i = torch.arange(min(2048, len(Z)))
        gaps = {}
        for n, tl in STUDENT_TIMESTEPS.items():
            t_ab = [(float(t), float(ab[t])) for t in tl]
            x0 = trajectory(student, Z[i], t_ab, len(tl) - 1, A[i], P[i], Cc[i])[1]
            gaps[n] = float(((x0 - X0[i]) ** 2).mean().sqrt())
    log(f"distill: student-teacher RMS gap per step count {gaps}")
    return {"pairs": len(Z), "pairs_s": t_pairs, "seconds": time.perf_counter() - t0, "rms_gap": gaps,
            "teacher_steps": teacher_steps, "guidance": guidance, "iters": n_iters}
