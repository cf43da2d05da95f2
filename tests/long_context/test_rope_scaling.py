"""RoPE tables for a changed base and for NTK / YaRN scaling against independent numpy formulas."""
import numpy as np
import pytest

from pangu_ms.model import rope


def _ref_tables(dim, n, freqs, mscale=1.0):
    # interleaved layout: dims (2i, 2i+1) share frequency i
    pos = np.arange(n)[:, None]
    cos = np.zeros((n, dim))
    sin = np.zeros((n, dim))
    for i, f in enumerate(freqs):
        cos[:, 2 * i] = cos[:, 2 * i + 1] = np.cos(pos[:, 0] * f) * mscale
        sin[:, 2 * i] = sin[:, 2 * i + 1] = np.sin(pos[:, 0] * f) * mscale
    return cos, sin


@pytest.mark.parametrize("base", [1e4, 1.6e5, 1.6e6, 2.56e7])
def test_changed_base_matches_numpy(base):
    dim, n = 8, 300
    freqs = [base ** (-(2 * i) / dim) for i in range(dim // 2)]
    cos, sin = rope.rope_tables(dim, n, base)
    rc, rs = _ref_tables(dim, n, freqs)
    np.testing.assert_allclose(cos, rc, atol=1e-12)
    np.testing.assert_allclose(sin, rs, atol=1e-12)
    # "none" scaling through the new entry point is exactly the old table
    c2, s2 = rope.scaled_rope_tables(dim, n, base, scaling="none", factor=4.0)
    np.testing.assert_array_equal(c2, cos)
    np.testing.assert_array_equal(s2, sin)


def test_ntk_matches_numpy():
    dim, n, base, s = 64, 50, 1e4, 4.0
    new_base = base * s ** (dim / (dim - 2))
    freqs = [new_base ** (-(2 * i) / dim) for i in range(dim // 2)]
    cos, sin = rope.scaled_rope_tables(dim, n, base, scaling="ntk", factor=s)
    rc, rs = _ref_tables(dim, n, freqs)
    np.testing.assert_allclose(cos, rc, atol=1e-12)
    np.testing.assert_allclose(sin, rs, atol=1e-12)
    # the lowest frequency is interpolated by exactly s, the highest kept
    f = rope.scaled_inv_freq(dim, base, "ntk", s)
    f0 = rope.inv_freq(dim, base)
    assert f[0] == pytest.approx(f0[0])
    assert f[-1] == pytest.approx(f0[-1] / s, rel=1e-12)


def test_yarn_matches_numpy():
    dim, n, base, s, orig = 64, 40, 1e4, 8.0, 4096
    # reference YaRN (NTK-by-parts), written from the paper's formulas
    d_of = lambda r: dim * np.log(orig / (r * 2 * np.pi)) / (2 * np.log(base))  # noqa: E731
    low, high = max(int(np.floor(d_of(32))), 0), min(int(np.ceil(d_of(1))), dim // 2 - 1)
    freqs = []
    for i in range(dim // 2):
        theta = base ** (-(2 * i) / dim)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)    # 0 = keep (fast), 1 = interpolate (slow)
        freqs.append(theta * (1 - ramp) + theta / s * ramp)
    m = 0.1 * np.log(s) + 1.0
    cos, sin = rope.scaled_rope_tables(dim, n, base, scaling="yarn", factor=s, original_max_len=orig)
    rc, rs = _ref_tables(dim, n, freqs, m)
    np.testing.assert_allclose(cos, rc, atol=1e-12)
    np.testing.assert_allclose(sin, rs, atol=1e-12)
    f = rope.scaled_inv_freq(dim, base, "yarn", s, orig)
    assert f[0] == rope.inv_freq(dim, base)[0]                       # highest frequency kept
    assert f[-1] == pytest.approx(rope.inv_freq(dim, base)[-1] / s)  # lowest interpolated


def test_rotary_embedding_with_scaling_rotates_like_numpy():
    import mindspore as ms
    from mindspore import Tensor
    dim, n = 8, 20
    x = np.random.default_rng(0).standard_normal((2, n, dim))
    cell = rope.RotaryEmbedding(dim, 32, 1.6e5, True, ms.float64, scaling="ntk", factor=2.0)
    got = cell(Tensor(x, ms.float64)).asnumpy()
    cos, sin = rope.scaled_rope_tables(dim, 32, 1.6e5, True, "ntk", 2.0)
    np.testing.assert_allclose(got, rope.apply_rope_numpy(x, cos[:n], sin[:n]), atol=1e-12)
