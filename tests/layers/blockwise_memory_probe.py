"""Run by tests/layers/test_blockwise_attention.py in a fresh process: the step-memory growth (MB) of the
gradient of a 4-core query-chunked attention stack at S=1024, with (argv[1] == "1") or without the blockwise
backward. Prints one number."""
import sys

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from pangu_ms.backend import ChunkedCausalAttention
from pangu_ms.train.recompute_auto import PeakMeter

B, N, S, D, LAYERS, CHUNK = 1, 4, 1024, 16, 4, 128


class Stack(nn.Cell):
    def __init__(self, blockwise: bool):
        super().__init__()
        self.cores = nn.CellList([ChunkedCausalAttention(0.25, CHUNK) for _ in range(LAYERS)])
        for core in self.cores:
            core.blockwise_backward = blockwise

    def construct(self, x, rope, mask):
        for core in self.cores:
            x = core(x, x, x, rope, x, mask) * 0.5 + x
        return x.sum()


def main() -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((B, N, S, D)).astype(np.float32))
    rope = Tensor(rng.standard_normal((B, S, D)).astype(np.float32))
    mask = Tensor(np.triu(np.full((S, S), -1e9, np.float32), 1))
    grad = ms.jit(ms.grad(Stack(sys.argv[1] == "1"), grad_position=(0, 1)))
    grad(x, rope, mask)                          # compile + first step
    meter = PeakMeter()
    meter.start()
    grad(x, rope, mask)[0].asnumpy()
    print(meter.growth_bytes() / 2 ** 20)


if __name__ == "__main__":
    main()
