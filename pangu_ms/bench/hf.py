"""The same model in HF transformers: ``DeepseekV3ForCausalLM`` built from a pangu_ms config, with pangu_ms's
weights copied in, plus a torch AdamW train step with the pangu_ms hyper-parameters.

Optional dependencies (``pip install -r requirements-bench.txt``: ``torch==2.13.0``, ``transformers==4.57.1``).

Weight and config mapping: ``pangu_ms/model/hf_names.py`` / ``hf_config.py`` (DeepSeek-V3 naming, the same
mapping the checkpoint converter ``tools/convert_ckpt.py`` uses); valid for ``attention_type: mla``,
``sandwich_norm: false``, ``mtp_depth: 0``, ``router_score: sigmoid``, no expert bias.
RoPE: both sides use DeepSeek's interleaved pairs (2i, 2i+1) (``rope_interleave=True``). HF de-interleaves q_rope
and k_rope before rotating, pangu_ms rotates in place; q.k is invariant under the same permutation of both, so the
attention scores are identical. HF's MLA latent norms use eps 1e-6 by default; they are set to ``model.latent_eps`` here.
Not modelled by HF: the MoE load-balancing aux loss (pangu_ms adds it to the training loss; HF does not compute
one), so training traces coincide beyond step 0 only with ``moe.aux_loss_coeff=0``.
"""
from __future__ import annotations

import numpy as np


#: overrides that make a recipe expressible by the HF twin (no MTP head, plain pre-norm)
COMPARABLE = ["model.mtp_depth=0", "model.sandwich_norm=false"]


def check_comparable(cfg) -> list[str]:
    """Reasons why the HF twin would not be the same model (empty list: comparable)."""
    m, e = cfg.model, cfg.moe
    why = []
    if m.attention_type != "mla":
        why.append("attention_type must be mla")
    if m.sandwich_norm:
        why.append("sandwich_norm must be false (HF DeepSeek-V3 is plain pre-norm)")
    if m.mtp_depth:
        why.append("mtp_depth must be 0 (HF DeepseekV3ForCausalLM has no MTP)")
    if e.enabled and e.router_score != "sigmoid":
        why.append("router_score must be sigmoid")
    if e.enabled and e.num_shared_experts < 1:
        why.append("HF DeepSeek-V3 always has a shared expert")
    if m.tie_embeddings:
        why.append("tie_embeddings must be false")
    if m.compute_dtype != "float32":
        why.append("compute_dtype must be float32")
    return why


def hf_config(cfg):
    from transformers import DeepseekV3Config
    from ..model.hf_config import config_json
    cj = config_json(cfg, "deepseek_v3", mtp=False)
    for key in ("architectures", "model_type", "torch_dtype", "num_nextn_predict_layers", "scoring_func",
                "topk_method", "moe_layer_freq", "use_cache"):
        cj.pop(key)
    return DeepseekV3Config(**cj, use_cache=False)


def build_hf_model(cfg, weights: dict, attn_impl: str = "eager"):
    """HF model with pangu_ms's weights (``weights``: pangu parameter name -> numpy array)."""
    import torch
    from transformers import DeepseekV3ForCausalLM
    hcfg = hf_config(cfg)
    hcfg._attn_implementation = attn_impl
    model = DeepseekV3ForCausalLM(hcfg).float()
    model.train()
    sd = hf_state_dict(cfg, weights)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("e_score_correction_bias")]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        raise RuntimeError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in sd.items():
        if tuple(own[k].shape) != v.shape:
            raise RuntimeError(f"weight mapping: {k} has shape {tuple(own[k].shape)}, pangu gives {v.shape}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False)
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.kv_a_layernorm.variance_epsilon = cfg.model.latent_eps
        if hasattr(attn, "q_a_layernorm"):
            attn.q_a_layernorm.variance_epsilon = cfg.model.latent_eps
    return model


def hf_state_dict(cfg, w: dict) -> dict:
    """pangu name -> array ``w`` to the HF DeepSeek-V3 state dict (``model/hf_names.py``; no MTP)."""
    from ..model.hf_names import chunks, hf_arrays, hf_tensors
    from ..model.inventory import parameter_inventory
    tensors = hf_tensors(cfg, "deepseek_v3", mtp=False)
    sd = {t.name: np.zeros(t.shape, np.float32) for t in tensors if t.layout == "zeros"}
    for entry in parameter_inventory(cfg):
        for chunk in chunks(entry, tensors):
            block = w[entry.name][chunk.start:chunk.stop]
            for t, a in zip(chunk.tensors, hf_arrays(chunk.layout, block, len(chunk.tensors))):
                sd[t.name] = a
    return sd


def torch_adamw(model, t):
    """torch AdamW with the pangu_ms groups: decay on matrices except the embedding (``decay_groups``)."""
    import torch
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed_tokens" not in name else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)


class TorchStep:
    """loss = CE(logits, labels) (labels already shifted, as pangu_ms takes them), clip 1.0, AdamW; the learning
    rate of each step is set from ``lrs`` (the pangu_ms schedule, so both sides take the same steps)."""

    def __init__(self, model, opt, clip: float, lrs, compiled: bool = False):
        import torch
        self.model, self.opt, self.clip, self.lrs, self.i = model, opt, clip, lrs, 0
        self.torch = torch
        fwd = self._loss
        self.loss_fn = torch.compile(fwd) if compiled else fwd

    def _loss(self, x, y):
        logits = self.model(input_ids=x, use_cache=False).logits
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def __call__(self, x, y):
        lr = float(self.lrs[min(self.i, len(self.lrs) - 1)])
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(x, y)
        loss.backward()
        if self.clip > 0:
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.i += 1
        return loss.item()
