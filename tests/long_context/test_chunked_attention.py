"""Query-chunked attention equals full attention (forward and gradients) on random inputs."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from pangu_ms.backend import CausalAttention, ChunkedCausalAttention, get_backend


def _causal(s):
    return Tensor(np.triu(np.full((s, s), -1e9), 1), ms.float32)


@pytest.mark.parametrize("with_rope,s,chunk", [(True, 37, 8), (False, 32, 16), (True, 20, 64)])
def test_chunked_equals_full_incl_grads(with_rope, s, chunk):
    rng = np.random.default_rng(s)
    b, n, dn, dr, dv = 2, 3, 8, 4, 6
    qn, kn = (Tensor(rng.standard_normal((b, n, s, dn)), ms.float32) for _ in range(2))
    v = Tensor(rng.standard_normal((b, n, s, dv)), ms.float32)
    qr = Tensor(rng.standard_normal((b, n, s, dr)), ms.float32) if with_rope else None
    kr = Tensor(rng.standard_normal((b, s, dr)), ms.float32) if with_rope else None
    mask = _causal(s)
    full, chunked = CausalAttention(0.3), ChunkedCausalAttention(0.3, chunk)
    w = Tensor(rng.standard_normal((b, n, s, dv)), ms.float32)

    def loss_of(cell):
        if with_rope:
            return lambda a, c, k, r, vv: (cell(a, c, k, r, vv, mask) * w).sum()
        return lambda a, k, vv: (cell(a, None, k, None, vv, mask) * w).sum()
    args = (qn, qr, kn, kr, v) if with_rope else (qn, kn, v)
    pos = tuple(range(len(args)))
    o_full = full(qn, qr, kn, kr, v, mask).asnumpy()
    o_chunk = chunked(qn, qr, kn, kr, v, mask).asnumpy()
    np.testing.assert_allclose(o_chunk, o_full, atol=1e-6, rtol=0)
    g_full = ms.grad(loss_of(full), grad_position=pos)(*args)
    g_chunk = ms.grad(loss_of(chunked), grad_position=pos)(*args)
    for a, c in zip(g_full, g_chunk):
        np.testing.assert_allclose(c.asnumpy(), a.asnumpy(), atol=1e-6, rtol=0)


def test_backend_attention_chunk_param():
    be = get_backend("cpu")
    assert type(be.attention(0.5)) is CausalAttention
    cell = be.attention(0.5, chunk=16)
    assert isinstance(cell, ChunkedCausalAttention) and cell.chunk == 16


def test_model_loss_same_with_chunked_attention(small_cfg):
    from pangu_ms.model import CausalLMLoss, build_model
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg_full = small_cfg(**{"train.seq_length": 24})
    cfg_chunk = small_cfg(**{"train.seq_length": 24, "long_context.attention_chunk": 7})
    ids = Tensor(np.random.default_rng(0).integers(0, 64, (2, 25)), ms.int32)
    a = CausalLMLoss(build_model(cfg_full, seed=3), cfg_full.model.mtp_loss_weight)(ids[:, :-1], ids[:, 1:])
    net = build_model(cfg_chunk, seed=3)
    assert isinstance(net.layers[0].attention.core, ChunkedCausalAttention)
    b = CausalLMLoss(net, cfg_chunk.model.mtp_loss_weight)(ids[:, :-1], ids[:, 1:])
    np.testing.assert_allclose(b[0].asnumpy(), a[0].asnumpy(), atol=1e-6)
    assert ops is not None
