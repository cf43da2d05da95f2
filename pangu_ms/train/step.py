"""One optimizer step: loss and gradients, optional gradient reduction (data / expert parallel), global-norm
clipping, AdamW. ``TrainStep`` is used as-is in PyNative and wrapped by ``ms.jit`` in graph mode.

The global norm is computed as sqrt(sum_p sum(g_p^2)) with one reduction per tensor (cheaper on CPU than
``clip_by_global_norm``'s all-axes reductions). ``grad_reducer`` is any Cell mapping the gradient tuple to the
reduced tuple (identity in one process; the fused-buffer all-reduce of ``pangu_ms.parallel`` under msrun).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ..moe.bias_update import build_expert_bias_update


def expert_bias_update(net, grad_reducer):
    """Aux-loss-free bias update for ``net`` (None when off); the expert load is summed over the data-parallel
    ranks with the reducer's dense-gradient group sum (every rank counts its own tokens)."""
    return build_expert_bias_update(net, getattr(grad_reducer, "dense_sum", None))


def clip_global_norm(grads, clip: float, reducer=None):
    """(grads scaled so their global norm is at most ``clip`` (0 = no clipping), the unclipped norm).

    With a gradient ``reducer`` (data / expert parallelism) the norm is the *global* one from
    ``reducer.global_sq_norm``: under expert parallelism each rank holds only its own experts' gradients.

    When all gradients share one dtype the squared norm is taken over one flattened buffer (one Concat and one
    square-sum instead of two kernels per tensor; each kernel launch costs ~12 us on CPU). The scaling stays
    per tensor: splitting the buffer back costs one Slice kernel per tensor, and on a contended CPU the
    thread-pooled slices cost more than the small Muls they replace."""
    same = len(grads) > 1
    for g in grads:
        same = same and g.dtype == grads[0].dtype
    if reducer is not None:
        norm = ops.sqrt(reducer.global_sq_norm(grads))
    elif same:
        pieces = ()
        for g in grads:
            pieces = pieces + (g.reshape(-1),)
        flat = ops.concat(pieces, 0)
        norm = ops.sqrt((flat * flat).sum())
    else:
        sq = ()
        for g in grads:
            sq = sq + ((g * g).sum(),)
        norm = ops.sqrt(ops.addn(sq))
    if clip > 0:
        factor = ops.minimum(clip / (norm + 1e-6), 1.0)
        grads = tuple(g * factor.astype(g.dtype) for g in grads)
    return grads, norm


class TrainStep(nn.Cell):
    """``return_grads`` appends the reduced, unclipped gradients to the outputs (for tests)."""

    def __init__(self, net: nn.Cell, optimizer: nn.Cell, grad_clip: float = 1.0, grad_reducer: nn.Cell = None,
                 return_grads: bool = False):
        super().__init__(auto_prefix=False)
        self.net = net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(net, None, self.weights, has_aux=True)
        self.clip = grad_clip
        self.reducer = grad_reducer
        self.return_grads = return_grads
        self.bias_update = expert_bias_update(net, grad_reducer)

    def construct(self, input_ids, labels, loss_mask=None):
        outs, grads = self.grad_fn(input_ids, labels, loss_mask)
        if self.reducer is not None:
            grads = self.reducer(grads)
        clipped, norm = clip_global_norm(grads, self.clip, self.reducer)
        self.optimizer(clipped)
        if self.bias_update is not None:
            self.bias_update(outs[4])
        if self.return_grads:
            return outs + (norm,) + tuple(grads)
        return outs + (norm,)


class AccumulatingTrainStep(nn.Cell):
    """Gradient accumulation that really accumulates: ``micro`` adds each micro-batch's gradients into
    buffers; ``apply`` averages them over the ``n`` micro-batches, reduces, clips and steps the optimizer, then
    zeroes the buffers. Equal to one step on the concatenated batch when the loss is a per-token mean and the
    aux-loss scope does not span micro-batches (``sequence``; other scopes see each micro-batch separately,
    as Megatron's do). MindFormers disables accumulation outside semi-auto parallel, hence this Cell.
    """

    def __init__(self, net: nn.Cell, optimizer: nn.Cell, grad_clip: float = 1.0, grad_reducer: nn.Cell = None):
        super().__init__(auto_prefix=False)
        self.net = net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(net, None, self.weights, has_aux=True)
        self.acc = ms.ParameterTuple(ms.Parameter(ops.zeros(w.shape, w.dtype), name="grad_acc." + w.name,
                                                  requires_grad=False) for w in self.weights)
        self.clip = grad_clip
        self.reducer = grad_reducer
        self.bias_update = expert_bias_update(net, grad_reducer)
        if self.bias_update is not None:     # expert load summed over the micro-batches of one step
            self.load_acc = ms.Parameter(ops.zeros((len(self.bias_update.biases), net.n_exp), ms.float32),
                                         name="expert_load_acc", requires_grad=False)

    def micro(self, input_ids, labels, loss_mask=None):
        outs, grads = self.grad_fn(input_ids, labels, loss_mask)
        for a, g in zip(self.acc, grads):
            ops.assign_add(a, g)
        if self.bias_update is not None:
            ops.assign_add(self.load_acc, outs[4].astype(ms.float32))
        return outs

    def apply(self, n):
        grads = tuple(a / n for a in self.acc)
        if self.reducer is not None:
            grads = self.reducer(grads)
        grads, norm = clip_global_norm(grads, self.clip, self.reducer)
        self.optimizer(grads)
        for a in self.acc:
            ops.assign(a, ops.zeros_like(a))
        if self.bias_update is not None:
            self.bias_update(self.load_acc)
            ops.assign(self.load_acc, ops.zeros_like(self.load_acc))
        return norm


def compile_step(step: TrainStep, mode: str = "graph"):
    """Return a callable step: ``ms.jit``-compiled in graph mode, the Cell itself in PyNative."""
    if mode == "graph":
        return ms.jit(step.construct)
    return step
