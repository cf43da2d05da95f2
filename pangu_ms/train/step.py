"""One optimizer step: loss and gradients, optional gradient reduction (data / expert parallel), global-norm
clipping, AdamW. ``TrainStep`` is used as-is in PyNative and wrapped by ``ms.jit`` in graph mode.

The global norm is computed as sqrt(sum_p sum(g_p^2)) with one reduction per tensor (cheaper on CPU than
``clip_by_global_norm``'s all-axes reductions). ``grad_reducer`` is any Cell mapping the gradient tuple to the
reduced tuple (identity in one process; the fused-buffer all-reduce of ``pangu_ms.parallel`` under msrun).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class TrainStep(nn.Cell):
    def __init__(self, net: nn.Cell, optimizer: nn.Cell, grad_clip: float = 1.0, grad_reducer: nn.Cell = None):
        super().__init__(auto_prefix=False)
        self.net = net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(net, None, self.weights, has_aux=True)
        self.clip = grad_clip
        self.reducer = grad_reducer

    def construct(self, input_ids, labels, loss_mask=None):
        outs, grads = self.grad_fn(input_ids, labels, loss_mask)
        if self.reducer is not None:
            grads = self.reducer(grads)
        sq = ()
        for g in grads:
            sq = sq + ((g * g).sum(),)
        norm = ops.sqrt(ops.addn(sq))
        if self.clip > 0:
            factor = ops.minimum(self.clip / (norm + 1e-6), 1.0)
            grads = tuple(g * factor.astype(g.dtype) for g in grads)
        self.optimizer(grads)
        return outs + (norm,)


def compile_step(step: TrainStep, mode: str = "graph"):
    """Return a callable step: ``ms.jit``-compiled in graph mode, the Cell itself in PyNative."""
    if mode == "graph":
        return ms.jit(step.construct)
    return step
