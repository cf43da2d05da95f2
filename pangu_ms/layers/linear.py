"""Bias-free linear layer: weight [out, in], y = x @ W^T via the MatMul primitive with transpose_b.

(``ops.matmul`` inserted an explicit transpose kernel per call on CPU; the primitive with the flag does not.)
Inputs of any rank are flattened to 2-D for the matmul and reshaped back. Parameters live in the model's
compute dtype (fp32 / fp64 on CPU); bf16 mixed precision on Ascend is applied with ``mindspore.amp``.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, init, dtype=ms.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(Tensor(init.normal((out_features, in_features)), dtype), name="weight")
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        if x.ndim == 2:
            return self.matmul(x, self.weight)
        lead = x.shape[:-1]
        y = self.matmul(x.reshape(-1, self.in_features), self.weight)
        return y.reshape(lead + (self.out_features,))
