"""One optimizer step of any stage: loss and gradients of a loss Cell, optional gradient reduction (data /
expert parallel), global-norm clipping, AdamW. ``TrainStep`` is used as-is in PyNative and wrapped by ``ms.jit``
in graph mode; pretraining (``CausalLMLoss``), SFT (the same with a loss mask) and RL (``GRPOLoss``) all use it.

The global norm is computed as sqrt(sum_p sum(g_p^2)) with one reduction per tensor (cheaper on CPU than
``clip_by_global_norm``'s all-axes reductions). ``grad_reducer`` is any Cell mapping the gradient tuple to the
reduced tuple (identity in one process; the fused-buffer all-reduce of ``pangu_ms.parallel`` under msrun).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ..layers.reduce import sum_of_squares
from ..moe.bias_update import build_expert_bias_update


def expert_bias_update(loss_cell, grad_reducer):
    """Aux-loss-free bias update (None when off): for a ``CausalLMLoss`` (its outputs carry the expert load at
    index 4; RL's ``GRPOLoss`` does not, so its routers' bias is not updated). The load is summed over the
    data-parallel ranks with the reducer's dense-gradient group sum (every rank counts its own tokens)."""
    from ..model.loss import CausalLMLoss
    if not isinstance(loss_cell, CausalLMLoss):
        return None
    return build_expert_bias_update(loss_cell.model, getattr(grad_reducer, "dense_sum", None))


FLAT_NORM_MAX_ELEMENTS = 1 << 22     # above this many gradient elements the per-tensor norm is cheaper


def clip_global_norm(grads, clip: float, reducer=None):
    """(grads scaled so their global norm is at most ``clip`` (0 = no clipping), the unclipped norm).

    With a gradient ``reducer`` (data / expert parallelism) the norm is the *global* one from
    ``reducer.global_sq_norm``: under expert parallelism each rank holds only its own experts' gradients.

    When all gradients share one dtype the squared norm is taken over one flattened buffer (one Concat and one
    square-sum instead of two kernels per tensor; each kernel launch costs ~12 us on CPU). The scaling stays
    per tensor: splitting the buffer back costs one Slice kernel per tensor, and on a contended CPU the
    thread-pooled slices cost more than the small Muls they replace. The flat buffer is a copy of every
    gradient, so above ``FLAT_NORM_MAX_ELEMENTS`` elements (16 MB of fp32: ~1 ms of copying against ~0.2 ms of
    launches saved) the norm is taken per tensor again (small_cpu: 23M elements, two 94 MB copies saved).
    ``sum_of_squares`` keeps the sum's order independent of thread timing (``pangu_ms.layers.reduce``)."""
    same = len(grads) > 1
    total = 0
    for g in grads:
        same = same and g.dtype == grads[0].dtype
        total += g.size
    same = same and total <= FLAT_NORM_MAX_ELEMENTS
    if reducer is not None:
        norm = ops.sqrt(reducer.global_sq_norm(grads))
    elif same:
        pieces = ()
        for g in grads:
            pieces = pieces + (g.reshape(-1),)
        flat = ops.concat(pieces, 0)
        norm = ops.sqrt(sum_of_squares(flat))
    else:
        sq = ()
        for g in grads:
            sq = sq + (sum_of_squares(g),)
        norm = ops.sqrt(ops.addn(sq))
    if clip > 0:
        factor = ops.minimum(clip / (norm + 1e-6), 1.0)
        grads = tuple(g * factor.astype(g.dtype) for g in grads)
    return grads, norm


class TrainStep(nn.Cell):
    """``TrainStep(loss_cell, optimizer, grad_clip, grad_reducer)``: ``loss_cell(*inputs)`` returns a tuple
    whose first element is the loss to differentiate (the rest is logged, ``has_aux``).

    * ``step(*inputs)`` (``construct``): gradients -> update; returns the loss Cell's outputs + (grad norm,)
      (+ the reduced, unclipped gradients with ``return_grads``, for tests).
    * ``accumulate=True``: gradient accumulation that really accumulates: ``micro(*inputs)`` adds each
      micro-batch's gradients into buffers (returns the loss Cell's outputs); ``apply(n)`` averages them over
      the ``n`` micro-batches, runs the same update and zeroes the buffers (returns the grad norm). Equal to one
      step on the concatenated batch when the loss is a per-token mean and the aux-loss scope does not span
      micro-batches (``sequence``; other scopes see each micro-batch separately, as Megatron's do). MindFormers
      disables accumulation outside semi-auto parallel, hence this mode.

    The loss Cell is held as ``net`` with ``auto_prefix=False`` (parameter names = the model's; the compiled
    graph's forward scope is ``Default/net-...``, see ``sim/graph_kernels.py``).
    """

    def __init__(self, loss_cell: nn.Cell, optimizer: nn.Cell, grad_clip: float = 1.0,
                 grad_reducer: nn.Cell = None, accumulate: bool = False, return_grads: bool = False):
        super().__init__(auto_prefix=False)
        self.net = loss_cell
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(loss_cell, None, self.weights, has_aux=True)
        self.clip = grad_clip
        self.reducer = grad_reducer
        self.return_grads = return_grads
        self.accumulate = accumulate
        if accumulate:
            self.acc = ms.ParameterTuple(ms.Parameter(ops.zeros(w.shape, w.dtype), name="grad_acc." + w.name,
                                                      requires_grad=False) for w in self.weights)
        self.bias_update = expert_bias_update(loss_cell, grad_reducer)
        if accumulate and self.bias_update is not None:     # expert load summed over one step's micro-batches
            self.load_acc = ms.Parameter(ops.zeros((len(self.bias_update.biases), loss_cell.model.num_experts),
                                                   ms.float32), name="expert_load_acc", requires_grad=False)

    def update(self, grads, finite=None):
        """The shared core: reduce -> clip by the global norm -> optimizer, skipped when the gradient norm (or the
        ``finite`` flag of the loss) is not finite. Returns (reduced grads, norm)."""
        if self.reducer is not None:
            grads = self.reducer(grads)
        clipped, norm = clip_global_norm(grads, self.clip, self.reducer)
        ok = ops.isfinite(norm)
        if finite is not None:
            ok = ops.logical_and(finite, ok)
        if ok:                      # non-finite loss or gradients: no update (train.on_nonfinite)
            self.optimizer(clipped)
        # after the optimizer step
        return grads, norm

    def construct(self, *inputs):
        outs, grads = self.grad_fn(*inputs)
        grads, norm = self.update(grads, ops.isfinite(outs[0]))
        if self.bias_update is not None:
            self.bias_update(outs[4])
        if self.return_grads:
            return outs + (norm,) + tuple(grads)
        return outs + (norm,)

    def micro(self, *inputs):
        outs, grads = self.grad_fn(*inputs)
        for a, g in zip(self.acc, grads):
            ops.assign_add(a, g)
        if self.bias_update is not None:
            ops.assign_add(self.load_acc, outs[4].astype(ms.float32))
        return outs

    def apply(self, n):
        grads = tuple(a / n for a in self.acc)
        _, norm = self.update(grads)
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
