"""AdamW and learning-rate schedules from MindFormers, configured from ``TrainConfig``.

MindFormers' ``AdamW`` has bias correction (MindSpore's ``nn.AdamWeightDecay`` does not, so it is not AdamW as
PyTorch/Megatron define it). Weight decay applies to matrices only: norm gains, the embedding and the expert
bias are excluded (choice, as Megatron and the MindFormers Trainer do).
"""
from __future__ import annotations

from ..config.schema import TrainConfig
from .mf import ensure_mindformers


def build_lr(t: TrainConfig, total_steps: int | None = None):
    ensure_mindformers()
    from mindformers.core.lr import ConstantWarmUpLR, CosineWithWarmUpLR, WarmUpStableDecayLR
    total = total_steps or t.steps
    warm = min(t.warmup_steps, max(total - 1, 0))
    if t.lr_schedule == "cosine":
        return CosineWithWarmUpLR(learning_rate=t.lr, warmup_steps=warm, total_steps=total, lr_end=t.min_lr)
    if t.lr_schedule == "wsd":
        decay_start = max(warm, int(round(total * (1.0 - t.decay_fraction))))
        return WarmUpStableDecayLR(learning_rate=t.lr, lr_end=max(t.min_lr, 1e-12), warmup_steps=warm,
                                   total_steps=total, decay_start_steps=decay_start)
    return ConstantWarmUpLR(learning_rate=t.lr, warmup_steps=warm, total_steps=total)


def decay_groups(params, weight_decay: float):
    decay = [p for p in params if p.ndim >= 2 and "embedding" not in p.name]
    rest = [p for p in params if not (p.ndim >= 2 and "embedding" not in p.name)]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def build_optimizer(params, t: TrainConfig, total_steps: int | None = None):
    ensure_mindformers()
    from mindformers.core.optim import AdamW
    lr = build_lr(t, total_steps)
    return AdamW(decay_groups(list(params), t.weight_decay), learning_rate=lr, betas=(t.adam_beta1, t.adam_beta2),
                 eps=t.adam_eps, weight_decay=t.weight_decay)
