"""Load-balancing auxiliary loss with a selectable token scope.

For a token set X of N tokens, E experts, top-k routing:
    f_i = E / (k N) * #{t in X routed to i}          (1 for every expert under perfect balance)
    P_i = 1/N * sum_{t in X} p_{t,i}                  (p = per-token normalised router scores)
    L   = alpha * sum_i f_i P_i
The scope chooses X:
    sequence      each sequence of the micro-batch separately, then the mean over sequences;
    micro_batch   all tokens of this rank's micro-batch;
    ep_group      the union of the micro-batches of the expert-parallel group (Pangu Ultra MoE): counts, score
                  sums and N are summed over the EP group by the ``reducer`` before the formula;
    global_batch  the same with the reducer spanning every rank.
The reducer is a Cell (counts [E], score_sums [E], n) -> summed over its group; the default is the identity,
so in a single process ep_group and global_batch equal micro_batch. The distributed reducers live in
``pangu_ms.parallel``; the math here never sees a process group.
"""
from __future__ import annotations

from mindspore import nn, ops


class IdentityReducer(nn.Cell):
    def construct(self, counts, score_sums, n):
        return counts, score_sums, n


class LoadBalancingLoss(nn.Cell):
    def __init__(self, num_experts: int, top_k: int, coeff: float, scope: str, reducer: nn.Cell | None = None):
        super().__init__()
        self.num_experts, self.top_k, self.coeff, self.scope = num_experts, top_k, coeff, scope
        self.reducer = reducer if reducer is not None else IdentityReducer()

    def construct(self, mask, probs, batch):
        if self.scope == "sequence":
            s = mask.shape[0] // batch
            counts = mask.reshape(batch, s, self.num_experts).sum(1)
            psum = probs.reshape(batch, s, self.num_experts).sum(1)
            per_seq = (counts * psum).sum(-1) * (self.num_experts / (self.top_k * s * s))
            return self.coeff * per_seq.mean()
        counts = mask.sum(0)
        psum = probs.sum(0)
        n = ops.ones((), probs.dtype) * mask.shape[0]
        counts, psum, n = self.reducer(ops.stop_gradient(counts), psum, n)
        f = counts * (self.num_experts / self.top_k) / n
        return self.coeff * (f * psum / n).sum()
