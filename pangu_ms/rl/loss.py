"""GRPO-family policy loss as MindSpore graphs.

Per response token t of completion i (advantage A_i, ratio rho = exp(logp - logp_old)):
    pg_t  = -min(rho A_i, clip(rho, 1 - clip_low, 1 + clip_high) A_i)         (DAPO clip-higher when high > low)
    kl_t  = exp(logp_ref - logp) - (logp_ref - logp) - 1                      (k3 estimator of KL(pi || pi_ref))
    loss  = sum_t mask_t (pg_t + kl_coef kl_t) / sum_t mask_t  (+ MoE aux loss)
Token-level averaging: every response token of the batch weighs the same (DAPO), not every sequence.
Reported with it: masked-mean entropy of the policy, clip fraction (tokens where the clipped term is the one
selected by the min, i.e. the gradient is cut), mean KL.

``GRPOLoss.construct(input_ids, labels, old_logp, ref_logp, adv, mask)`` -> (loss, pg_loss, kl, entropy,
clip_frac, aux) is a loss Cell: the trainer wraps it in the one ``TrainStep`` of ``pangu_ms.train.step``
(gradient of the first output, global-norm clipping, AdamW). ``TokenLogProbs`` gives the per-token log-probs
[B, S] used for the old (behaviour) policy and the frozen reference. Both hold the model as ``model`` with
``auto_prefix=False`` (parameter names = the model's) and use only its outputs (logits, aux loss).
"""
from __future__ import annotations

from mindspore import nn, ops


def token_logprobs(model, input_ids, labels):
    """(logp [B, S] of ``labels`` under ``model``, logits [B*S, V], logsumexp [B*S], MoE aux loss)."""
    b, s = input_ids.shape
    logits, _, aux, _, _ = model(input_ids)
    lse = ops.logsumexp(logits, -1)
    picked = ops.gather_elements(logits, 1, labels.reshape(-1, 1)).reshape(-1)
    return (picked - lse).reshape(b, s), logits, lse, aux


def policy_loss_terms(logp, old_logp, ref_logp, adv, mask, clip_low: float, clip_high: float, kl_coef: float):
    """The math above on tensors: (loss, pg_loss, kl_mean, clip_frac); adv [B], the rest [B, S]."""
    m = mask.astype(logp.dtype)
    n = ops.maximum(m.sum(), 1.0)
    a = adv.reshape(-1, 1).astype(logp.dtype)
    ratio = ops.exp(logp - old_logp)
    s1 = ratio * a
    s2 = ops.clip_by_value(ratio, 1.0 - clip_low, 1.0 + clip_high) * a
    pg = -ops.minimum(s1, s2)
    d = ref_logp - logp
    kl = ops.exp(d) - d - 1.0
    pg_loss = (pg * m).sum() / n
    kl_mean = (kl * m).sum() / n
    clip_frac = ((s2 < s1).astype(logp.dtype) * m).sum() / n
    return pg_loss + kl_coef * kl_mean, pg_loss, kl_mean, clip_frac


class TokenLogProbs(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, input_ids, labels):
        return token_logprobs(self.model, input_ids, labels)[0]


class GRPOLoss(nn.Cell):
    def __init__(self, model, clip_low: float = 0.2, clip_high: float = 0.28, kl_coef: float = 0.0,
                 aux_loss: bool = True):
        super().__init__(auto_prefix=False)
        self.model = model
        self.clip_low, self.clip_high, self.kl_coef = clip_low, clip_high, kl_coef
        self.use_aux = aux_loss

    def construct(self, input_ids, labels, old_logp, ref_logp, adv, mask):
        logp, logits, lse, aux = token_logprobs(self.model, input_ids, labels)
        loss, pg, kl, clip_frac = policy_loss_terms(logp, old_logp, ref_logp, adv, mask, self.clip_low,
                                                    self.clip_high, self.kl_coef)
        p = ops.exp(logits - lse.reshape(-1, 1))
        ent = (lse - (p * logits).sum(-1)).reshape(logp.shape)
        m = mask.astype(logp.dtype)
        entropy = ops.stop_gradient((ent * m).sum() / ops.maximum(m.sum(), 1.0))
        if self.use_aux:
            loss = loss + aux
        return loss, pg, kl, entropy, clip_frac, aux
