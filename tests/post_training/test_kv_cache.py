"""KV-cache (compressed MLA latent) decoding reproduces the full forward pass, step by step."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.model import build_model
from pangu_ms.model.decode import IncrementalDecoder


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_kv_cache_matches_full_forward(small_cfg, mode):
    cfg = small_cfg(**{"model.q_lora_rank": 0}) if mode == "pynative" else small_cfg()
    net = build_model(cfg, seed=3)
    rng = np.random.default_rng(0)
    b, s, max_len = 3, 7, 12
    ids = rng.integers(0, cfg.model.vocab_size, (b, s)).astype(np.int32)
    full = net(Tensor(ids))[0].asnumpy().reshape(b, s, -1)
    dec = IncrementalDecoder(net, max_len)
    step = ms.jit(dec.construct) if mode == "graph" else dec
    caches = dec.init_caches(b)
    for t in range(s):
        logits, caches = step(Tensor(ids[:, t]), Tensor(np.array([t], np.int32)), ms.mutable(caches))
        np.testing.assert_allclose(logits.asnumpy(), full[:, t], rtol=1e-4, atol=1e-5)
    # the cache holds [c_kv | k_rope] per token: kv_lora_rank + rope dims
    assert caches[0].shape == (b, max_len, cfg.model.kv_lora_rank + cfg.model.qk_rope_head_dim)
    assert float(np.abs(caches[0].asnumpy()[:, s:]).max()) == 0.0


def test_decoder_keeps_parameter_names(small_cfg):
    net = build_model(small_cfg(), seed=1)
    before = [p.name for p in net.get_parameters()]
    IncrementalDecoder(net, 8)
    assert [p.name for p in net.get_parameters()] == before
