"""Single-process checks of the explicit path (no msrun): trivial groups, volume counting, runtime fallback."""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from pangu_ms.backend import get_backend
from pangu_ms.moe.dispatcher import MaskedDenseDispatcher
from pangu_ms.moe.experts import RoutedExperts
from pangu_ms.parallel.comm import single_group
from pangu_ms.parallel.ep_dispatcher import (FlatEPDispatcher, HierarchicalEPDispatcher, comm_volume,
                                             expected_comm_volume)
from pangu_ms.parallel.runtime import setup_parallel


class _Init:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape):
        return (self.rng.standard_normal(shape) * 0.2).astype(np.float32)


class _Block(nn.Cell):
    def __init__(self, disp):
        super().__init__()
        self.experts = RoutedExperts(4, 8, 6, _Init(0), get_backend("cpu"))
        self.disp = disp

    def construct(self, x, idx, w):
        return self.disp(x, idx, w, self.experts)[0]


def test_ep_dispatchers_on_one_rank_equal_the_single_process_dispatcher():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((10, 8)).astype(np.float32))
    idx = Tensor(np.stack([rng.choice(4, 2, replace=False) for _ in range(10)]).astype(np.int32))
    w = Tensor(rng.uniform(0.1, 1, (10, 2)).astype(np.float32))
    ref = _Block(MaskedDenseDispatcher(4, 2))(x, idx, w).asnumpy()
    g = single_group()
    for disp in (FlatEPDispatcher(4, 2, g), HierarchicalEPDispatcher(4, 2, g, g)):
        y = ms.jit(_Block(disp).construct)(x, idx, w).asnumpy()
        assert np.max(np.abs(y - ref)) <= 1e-6 * np.max(np.abs(ref))


def test_comm_volume_counts():
    # 2 members on 2 nodes, 1 MoE layer, T=3 tokens, k=2, E=4 (member 0 owns experts 0,1; member 1 owns 2,3)
    idx0 = np.array([[0, 2], [1, 3], [0, 1]])      # pairs to member 1: 2
    idx1 = np.array([[2, 3], [0, 2], [3, 1]])      # pairs to member 0: 2
    d = 5
    v = comm_volume([idx0, idx1], 4, d, [0, 1], bytes_per_elem=1, backward=False)
    assert v["flat_exact"] == {"inter_node": 2 * (2 + 2) * d, "intra_node": 0, "total": 8 * d}
    # hierarchical with one rank per node: AllGather of T rows (d + 2k) + ReduceScatter of T rows d, each way
    assert v["hier_exact"]["inter_node"] == 2 * (3 * (d + 4) + 3 * d)
    assert v["hier_exact"]["intra_node"] == 0
    assert comm_volume([idx0, idx1], 4, d, [0, 1], bytes_per_elem=1)["flat_exact"]["total"] == 16 * d
    # same node: everything intra
    v = comm_volume([idx0, idx1], 4, d, [0, 0], bytes_per_elem=1, backward=False)
    assert v["flat_exact"]["inter_node"] == 0 and v["hier_exact"]["inter_node"] == 0
    # 718B-like layout: hierarchical halves the inter-node bytes (EP 32 = 4 nodes x 8, top-8 of 256)
    e = expected_comm_volume(8192, 7680, 256, 8, 32, 8)
    assert 0.45 < e["inter_node_ratio_hier_over_flat"] < 0.55


def test_setup_parallel_without_msrun_is_single_process(small_cfg, monkeypatch):
    monkeypatch.delenv("MS_ROLE", raising=False)
    monkeypatch.delenv("RANK_SIZE", raising=False)
    rt = setup_parallel(small_cfg())
    assert rt.world == 1 and not rt.is_distributed and rt.hooks is None and rt.grad_reducer(None) is None
