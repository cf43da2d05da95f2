"""Advantages, clipped policy loss (low/high clip, token-level mean), k3 KL and entropy against numpy."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.rl.advantages import group_advantages, informative_groups
from pangu_ms.rl.loss import GRPOLoss, policy_loss_terms, token_logprobs


def np_advantages(r, eps=1e-6, scale=True):
    out = np.zeros_like(r, dtype=np.float64)
    for i, g in enumerate(r):
        m = sum(g) / len(g)
        sd = (sum((x - m) ** 2 for x in g) / len(g)) ** 0.5
        out[i] = [(x - m) / (sd + eps) if scale else x - m for x in g]
    return out


def np_policy_loss(logp, old, ref, adv, mask, lo, hi, beta):
    tot_pg = tot_kl = n_clip = 0.0
    n = mask.sum()
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            rho = np.exp(logp[i, t] - old[i, t])
            unclipped = rho * adv[i]
            clipped = min(max(rho, 1 - lo), 1 + hi) * adv[i]
            tot_pg += -min(unclipped, clipped)
            n_clip += clipped < unclipped
            d = ref[i, t] - logp[i, t]
            tot_kl += np.exp(d) - d - 1
    return (tot_pg + beta * tot_kl) / n, tot_pg / n, tot_kl / n, n_clip / n


def test_group_advantages_numpy_reference():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 3, (5, 6)).astype(float) * 0.6
    r[2] = 1.0                                                     # an all-equal group
    for scale in (True, False):
        np.testing.assert_allclose(group_advantages(r, 1e-6, scale), np_advantages(r, 1e-6, scale), atol=1e-12)
    assert np.all(group_advantages(r)[2] == 0)
    assert list(informative_groups(r)) == [bool(np.ptp(g) > 0) for g in r]
    a = group_advantages(r)
    np.testing.assert_allclose(a.mean(1), 0, atol=1e-12)
    with pytest.raises(ValueError):
        group_advantages(np.zeros(3))


@pytest.mark.parametrize("lo,hi,beta", [(0.2, 0.28, 0.05), (0.1, 0.1, 0.0)])
def test_clipped_loss_and_k3_against_numpy(lo, hi, beta):
    rng = np.random.default_rng(1)
    b, s = 6, 9
    logp = np.log(rng.uniform(0.05, 1, (b, s)))
    old = logp + rng.normal(0, 0.4, (b, s))                       # ratios well outside the clip range too
    ref = logp + rng.normal(0, 0.3, (b, s))
    adv = rng.normal(0, 1, b)
    mask = (rng.random((b, s)) < 0.6).astype(np.float32)
    got = policy_loss_terms(*(Tensor(x, ms.float32) for x in (logp, old, ref)), Tensor(adv, ms.float32),
                            Tensor(mask), lo, hi, beta)
    want = np_policy_loss(logp, old, ref, adv, mask, lo, hi, beta)
    for g, w in zip(got, want):
        np.testing.assert_allclose(float(g.asnumpy()), w, rtol=1e-5, atol=1e-6)
    assert 0 < want[3] < 1                                         # the clip is active on some tokens


def test_k3_is_an_unbiased_nonnegative_kl_estimator():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(7))
    q = rng.dirichlet(np.ones(7))
    exact = float((p * np.log(p / q)).sum())                      # KL(p || q), samples from p
    d = np.log(q) - np.log(p)
    k3 = np.exp(d) - d - 1
    assert (k3 >= 0).all()
    np.testing.assert_allclose((p * k3).sum(), exact, rtol=1e-10)
    logp = Tensor(np.log(p)[None].astype(np.float32))
    ref = Tensor(np.log(q)[None].astype(np.float32))
    kl = policy_loss_terms(logp, logp, ref, Tensor(np.zeros(1, np.float32)), Tensor(np.ones((1, 7), np.float32)),
                           0.2, 0.2, 1.0)[2]
    np.testing.assert_allclose(float(kl.asnumpy()), k3.mean(), rtol=1e-5)


def test_grpo_loss_cell_matches_numpy_on_model(small_cfg):
    from pangu_ms.model import build_model
    cfg = small_cfg()
    net = build_model(cfg, seed=4)
    rng = np.random.default_rng(3)
    b, s = 4, 8
    ids = rng.integers(0, cfg.model.vocab_size, (b, s + 1)).astype(np.int32)
    x, y = Tensor(ids[:, :-1]), Tensor(ids[:, 1:])
    logp = token_logprobs(net, x, y)[0].asnumpy().astype(np.float64)
    logits = net(x)[0].asnumpy().astype(np.float64)
    lsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    np.testing.assert_allclose(logp.reshape(-1), lsm[np.arange(b * s), ids[:, 1:].reshape(-1)], atol=2e-5)
    old = logp + rng.normal(0, 0.3, (b, s))
    ref = logp + rng.normal(0, 0.3, (b, s))
    adv = rng.normal(0, 1, b)
    mask = np.zeros((b, s), np.float32)
    mask[:, 4:] = 1
    cell = GRPOLoss(net, 0.2, 0.28, 0.1, aux_loss=True)
    loss, pg, kl, ent, clip, aux = cell(x, y, *(Tensor(v, ms.float32) for v in (old, ref, adv)), Tensor(mask))
    want = np_policy_loss(logp, old, ref, adv, mask, 0.2, 0.28, 0.1)
    np.testing.assert_allclose(float(loss.asnumpy()), want[0] + float(aux.asnumpy()), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(clip.asnumpy()), want[3], atol=1e-6)
    p = np.exp(lsm)
    ent_np = (-(p * lsm).sum(-1)).reshape(b, s)
    np.testing.assert_allclose(float(ent.asnumpy()), (ent_np * mask).sum() / mask.sum(), rtol=1e-4)
    assert float(aux.asnumpy()) > 0                               # MoE aux loss is part of the RL objective
