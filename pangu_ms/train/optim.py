"""AdamW configured from ``TrainConfig`` (LR values from :mod:`pangu_ms.train.schedule`).

``FusedAdamW`` (default for fp32/fp16 parameters) is exactly AdamW with bias correction, as PyTorch and
MindFormers define it:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = p (1 - lr wd) - lr / bc1 * m / (sqrt(v / bc2) + eps)
with bc1 = 1 - b1^t, bc2 = 1 - b2^t. It runs MindSpore's fused ``AdamWeightDecay`` kernel (one kernel per
parameter: m, v and p updated in place), which has no bias correction, with the correction folded into its scalar
inputs: lr' = lr sqrt(bc2) / bc1, eps' = eps sqrt(bc2), wd' = wd bc1 / sqrt(bc2), since
    p - lr' (m / (sqrt(v) + eps') + wd' p) = p (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
(Checked against a float64 numpy AdamW; on CPU it replaces MindFormers' per-parameter hyper-map of ~13 kernels
by 1, 740 -> 56 optimizer kernels per step on the tiny recipe.) MindFormers' ``AdamW`` (the same math, unfused)
is used for fp64 parameters (the fused kernel has no fp64 variant) or with ``impl="mindformers"``; MindSpore's
``nn.AdamWeightDecay`` has no bias correction and is not AdamW. Weight decay applies to matrices only: norm gains,
the embedding and the expert bias are excluded (choice, as Megatron and the MindFormers Trainer do).
"""
from __future__ import annotations

from ..config.schema import TrainConfig
from .mf import ensure_mindformers
from .schedule import lr_schedule_cell


def decay_groups(params, weight_decay: float):
    decay = [p for p in params if p.ndim >= 2 and "embedding" not in p.name]
    rest = [p for p in params if not (p.ndim >= 2 and "embedding" not in p.name)]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def current_lr(optimizer, step: int) -> float:
    """The learning rate the optimizer applies at ``step`` (for logging)."""
    import mindspore as ms
    lr = optimizer.learning_rate
    if callable(lr):
        return float(lr(ms.Tensor([step], ms.int32)).asnumpy().reshape(-1)[0])
    return float(lr.asnumpy().reshape(-1)[0])


def build_optimizer(params, t: TrainConfig, impl: str = "auto"):
    """AdamW driven by the learning-rate Cell of :mod:`pangu_ms.train.schedule` (the curve of ``lr_values``,
    computed from the optimizer step; MindFormers' single-phase LR Cells start warm-up at 0 -- a step with lr 0 --
    so they are not used).

    ``impl``: ``fused`` (:class:`FusedAdamW`), ``mindformers`` (MindFormers AdamW) or ``auto`` (fused unless a
    parameter is not fp32/fp16)."""
    ensure_mindformers()
    import mindspore as ms
    params = list(params)
    lr = lr_schedule_cell(t)          # one schedule for every recipe: the values of schedule.lr_values
    if impl == "auto":
        impl = "fused" if all(p.dtype in (ms.float32, ms.float16) for p in params) else "mindformers"
    if impl == "fused":
        return __getattr__("FusedAdamW")(decay_groups(params, t.weight_decay), learning_rate=lr,
                          betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps, weight_decay=t.weight_decay)
    from mindformers.core.optim import AdamW
    return AdamW(decay_groups(params, t.weight_decay), learning_rate=lr, betas=(t.adam_beta1, t.adam_beta2),
                 eps=t.adam_eps, weight_decay=t.weight_decay)


def _fused_adamw_class():
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops
    from mindspore.ops import operations as P

    class FusedAdamW(nn.Optimizer):
        """AdamW with bias correction on the fused ``AdamWeightDecay`` kernel (see the module docstring).
        States are named ``adam_m.*`` / ``adam_v.*`` as MindFormers' AdamW names them."""

        def __init__(self, params, learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
            super().__init__(learning_rate, params, weight_decay)
            self.beta1 = Tensor(np.array([betas[0]], np.float32))
            self.beta2 = Tensor(np.array([betas[1]], np.float32))
            self.eps = Tensor(np.array([eps], np.float32))
            self.exp_avg = self._parameters.clone(prefix="adam_m", init="zeros")
            self.exp_avg_sq = self._parameters.clone(prefix="adam_v", init="zeros")
            wd = self.weight_decay if self.is_group else (self.weight_decay,) * len(self._parameters)
            self.decay = tuple(float(w) for w in wd)
            self.adam = P.AdamWeightDecay()

        def construct(self, gradients):
            lr = self.get_lr()
            self.assignadd(self.global_step, self.global_step_increase_tensor)
            step = self.global_step.astype(ms.float32)
            bc1 = 1.0 - ops.pow(self.beta1, step)
            sb2 = ops.sqrt(1.0 - ops.pow(self.beta2, step))
            lr_t = lr * sb2 / bc1
            eps_t = self.eps * sb2
            wd_scale = bc1 / sb2
            params = self._parameters
            for i in range(len(params)):
                wd = self.decay[i] * wd_scale if self.decay[i] > 0 else 0.0
                self.adam(params[i], self.exp_avg[i], self.exp_avg_sq[i], lr_t, self.beta1, self.beta2, eps_t, wd,
                          gradients[i])
            return True

    return FusedAdamW


def __getattr__(name):
    # FusedAdamW is built lazily so that importing this module does not import MindSpore.
    if name == "FusedAdamW":
        if "FusedAdamW" not in globals():
            globals()["FusedAdamW"] = _fused_adamw_class()
        return globals()["FusedAdamW"]
    raise AttributeError(name)
