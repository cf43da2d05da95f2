"""HF safetensors names of the parameter inventory: DeepSeek-V3 (``deepseek_v3``) and openPangu-Ultra-MoE
(``openpangu``) naming, derived entry by entry from :func:`~pangu_ms.model.inventory.parameter_inventory`.

Every HF tensor is described by an :class:`HFTensor`: its name and shape, the inventory entry it comes from, and
how it is cut from that entry (``layout``). The pangu tensor is written along its dim 0 as a sequence of
*chunks*, each chunk built from one or more HF tensors (:func:`chunks`):

    layout          pangu tensor                   chunk                         HF tensors of the chunk
    plain           any                            the whole tensor              the same array
    stack_rows      gate_up_proj [2F, d]           the whole tensor              gate_proj = rows [:F], up_proj = [F:]
    expert_gate_up  moe.experts.w_gate_up [E,d,2F] expert e: w[e] [d, 2F]        gate_proj = w[e,:,:F]^T, up_proj = w[e,:,F:]^T
    expert_down     moe.experts.w_down [E, F, d]   expert e: w[e] [F, d]         down_proj = w[e]^T
    copy            (embedding / LM head)          --                            MTP layer's embed_tokens / shared_head.head

Names (``model.layers.{i}.`` prefix; MTP module j is HF layer ``L + j``, L = ``model.num_layers``):
    embedding / final_norm / lm_head        model.embed_tokens / model.norm / lm_head
    input_norm                              input_layernorm
    post_attn_norm (sandwich only)          post_attention_layernorm     (openpangu: the attention-output norm)
    pre_mlp_norm                            post_attention_layernorm (deepseek_v3, or openpangu without sandwich
                                            norm) / pre_mlp_layernorm (openpangu with sandwich norm)
    post_mlp_norm (sandwich only)           post_mlp_layernorm
    attention.{q_a_proj, q_a_norm, q_b_proj, q_proj, kv_a_proj, kv_a_norm, kv_b_proj, o_proj}
                                            self_attn.{q_a_proj, q_a_layernorm, q_b_proj, q_proj, kv_a_proj_with_mqa,
                                            kv_a_layernorm, kv_b_proj, o_proj}
    mlp.* / moe.shared_expert.*             mlp.* / mlp.shared_experts.*   (gate_up_proj split in gate / up)
    moe.router.weight                       mlp.gate.weight
    moe.router.expert_bias                  mlp.gate.e_score_correction_bias (deepseek_v3; HF always has this
                                            buffer, so a model without expert bias exports zeros)
    mtp.j.{enorm, hnorm, eh_proj}           model.layers.{L+j}.{enorm, hnorm, eh_proj}
    mtp.j.final_norm                        model.layers.{L+j}.shared_head.norm
    mtp.j.layer.*                           model.layers.{L+j}.* (the decoder-layer names above)
    (shared with the main model)            model.layers.{L+j}.embed_tokens, model.layers.{L+j}.shared_head.head
The MTP block's ``eh_proj`` input is ``[enorm(embedding) ; hnorm(hidden)]`` on both sides (no column swap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.errors import ConfigError
from ..config.schema import Config
from .inventory import ParamEntry, parameter_inventory

FORMATS = ("deepseek_v3", "openpangu")

_ATTENTION = {"q_a_proj": "q_a_proj", "q_a_norm": "q_a_layernorm", "q_b_proj": "q_b_proj", "q_proj": "q_proj",
              "kv_a_proj": "kv_a_proj_with_mqa", "kv_a_norm": "kv_a_layernorm", "kv_b_proj": "kv_b_proj",
              "o_proj": "o_proj"}


@dataclass(frozen=True)
class HFTensor:
    name: str            # HF name
    shape: tuple         # HF shape
    source: str          # inventory name it is cut from
    layout: str          # plain | stack_rows | expert_gate_up | expert_down | copy
    expert: int | None = None
    index: int = 0       # position among the HF tensors of one chunk (gate 0, up 1)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    return fmt


def exportable(cfg: Config, fmt: str) -> list[str]:
    """Reasons why the model cannot be written in HF naming ``fmt`` (empty: it can)."""
    m, e = cfg.model, cfg.moe
    why = []
    if m.attention_type != "mla":
        why.append(f"model.attention_type={m.attention_type}: both HF formats are MLA models")
    if not e.enabled:
        why.append("moe.num_experts=0: both HF formats are MoE models")
    elif e.router_score != "sigmoid":
        why.append(f"moe.router_score={e.router_score}: both HF formats route with sigmoid scores")
    if fmt == "deepseek_v3" and m.sandwich_norm:
        why.append("model.sandwich_norm=true: DeepSeek-V3 naming has no post-attention / post-MLP norms "
                   "(use --format openpangu)")
    if fmt == "openpangu" and not m.rope_interleaved:
        why.append("model.rope_interleaved=false: openPangu always rotates interleaved pairs")
    if fmt == "openpangu" and e.enabled and e.router_num_groups > 1:
        why.append(f"moe.router_num_groups={e.router_num_groups}: openPangu's config has no routing groups "
                   f"(use --format deepseek_v3)")
    if fmt == "openpangu" and e.expert_bias:
        why.append("moe.expert_bias=true: openPangu has no expert score bias (use --format deepseek_v3)")
    return why


def _layer_suffix(suffix: str, fmt: str, sandwich: bool) -> str:
    """Name relative to a decoder layer: pangu suffix -> HF suffix."""
    norms = {"input_norm.weight": "input_layernorm.weight",
             "post_attn_norm.weight": "post_attention_layernorm.weight",
             "post_mlp_norm.weight": "post_mlp_layernorm.weight",
             "pre_mlp_norm.weight": ("pre_mlp_layernorm.weight" if fmt == "openpangu" and sandwich
                                     else "post_attention_layernorm.weight")}
    if suffix in norms:
        return norms[suffix]
    head, _, rest = suffix.partition(".")
    if head == "attention":
        module, _, tail = rest.partition(".")
        return f"self_attn.{_ATTENTION[module]}.{tail}"
    if suffix == "moe.router.weight":
        return "mlp.gate.weight"
    if suffix == "moe.router.expert_bias":
        return "mlp.gate.e_score_correction_bias"
    if suffix.startswith("moe.shared_expert."):
        return "mlp.shared_experts." + suffix[len("moe.shared_expert."):]
    if suffix.startswith("mlp."):
        return suffix
    raise KeyError(suffix)


def _hf_prefix(entry: ParamEntry, cfg: Config) -> str:
    if entry.layer is not None:
        return f"model.layers.{entry.layer}."
    return f"model.layers.{cfg.model.num_layers + entry.mtp}."


def _entry_tensors(entry: ParamEntry, cfg: Config, fmt: str) -> list[HFTensor]:
    top = {"embedding.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
           "lm_head.weight": "lm_head.weight"}
    if entry.layer is None and entry.mtp is None:
        return [HFTensor(top[entry.name], entry.shape, entry.name, "plain")]
    prefix, suffix = _hf_prefix(entry, cfg), entry.suffix
    if entry.kind == "mtp":
        own = {"enorm.weight": "enorm.weight", "hnorm.weight": "hnorm.weight", "eh_proj.weight": "eh_proj.weight",
               "final_norm.weight": "shared_head.norm.weight"}
        return [HFTensor(prefix + own[suffix], entry.shape, entry.name, "plain")]
    if entry.kind == "routed_expert":
        experts = entry.shape[0]
        base = prefix + "mlp.experts.{}."
        if suffix.endswith("w_gate_up"):
            _, d, f2 = entry.shape
            return [HFTensor(base.format(e) + f"{w}_proj.weight", (f2 // 2, d), entry.name, "expert_gate_up", e, i)
                    for e in range(experts) for i, w in enumerate(("gate", "up"))]
        _, f, d = entry.shape
        return [HFTensor(base.format(e) + "down_proj.weight", (d, f), entry.name, "expert_down", e)
                for e in range(experts)]
    hf = _layer_suffix(suffix, fmt, cfg.model.sandwich_norm)
    if hf.endswith("gate_up_proj.weight"):
        f2, d = entry.shape
        stem = hf[: -len("gate_up_proj.weight")]
        return [HFTensor(prefix + stem + f"{w}_proj.weight", (f2 // 2, d), entry.name, "stack_rows", None, i)
                for i, w in enumerate(("gate", "up"))]
    return [HFTensor(prefix + hf, entry.shape, entry.name, "plain")]


def hf_tensors(cfg: Config, fmt: str, mtp: bool = True) -> list[HFTensor]:
    """Every HF tensor of the model in HF naming ``fmt``, in inventory order (experts expanded); ``mtp=False``
    leaves the MTP layers out. Raises ConfigError when the model has no such HF form (:func:`exportable`)."""
    check_format(fmt)
    why = exportable(cfg, fmt)
    if why:
        raise ConfigError(f"cannot name this model in {fmt} format: " + "; ".join(why))
    m = cfg.model
    out = []
    for entry in parameter_inventory(cfg):
        if entry.mtp is not None and not mtp:
            continue
        out += _entry_tensors(entry, cfg, fmt)
    if fmt == "deepseek_v3" and not cfg.moe.expert_bias:     # HF's router buffer: zeros = no bias
        out += [HFTensor(f"model.layers.{i}.mlp.gate.e_score_correction_bias", (cfg.moe.num_experts,), "", "zeros")
                for i in _moe_layer_indices(cfg, mtp)]
    head = "embedding.weight" if m.tie_embeddings else "lm_head.weight"
    for j in range(m.mtp_depth if mtp else 0):
        p = f"model.layers.{m.num_layers + j}."
        out += [HFTensor(p + "embed_tokens.weight", (m.vocab_size, m.hidden_size), "embedding.weight", "copy"),
                HFTensor(p + "shared_head.head.weight", (m.vocab_size, m.hidden_size), head, "copy")]
    return out


def _moe_layer_indices(cfg: Config, mtp: bool) -> list[int]:
    m = cfg.model
    main = [i for i in range(m.num_layers) if i >= m.num_dense_layers]
    return main + ([m.num_layers + j for j in range(m.mtp_depth)] if mtp else [])


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` along dim 0 of pangu tensor ``source``, built from ``tensors`` (HF, in order)."""
    source: str
    layout: str
    start: int
    stop: int
    tensors: tuple


def chunks(entry: ParamEntry, tensors: list[HFTensor]) -> list[Chunk]:
    """The chunks of inventory entry ``entry`` (``tensors``: its HF tensors from :func:`hf_tensors`)."""
    mine = [t for t in tensors if t.source == entry.name and t.layout not in ("copy", "zeros")]
    if not mine:
        return []
    layout = mine[0].layout
    if layout in ("expert_gate_up", "expert_down"):
        by_expert = {}
        for t in mine:
            by_expert.setdefault(t.expert, []).append(t)
        return [Chunk(entry.name, layout, e, e + 1, tuple(sorted(ts, key=lambda t: t.index)))
                for e, ts in sorted(by_expert.items())]
    return [Chunk(entry.name, layout, 0, entry.shape[0], tuple(mine))]


def pangu_block(layout: str, arrays: list) -> np.ndarray:
    """HF arrays of one chunk -> the pangu rows of that chunk (experts: [1, ...])."""
    if layout == "plain":
        return arrays[0]
    if layout == "stack_rows":
        return np.concatenate(arrays, 0)
    if layout == "expert_gate_up":
        return np.concatenate([a.T for a in arrays], 1)[None]
    if layout == "expert_down":
        return arrays[0].T[None]
    raise ValueError(layout)


def hf_arrays(layout: str, block: np.ndarray, n: int) -> list:
    """Inverse of :func:`pangu_block`: the pangu rows of a chunk -> its ``n`` HF arrays (C-contiguous)."""
    if layout == "plain":
        out = [block]
    elif layout == "stack_rows":
        out = np.split(block, n, 0)
    elif layout == "expert_gate_up":
        out = [h.T for h in np.split(block[0], 2, 1)]
    elif layout == "expert_down":
        out = [block[0].T]
    else:
        raise ValueError(layout)
    return [np.ascontiguousarray(a) for a in out]


def pangu_to_hf_names(cfg: Config, fmt: str, mtp: bool = True) -> dict:
    """``{HF name: pangu name}`` of every HF tensor cut from one pangu tensor (copies and zeros left out)."""
    return {t.name: t.source for t in hf_tensors(cfg, fmt, mtp) if t.layout not in ("copy", "zeros")}


__all__ = ["FORMATS", "HFTensor", "Chunk", "check_format", "exportable", "hf_tensors", "chunks", "pangu_block",
           "hf_arrays", "pangu_to_hf_names"]
