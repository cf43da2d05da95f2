"""The kernel tests' loss: sum(cell(x) * c), whose gradient reaches every output element with a different
weight c."""
from __future__ import annotations

from mindspore import Tensor, nn


class WeightedSum(nn.Cell):
    def __init__(self, cell, c):
        super().__init__()
        self.cell, self.c = cell, Tensor(c)

    def construct(self, x):
        return (self.cell(x) * self.c).sum()
