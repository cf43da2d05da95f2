"""RoPE: the one-matmul rotation equals explicit pair arithmetic, for both pair layouts and any base."""
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.model.rope import RotaryEmbedding, apply_rope_numpy, inv_freq, rope_tables


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("base", [1e4, 2.56e7])
def test_rope_matches_pair_rotation(interleaved, base):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 8)).astype(np.float32)
    rope = RotaryEmbedding(8, 32, base, interleaved)
    got = rope(Tensor(x)).asnumpy()
    cos, sin = rope_tables(8, 32, base, interleaved)
    ref = apply_rope_numpy(x.astype(np.float64), cos[:16], sin[:16], interleaved)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_rope_table_angles():
    cos, sin = rope_tables(4, 5, 100.0, interleaved=True)
    # pair 1 frequency = 100^(-2/4) = 0.1 ; position 3 angle = 0.3
    assert np.isclose(inv_freq(4, 100.0)[1], 0.1)
    assert np.isclose(cos[3, 2], np.cos(0.3)) and np.isclose(sin[3, 3], np.sin(0.3))


def test_rotation_preserves_relative_position_dot_products():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    cos, sin = rope_tables(8, 20, 1e4, True)

    def rot(v, pos):
        return apply_rope_numpy(v[None], cos[pos:pos + 1], sin[pos:pos + 1])[0]
    assert np.isclose(rot(q, 5) @ rot(k, 2), rot(q, 13) @ rot(k, 10))


def test_rope_at_explicit_positions_matches_pair_rotation():
    """Per-row positions [B, S] (reset position ids of packed rows) for [B, N, S, D] and [B, S, D] inputs."""
    rng = np.random.default_rng(2)
    positions = np.array([[0, 1, 2, 0, 1, 0], [3, 4, 0, 1, 2, 3]], np.int32)
    rope = RotaryEmbedding(8, 32, 1e4, True)
    cos, sin = rope_tables(8, 32, 1e4, True)
    for shape in ((2, 3, 6, 8), (2, 6, 8)):
        x = rng.standard_normal(shape).astype(np.float32)
        got = rope(Tensor(x), positions=Tensor(positions)).asnumpy()
        for b in range(2):
            p = positions[b]
            ref = apply_rope_numpy(x[b].astype(np.float64), cos[p], sin[p], True)
            np.testing.assert_allclose(got[b], ref, atol=1e-5)
