"""Expert selection by data domain: which routed experts a trained model picks for the tokens of each corpus.

:func:`domain_expert_counts` runs the model (one process, no gradients) over validation batches of every corpus of
a prepared data directory and sums, per MoE layer, the (token, expert) pairs the router selected (its top-k mask,
before any drop): ``{corpus: [n_moe_layers, E]}``. :func:`js_divergence` is the Jensen-Shannon divergence (base 2,
in [0, 1]) between two such selection distributions; :func:`divergence_matrix` gives it for every pair of corpora
and MoE layer. 0 means the domains use the experts in the same proportions; 1 would be disjoint expert sets;
:func:`noise_floor` is the divergence between two halves of one corpus (sampling noise).
"""
from __future__ import annotations

import numpy as np


def selection_shares(counts) -> np.ndarray:
    """Counts [..., E] -> each row's share of its pairs (rows of zeros stay zero)."""
    c = np.asarray(counts, np.float64)
    total = c.sum(-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence (bits) between two count or probability vectors."""
    p, q = selection_shares(p), selection_shares(q)
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def divergence_matrix(counts: dict) -> tuple[list, np.ndarray]:
    """``counts`` {corpus: [L, E]} -> (corpus names, JS divergence [L, C, C])."""
    names = sorted(counts)
    layers = np.asarray(counts[names[0]]).shape[0]
    out = np.zeros((layers, len(names), len(names)))
    for i in range(layers):
        for a, x in enumerate(names):
            for b, y in enumerate(names):
                out[i, a, b] = js_divergence(np.asarray(counts[x])[i], np.asarray(counts[y])[i])
    return names, out


def domain_expert_counts(net, valid: dict, seq_len: int, batches: int = 8, batch_size: int = 8,
                         progress=None) -> dict:
    """{corpus: [n_batches, n_moe_layers, E] selected pairs per batch} of model ``net`` (weights loaded) on up to
    ``batches`` validation batches of each corpus of ``valid`` ({corpus: PackedSplit},
    ``pangu_ms.data.open_prepared``). Sum over axis 0 for the corpus's counts; :func:`noise_floor` compares the
    even and odd batches of one corpus."""
    import mindspore as ms
    from mindspore import Tensor

    from ..data import eval_batches
    net.set_train(False)

    def selected(ids):
        return net(ids)[3]
    forward = ms.jit(selected)
    out = {}
    for name, split in valid.items():
        per = [forward(Tensor(np.ascontiguousarray(b[:, :seq_len]))).asnumpy().astype(np.float64)
               for b in eval_batches(split, batch_size, max_batches=batches)]
        if per:
            out[name] = np.stack(per)
        if progress is not None:
            progress(name)
    return out


def noise_floor(per_batch) -> np.ndarray:
    """Per MoE layer: the JS divergence between the even and the odd batches of one corpus ([n_batches, L, E],
    at least 2 batches): what sampling alone gives at half the token count, the scale below which a divergence
    between corpora means nothing."""
    per = np.asarray(per_batch, np.float64)
    if len(per) < 2:
        raise ValueError("a noise floor needs at least 2 batches per corpus")
    even, odd = per[0::2].sum(0), per[1::2].sum(0)
    return np.array([js_divergence(even[i], odd[i]) for i in range(per.shape[1])])


__all__ = ["selection_shares", "js_divergence", "divergence_matrix", "domain_expert_counts", "noise_floor"]
