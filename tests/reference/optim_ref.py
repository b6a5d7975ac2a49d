"""optim_ref.py: PyTorch references for lib/train/optim, written from the definitions (docs/architecture.md §1
and lightly.utils.lars.LARS, which LightlyTrain's distillation uses), not from our C code.

- lars_step(): one LARS update of a list of tensors in float64/float32 torch, the rule of
  lightly.utils.lars.LARS (momentum, dampening 0, no Nesterov):
      d = g
      if wd != 0 and ||p|| != 0 and ||g|| != 0:
          d = (g + wd * p) * trust_coef * ||p|| / (||g|| + wd * ||p|| + eps)
      buf = d (first step) or momentum * buf + d
      p = p - lr * buf
  Parameters of the no-weight-decay group are passed with wd = 0: plain momentum SGD.
- schedule(): the warmup + cosine multiplier, transcribed from docs/architecture.md §1.
"""
import math

import torch


def lars_step(params, grads, bufs, lr, wds, momentum=0.9, trust_coef=0.001, eps=1e-8):
    """One step. params, grads: lists of tensors (params updated in place); bufs: list of momentum
    buffers (None before the first step; replaced in place in the list); wds: per-tensor weight
    decay (0 for the no-weight-decay group)."""
    with torch.no_grad():
        for i, (p, g, wd) in enumerate(zip(params, grads, wds)):
            d = g.clone()
            p_norm = torch.norm(p)
            g_norm = torch.norm(g)
            if wd != 0 and p_norm != 0 and g_norm != 0:
                ratio = trust_coef * p_norm / (g_norm + wd * p_norm + eps)
                d = (d + wd * p) * ratio
            if momentum != 0:
                if bufs[i] is None:
                    bufs[i] = d.clone()
                else:
                    bufs[i] = momentum * bufs[i] + d
                d = bufs[i]
            p.sub_(lr * d)


def warmup_steps(steps_per_epoch, epochs, warmup_epochs=None):
    """W = int(steps_per_epoch * min(10, epochs / 10)); --warmup-epochs X replaces the min."""
    we = min(10, epochs / 10) if warmup_epochs is None else warmup_epochs
    return int(steps_per_epoch * we)


def schedule(k, T, W):
    """The lr multiplier of step k of T with W warmup steps (docs/architecture.md §1)."""
    if k < W:
        return (k + 1) / W
    j = k - W
    M = T - W
    if j >= M - 1:
        return 0.001
    return 0.001 + (1 - 0.001) * (math.cos(math.pi * j / (M - 1)) + 1) / 2

