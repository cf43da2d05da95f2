"""SwiGLU feed-forward: down(silu(x W_gate) * (x W_up)), gate and up fused in one [2F, d] weight."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

from .linear import Linear


class SwiGLUMLP(nn.Cell):
    def __init__(self, hidden: int, ffn: int, init, backend, dtype=ms.float32):
        super().__init__()
        self.gate_up_proj = Linear(hidden, 2 * ffn, init, dtype)
        self.down_proj = Linear(ffn, hidden, init, dtype)
        self.act = backend.swiglu(ffn)

    def construct(self, x):
        return self.down_proj(self.act(self.gate_up_proj(x)))
