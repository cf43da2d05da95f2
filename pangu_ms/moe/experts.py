"""Routed experts (stage 3 of the MoE forward): E SwiGLU FFNs stored as two batched weights.

w_gate_up [E, d, 2F] (gate | up along the last dim), w_down [E, F, d]. Two ways to run them:
* ``all_experts(x, gates)``: every expert on every token in two matmuls ([T,d] x [d, E*2F], then
  [T, E*F] x [E*F, d]) with the unselected gates zero -- exact dropless compute without any permutation; costs
  E/k x the routed FLOPs, so it only pays for few, small experts (the tiny CPU recipes).
* ``per_group(xe, expert_ids)``: a batched matmul over groups of rows [G, C, d]; group g uses expert
  ``expert_ids[g]`` (or expert g when ``expert_ids`` is None). Used by the capacity and sorted-block
  dispatchers and by expert parallelism. On Ascend the same stage maps to GroupedMatmul over sorted tokens.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..layers.explicit_broadcast import expand_as


class GateScale(nn.Cell):
    """Activations [T, E, F] times the routing gates [T, E] (no parameters: a Cell of its own so that the
    ``moe_act`` recompute covers the gate multiply with the SwiGLU)."""

    def construct(self, a, gates):
        return a * expand_as(gates.reshape(gates.shape[0], gates.shape[1], 1), a)


class RoutedExperts(nn.Cell):
    """The Ascend plan shards the logical ops ``bmm_gate_up`` / ``bmm_down`` (the per-group batched matmuls,
    [E, C, d] x [E, d, 2F] and [E, C, F] x [E, F, d]); :meth:`shard` applies each strategy to that primitive and
    the equivalent one to the matmul of the masked-dense path (experts merged into the out / in dim)."""

    plan_attrs = ("bmm_gate_up", "bmm_down")

    def __init__(self, num_experts: int, hidden: int, ffn: int, init, backend, dtype=ms.float32,
                 local: tuple | None = None):
        """``local = (first, count)`` keeps only experts first..first+count-1 (expert parallelism). The full
        weights are drawn first and then sliced, so every rank's slice equals the single-process weights."""
        super().__init__()
        w1 = init.normal((num_experts, hidden, 2 * ffn))
        w2 = init.normal((num_experts, ffn, hidden))
        if local is not None:
            first, count = local
            w1, w2, num_experts = w1[first:first + count], w2[first:first + count], count
        self.num_experts, self.hidden, self.ffn = num_experts, hidden, ffn
        self.w_gate_up = Parameter(Tensor(w1, dtype), name="w_gate_up")
        self.w_down = Parameter(Tensor(w2, dtype), name="w_down")
        self.act = backend.swiglu(ffn)
        self.gate_scale = GateScale()
        self.dense_gate_up = ops.MatMul(transpose_b=True)     # masked-dense path: [T, d] x [E 2F, d]^T
        self.dense_down = ops.MatMul()                        # masked-dense path: [T, E F] x [E F, d]
        self.bmm_gate_up = ops.BatchMatMul()                  # per-group path: [G, C, d] x [G, d, 2F]
        self.bmm_down = ops.BatchMatMul()                     # per-group path: [G, C, F] x [G, F, d]

    def shard(self, attr: str, in_strategy: tuple) -> dict:
        """Strategy of a per-group batched matmul -> {primitive attr: strategy} applied (both paths)."""
        (experts, tokens, inner), (_, _, out) = in_strategy
        if attr == "bmm_gate_up":     # weight [E, d, 2F] split (experts, 1, ffn)
            plan = {"bmm_gate_up": in_strategy, "dense_gate_up": ((tokens, 1), (experts * out, 1))}
        else:                         # input [E, C, F] split (experts, tokens, ffn), weight [E, F, d]
            plan = {"bmm_down": in_strategy, "dense_down": ((tokens, experts * inner), (experts * inner, 1))}
        for name, strategy in plan.items():
            getattr(self, name).shard(strategy)
        return plan

    def all_experts(self, x, gates, shared=None):
        """x [T, d], gates [T, E] (zero where not routed) -> sum_e gates[:, e] * FFN_e(x), shape [T, d].

        ``shared`` (optional): a SwiGLU MLP (``gate_up_proj`` [2 n F, d], ``down_proj`` [d, n F], n shared experts
        of this width F) added to the result, folded into the same two matmuls as n extra experts with gate 1:
        one [T, d] x [d, (E+n) 2F] and one [T, (E+n) F] x [(E+n) F, d] matmul instead of four, i.e.
        y = sum_e gates_e FFN_e(x) + SharedFFN(x) (the same math; only the summation order differs)."""
        t = x.shape[0]
        e, f, hidden = self.num_experts, self.ffn, self.hidden
        w1t = self.w_gate_up.transpose(0, 2, 1).reshape(e * 2 * f, hidden)       # [E 2F, d] (out x in)
        w2 = self.w_down.reshape(e * f, hidden)                                   # [E F, d]  (in x out)
        if shared is not None:
            gu = shared.gate_up_proj.weight                                       # [2 n F, d]: gate | up
            n = gu.shape[0] // (2 * f)
            if n > 1:
                gu = gu.reshape(2, n, f, hidden).transpose(1, 0, 2, 3).reshape(n * 2 * f, hidden)
            w1t = ops.concat((w1t, gu), 0)
            w2 = ops.concat((w2, shared.down_proj.weight.transpose(1, 0)), 0)
            gates = ops.concat((gates, ops.ones((t, n), gates.dtype)), 1)
            e = e + n
        h = self.dense_gate_up(x, w1t).reshape(t, e, 2 * f)
        a = self.gate_scale(self.act(h), gates)
        return self.dense_down(a.reshape(t, e * f), w2)

    def per_group(self, xe, expert_ids=None):
        """xe [G, C, d] -> [G, C, d]; group g is processed by expert expert_ids[g] (default g)."""
        if expert_ids is None:
            w1, w2 = self.w_gate_up, self.w_down
        else:
            w1 = ops.gather(self.w_gate_up, expert_ids, 0)
            w2 = ops.gather(self.w_down, expert_ids, 0)
        return self.bmm_down(self.act(self.bmm_gate_up(xe, w1)), w2)
