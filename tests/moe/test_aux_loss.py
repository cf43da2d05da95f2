"""Load-balancing loss for each scope against numpy, including the EP-group union through a reducer."""
import numpy as np
import pytest
from mindspore import Tensor, nn

from pangu_ms.moe.aux_loss import LoadBalancingLoss
from tests.moe.reference import aux_loss

B, S, E, K = 3, 10, 6, 2


def random_routing(seed):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.permutation(E)[:K] for _ in range(B * S)])
    mask = np.zeros((B * S, E), np.float32)
    np.put_along_axis(mask, idx, 1.0, 1)
    s = rng.random((B * S, E)).astype(np.float32)
    return mask, s / s.sum(1, keepdims=True)


@pytest.mark.parametrize("scope", ["micro_batch", "ep_group", "global_batch"])
def test_token_set_scopes_single_process(scope):
    mask, probs = random_routing(0)
    got = LoadBalancingLoss(E, K, 0.01, scope)(Tensor(mask), Tensor(probs), B)
    np.testing.assert_allclose(got.asnumpy(), aux_loss(mask, probs, K, 0.01), rtol=1e-5)


def test_sequence_scope_is_mean_of_per_sequence_losses():
    mask, probs = random_routing(1)
    got = LoadBalancingLoss(E, K, 0.01, "sequence")(Tensor(mask), Tensor(probs), B)
    ref = np.mean([aux_loss(mask[b * S:(b + 1) * S], probs[b * S:(b + 1) * S], K, 0.01) for b in range(B)])
    np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-5)
    full = aux_loss(mask, probs, K, 0.01)
    assert abs(ref - full) > 1e-6                        # the scopes really differ


class OtherRankReducer(nn.Cell):
    """Stands in for the EP all-reduce: adds another rank's statistics (as a sum over the group would)."""

    def __init__(self, mask, probs):
        super().__init__()
        self.c = Tensor(mask.sum(0))
        self.p = Tensor(probs.sum(0))
        self.n = float(mask.shape[0])

    def construct(self, counts, score_sums, n):
        return counts + self.c, score_sums + self.p, n + self.n


def test_ep_group_scope_uses_union_of_group_tokens():
    m0, p0 = random_routing(2)
    m1, p1 = random_routing(3)
    loss = LoadBalancingLoss(E, K, 0.01, "ep_group", OtherRankReducer(m1, p1))
    got = loss(Tensor(m0), Tensor(p0), B)
    ref = aux_loss(np.concatenate([m0, m1]), np.concatenate([p0, p1]), K, 0.01)
    np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-5)
    assert abs(ref - aux_loss(m0, p0, K, 0.01)) > 1e-6


def test_perfect_balance_gives_alpha():
    # every expert gets the same load and the same mean score -> f_i = 1, P_i = 1/E -> L = alpha
    idx = np.array([[i % E, (i + 1) % E] for i in range(E * 4)])
    mask = np.zeros((E * 4, E), np.float32)
    np.put_along_axis(mask, idx, 1.0, 1)
    probs = np.full((E * 4, E), 1.0 / E, np.float32)
    got = LoadBalancingLoss(E, K, 0.01, "micro_batch")(Tensor(mask), Tensor(probs), 4)
    np.testing.assert_allclose(got.asnumpy(), 0.01, rtol=1e-6)
