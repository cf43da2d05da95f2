"""Optimizer-state swap accounting (``pangu_ms/sim/swap.py``): bytes off device and host-link time per step, by hand."""
import pytest

from pangu_ms.config import load_config
from pangu_ms.parallel.dims import ParallelDims
from pangu_ms.sim.memory import model_state_bytes
from pangu_ms.sim.swap import OptimizerSwap, optimizer_swap, swap_optimizer_enabled
from tests.conftest import tiny_overrides


def cfg(**extra):
    base = {"parallel.dp": 2, "parallel.ep": 2, "train.global_batch_size": 4}
    base.update(extra)
    return load_config(None, tiny_overrides(**base))


def test_off_by_default():
    c = cfg()
    assert not swap_optimizer_enabled(c)
    assert optimizer_swap(c, ParallelDims.from_config(c), 1000.0, 4000.0, 1e10) == OptimizerSwap(0.0, 0.0, 0.0)


@pytest.mark.parametrize("key", ["train.swap.optimizer_state", "sim.swap_optimizer"])
def test_bf16_zero1_by_hand(key):
    c = cfg(**{key: "true", "parallel.optimizer_shard": "true"})
    lay = ParallelDims.from_config(c)
    # bf16: 12 B/param (fp32 master + m + v); dense 1000 params / tp 1, sharded over dp*cp = 2 -> 500;
    # experts 4000 over EP width 2 -> 2000 per device, expert-DP = dp*cp*tp / (ep*etp) = 1 -> not sharded further
    s = optimizer_swap(c, lay, 1000.0, 4000.0, host_bandwidth=1e10)
    assert s.off_device_bytes == pytest.approx(12 * (500 + 2000))
    assert s.moved_bytes == pytest.approx(2 * 12 * 2500)
    assert s.host_link_s == pytest.approx(2 * 12 * 2500 / 1e10)
    # what leaves the device is what the memory model holds there without the swap
    c_off = cfg(**{"parallel.optimizer_shard": "true"})
    assert s.off_device_bytes == pytest.approx(model_state_bytes(c_off, lay, 1000.0, 4000.0).optimizer)


def test_fp32_without_zero1_by_hand():
    c = cfg(**{"train.swap.optimizer_state": "true", "sim.precision": "fp32"})
    s = optimizer_swap(c, ParallelDims.from_config(c), 1000.0, 4000.0, host_bandwidth=2e10)
    # fp32: 8 B/param (m, v), no optimizer sharding: 1000 + 4000 / 2
    assert s.off_device_bytes == pytest.approx(8 * 3000)
    assert s.host_link_s == pytest.approx(2 * 8 * 3000 / 2e10)
