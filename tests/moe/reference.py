"""Independent numpy references for the MoE stages (loops, no vectorised tricks shared with the code)."""
import numpy as np


def silu(x):
    return x / (1.0 + np.exp(-x))


def route(x, wg, k, scale, sigmoid=True, norm=True, bias=None):
    logits = x @ wg.T
    s = 1 / (1 + np.exp(-logits)) if sigmoid else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    sel = s + (bias if bias is not None else 0)
    idx = np.argsort(-sel, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(s, idx, 1)
    if norm:
        w = w / w.sum(1, keepdims=True)
    return idx, w * scale, s


def expert_ffn(x, w1, w2):
    f = w2.shape[0]
    h = x @ w1
    return (silu(h[..., :f]) * h[..., f:]) @ w2


def moe_reference(x, idx, w, w1, w2, capacity=None):
    """Token loop; with ``capacity`` the first C (token-major) pairs of each expert are kept."""
    t, k = idx.shape
    y = np.zeros_like(x)
    seen = np.zeros(w1.shape[0], int)
    dropped = 0
    for i in range(t):
        for c in range(k):
            e = idx[i, c]
            if capacity is not None and seen[e] >= capacity:
                dropped += 1
                continue
            seen[e] += 1
            y[i] += w[i, c] * expert_ffn(x[i], w1[e], w2[e])
    return y, dropped / (t * k)


def aux_loss(mask, probs, k, coeff):
    n, e = mask.shape
    f = mask.sum(0) * e / (k * n)
    p = probs.sum(0) / n
    return coeff * (f * p).sum()
