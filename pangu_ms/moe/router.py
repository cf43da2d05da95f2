"""Top-k router (stage 1 of the MoE forward).

    s      = sigmoid(x W_g^T)            (or softmax), in fp32 (fp64 when the model runs in fp64)
    chosen = top_k(s + b)                b = aux-loss-free expert bias (selection only; zero when disabled;
                                         updated after each optimizer step by :mod:`pangu_ms.moe.bias_update`)
    group-limited (moe.router_num_groups G, router_group_topk g; DeepSeek-V3's node-limited routing): the E
    experts form G groups of consecutive experts, each group is ranked by the sum of its two highest s + b,
    and the top_k is taken over the experts of the best g groups only (the others are pushed to -1e9; HF's
    twin fills 0.0, the same choice whenever the selection scores are positive, as sigmoid scores with small
    biases are)
    w      = s[chosen];  w <- w / sum(w) if norm_topk_prob;  w <- w * routed_scaling_factor
So with renormalisation the k combine weights of every token sum to ``routed_scaling_factor``.

Also returns what the load-balancing loss needs: the selection mask [T, E] and the per-token normalised scores
p = s / sum_j s_j (the sigmoid scores are normalised as in DeepSeek-V3's sequence-wise loss).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..config.schema import MoEConfig
from .dispatcher import one_hot


class TopKRouter(nn.Cell):
    def __init__(self, hidden: int, cfg: MoEConfig, init, dtype=ms.float32):
        super().__init__()
        self.num_experts, self.top_k = cfg.num_experts, cfg.top_k
        self.groups = cfg.router_num_groups if cfg.group_limited else 1
        self.group_topk = cfg.router_group_topk
        self.sigmoid = cfg.router_score == "sigmoid"
        self.normalize_top_k = cfg.norm_topk_prob
        self.routed_scaling_factor = cfg.routed_scaling_factor
        self.use_bias = cfg.expert_bias
        self.bias_update_rate = cfg.expert_bias_update_rate     # applied by moe.bias_update after each step
        self.router_dtype = ms.float64 if dtype == ms.float64 else ms.float32
        self.weight = Parameter(Tensor(init.normal((self.num_experts, hidden)), self.router_dtype), name="weight")
        if self.use_bias:
            self.expert_bias = Parameter(Tensor(np.zeros(self.num_experts, np.float32), self.router_dtype),
                                         name="expert_bias", requires_grad=False)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        logits = self.matmul(x.astype(self.router_dtype), self.weight)
        if self.sigmoid:
            scores = ops.sigmoid(logits)
            probs = scores / ops.sum(scores, -1, keepdim=True)
        else:
            scores = ops.softmax(logits, -1)
            probs = scores
        select = scores + self.expert_bias if self.use_bias else scores
        if self.groups > 1:
            select = self.limit_to_groups(select)
        _, idx = ops.topk(select, self.top_k)
        w = ops.gather_elements(scores, 1, idx)
        if self.normalize_top_k:
            w = w / (ops.sum(w, -1, keepdim=True) + 1e-20)
        w = w * self.routed_scaling_factor
        mask = one_hot(idx, self.num_experts, self.router_dtype).sum(1)
        return idx.astype(ms.int32), w.astype(x.dtype), mask, probs

    def limit_to_groups(self, select):
        """[T, E] selection scores -> the same with every expert outside the token's best ``group_topk`` groups
        at -1e9 (groups ranked by the sum of their two highest scores)."""
        t, per_group = select.shape[0], self.num_experts // self.groups
        best_two, _ = ops.topk(select.reshape(t, self.groups, per_group), 2)
        _, group_idx = ops.topk(best_two.sum(-1), self.group_topk)
        allowed = one_hot(group_idx, self.groups, self.router_dtype).sum(1)            # [T, G] of 0 / 1
        allowed = ops.broadcast_to(allowed.reshape(t, self.groups, 1), (t, self.groups, per_group))
        allowed = allowed.reshape(t, self.num_experts)
        return select * allowed + (allowed - 1.0) * 1e9
