"""Loss Cells over the model's outputs (the model itself computes no loss).

``CrossEntropy``: token cross-entropy, the fused sparse softmax-CE kernel when every token counts, else a
masked mean.

``CausalLMLoss(model, mtp_weight)``: the pretraining / SFT objective
    loss = CE(next token) + mtp_weight * mean_j CE_mtp_j + sum of the MoE layers' aux losses (MTP layers included)
where MTP depth j+1 predicts token i+j+2 (``labels[:, j+1:]``) and the loss mask (SFT: response tokens) is
shifted the same way. ``construct(input_ids, labels, loss_mask=None, segment_ids=None, position_ids=None)``
returns (loss, lm_loss, mtp_loss, aux_loss, expert_load, drop_rate); ``segment_ids`` / ``position_ids`` go to the
model (document-aware attention and positions of packed rows). The model is held as ``model`` with ``auto_prefix=False``, so the parameter
names are the bare model's (checkpoints and the Ascend plan use them).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class CrossEntropy(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fused = ops.SparseSoftmaxCrossEntropyWithLogits()

    def construct(self, logits, labels, mask=None):
        if mask is None and logits.dtype != ms.float64:     # the fused kernel has no fp64 variant
            return self.fused(logits, labels)
        lse = ops.logsumexp(logits, -1)
        picked = ops.gather_elements(logits, 1, labels.reshape(-1, 1)).reshape(-1)
        if mask is None:
            return (lse - picked).mean()
        m = mask.reshape(-1).astype(logits.dtype)
        return ((lse - picked) * m).sum() / ops.maximum(m.sum(), 1.0)


class CausalLMLoss(nn.Cell):
    """See the module docstring. ``mtp_weight``: ``model.mtp_loss_weight`` (pretraining) or 0 (SFT with
    ``sft.mtp_on_response: false``: the MTP loss is still computed and reported, with no gradient)."""

    def __init__(self, model: nn.Cell, mtp_weight: float):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cross_entropy = CrossEntropy()
        self.mtp_weight = float(mtp_weight)

    def construct(self, input_ids, labels, loss_mask=None, segment_ids=None, position_ids=None):
        b, s = input_ids.shape
        logits, mtp_logits, aux, load, drop = self.model(input_ids, labels, segment_ids, position_ids)
        lm_loss = self.cross_entropy(logits, labels.reshape(-1), loss_mask)
        mtp_loss = ops.zeros((), lm_loss.dtype)
        for j, depth_logits in enumerate(mtp_logits):
            n = s - 1 - j
            target = labels[:, j + 1: j + 1 + n]
            depth_mask = None if loss_mask is None else loss_mask[:, j + 1: j + 1 + n]
            mtp_loss = mtp_loss + self.cross_entropy(depth_logits, target.reshape(-1), depth_mask)
        if len(mtp_logits) > 0:
            mtp_loss = mtp_loss / len(mtp_logits)
        loss = lm_loss + self.mtp_weight * mtp_loss + aux
        return loss, lm_loss, mtp_loss, aux, load, drop
