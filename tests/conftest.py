"""Shared test setup: CPU device, MindFormers logs out of the working tree, every test starting in the same
execution mode, small config factory."""
import os
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.join(tempfile.gettempdir(), "pangu_ms_test_mflogs"))
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

ms.set_device("CPU")
DEFAULT_MODE = ms.get_context("mode")


@pytest.fixture(autouse=True)
def default_execution_mode():
    """Every test starts in MindSpore's default execution mode (PyNative), whatever an earlier test in the same
    worker set: many tests and the in-process trainer call ``ms.set_context(mode=...)``, and a test whose result
    depends on the mode (see ``tests/model/test_model.py::pynative``) would otherwise pass or fail with the order
    in which xdist hands out tests."""
    ms.set_context(mode=DEFAULT_MODE)
    yield


def tiny_overrides(**extra):
    """A very small config (fast to build and run) as override strings."""
    base = {
        "model.vocab_size": 64, "model.hidden_size": 32, "model.num_layers": 3, "model.num_dense_layers": 1,
        "model.dense_ffn_hidden": 48, "model.num_heads": 2, "model.q_lora_rank": 16, "model.kv_lora_rank": 12,
        "model.qk_nope_head_dim": 8, "model.qk_rope_head_dim": 4, "model.v_head_dim": 8,
        "model.max_position_embeddings": 64, "moe.num_experts": 4, "moe.top_k": 2, "moe.expert_ffn_hidden": 16,
        "train.seq_length": 16, "train.global_batch_size": 2, "parallel.micro_batch_size": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def small_cfg():
    from pangu_ms.config import load_config

    def make(**extra):
        return load_config(None, tiny_overrides(**extra))
    return make


def flat_hw(**kw):
    """A simulator hardware profile with efficiency 1 and zero latency everywhere (hand-computable times):
    peak 1e12 FLOP/s (fp8 2e12), HBM 1e12 B/s, intra-node 1e11 B/s, inter-node 1e10 B/s, 8 devices per node;
    ``kw`` overrides any key."""
    from pangu_ms.sim.hardware import profile_from_dict
    d = {"name": "flat", "peak_flops": {"bf16": 1e12, "fp32": 1e12, "fp8": 2e12}, "hbm_bytes": 1e11,
         "usable_hbm_bytes": 1e11, "hbm_bandwidth": 1e12, "devices_per_node": 8,
         "intra_node": {"bandwidth": 1e11, "latency": 0.0, "efficiency": [[1.0, 1.0]], "topology": "switch"},
         "inter_node": {"bandwidth": 1e10, "latency": 0.0, "efficiency": [[1.0, 1.0]]},
         "gemm_efficiency": [[1.0, 1.0]], "attention_efficiency": 1.0, "elementwise_efficiency": 1.0}
    d.update(kw)
    return profile_from_dict(d)


def pytest_collection_modifyitems(config, items):
    """The msrun tests first: pytest-xdist (``-n 2 --dist loadfile``, pytest.ini) hands out whole modules in
    collection order, and these are the longest, so that the two workers' queues end together."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/distributed/"))
