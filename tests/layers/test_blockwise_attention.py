"""The blockwise backward of query-chunked attention (pangu_ms/layers/blockwise_attention.py): the gradients of
full attention (numerically independent: one [S, S] softmax and autodiff), and the memory it exists for."""
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.backend import CausalAttention, ChunkedCausalAttention

PROBE = os.path.join(os.path.dirname(__file__), "blockwise_memory_probe.py")


def _document_mask(b, s, cut):
    """[B, 1, S, S] additive mask: causal within two packed documents split at ``cut`` (row 1: one document)."""
    m = np.triu(np.full((s, s), -1e9, np.float32), 1)
    masks = np.stack([m.copy(), m.copy()])[:b]
    masks[0, cut:, :cut] = -1e9
    return Tensor(masks[:, None])


@pytest.mark.parametrize("document", [False, True])
def test_blockwise_gradients_equal_full_attention_in_graph_mode(document):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(7)
    b, n, s, dn, dr, dv = 2, 3, 29, 8, 4, 6
    t = lambda *shape: Tensor(rng.standard_normal(shape).astype(np.float32))   # noqa: E731
    qn, qr, kn, kr, v, w = t(b, n, s, dn), t(b, n, s, dr), t(b, n, s, dn), t(b, s, dr), t(b, n, s, dv), t(b, n, s, dv)
    mask = _document_mask(b, s, 11) if document else Tensor(np.triu(np.full((s, s), -1e9, np.float32), 1))
    chunked = ChunkedCausalAttention(0.3, 8)
    assert chunked.blockwise_backward

    def loss(cell):
        def fn(a, c, k, r, vv):
            return (cell(a, c, k, r, vv, mask) * w).sum()
        return fn
    grads = [ms.jit(ms.grad(loss(cell), grad_position=(0, 1, 2, 3, 4)))(qn, qr, kn, kr, v)
             for cell in (CausalAttention(0.3), chunked)]
    for name, full, blockwise in zip(("q_nope", "q_rope", "k_nope", "k_rope", "v"), *grads):
        np.testing.assert_allclose(blockwise.asnumpy(), full.asnumpy(), atol=2e-6, rtol=0, err_msg=name)


def test_recomputed_cores_take_the_autodiff_path(small_cfg):
    from pangu_ms.model import build_model
    from pangu_ms.model.recompute import apply_recompute
    cfg = small_cfg(**{"train.seq_length": 24, "long_context.attention_chunk": 8})
    net = build_model(cfg)
    assert all(ly.attention.core.blockwise_backward for ly in net.layers)
    apply_recompute(net, ["core_attn"])
    assert not any(ly.attention.core.blockwise_backward for ly in net.layers)


def test_blockwise_backward_does_not_keep_the_probabilities():
    """4 chunked cores at S=1024, chunk 128, 4 heads: autodiff keeps each core's visible-key probabilities,
    4 x [1, 4, 1024, 576] fp32 = 37.7 MB; the blockwise backward keeps none of them (measured: 71 vs 107 MB)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    growth = [float(subprocess.run([sys.executable, PROBE, flag], capture_output=True, text=True, env=env,
                                   check=True).stdout.split()[-1]) for flag in ("0", "1")]
    kept = 4 * 4 * 1024 * 576 * 4 / 2 ** 20
    assert growth[0] - growth[1] > 0.75 * kept, f"autodiff {growth[0]:.1f} MB, blockwise {growth[1]:.1f} MB"
