"""HF ``config.json`` <-> the ``model`` / ``moe`` sections of a pangu_ms recipe, for DeepSeek-V3 and
openPangu-Ultra-MoE naming (tensor names: ``hf_names.py``).

    pangu_ms                    deepseek_v3 (DeepseekV3Config)        openpangu (configuration_openpangu_moe.py)
    model.vocab_size            vocab_size                            vocab_size
    model.hidden_size           hidden_size                           hidden_size
    model.num_layers            num_hidden_layers                     num_hidden_layers
    model.num_dense_layers      first_k_dense_replace                 num_dense_layers
    model.dense_ffn_hidden      intermediate_size                     intermediate_size
    model.num_heads             num_attention_heads (= kv heads)      num_attention_heads (= num_key_value_heads)
    model.q_lora_rank (0=none)  q_lora_rank (null = none)             attention_q_lora_dim
    model.kv_lora_rank          kv_lora_rank                          attention_kv_lora_dim
    model.qk_nope_head_dim      qk_nope_head_dim                      attention_qk_dim
    model.qk_rope_head_dim      qk_rope_head_dim                      attention_qk_rope_dim
    model.v_head_dim            v_head_dim                            attention_v_dim
    model.max_position_embeddings, rope_theta, norm_eps (rms_norm_eps), tie_embeddings (tie_word_embeddings)
    model.rope_interleaved      rope_interleave                       (always interleaved pairs)
    model.latent_norm_eps       1e-6 (HF's default eps of q_a_layernorm / kv_a_layernorm, not configurable)
    model.sandwich_norm         false                                 sandwich_norm
    model.mtp_depth             num_nextn_predict_layers              num_mtp_layers
    moe.num_experts             n_routed_experts                      num_routed_experts
    moe.num_shared_experts      n_shared_experts                      num_shared_experts
    moe.expert_ffn_hidden       moe_intermediate_size                 moe_intermediate_size
    moe.top_k                   num_experts_per_tok                   num_experts_per_tok
    moe.norm_topk_prob, moe.routed_scaling_factor (same names)
    moe.router_score            sigmoid (scoring_func)                sigmoid
Group-limited routing ``n_group`` / ``topk_group`` is ``moe.router_num_groups`` / ``router_group_topk``.
Keys pangu_ms cannot honour are refused by name (``rope_scaling``, ``hidden_act`` other than silu,
``attention_bias``, FP8 ``quantization_config``); keys without effect on the weights (token ids, dtype, ...) are listed back to the caller as ignored.
"""
from __future__ import annotations

from ..config.errors import ConfigError
from ..config.schema import Config
from .hf_names import check_format, exportable

HF_LATENT_NORM_EPS = 1e-6

# config.json keys of each format that carry no architecture (never an error, reported as ignored)
_NO_WEIGHT_EFFECT = {"architectures", "model_type", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id",
                     "torch_dtype", "dtype", "transformers_version", "initializer_range", "use_cache",
                     "attention_dropout", "num_key_value_heads", "hidden_act", "attention_bias", "rope_scaling",
                     "topk_method", "scoring_func", "moe_layer_freq", "ep_size",
                     "pretraining_tp", "aux_loss_alpha", "seq_aux", "quantization_config", "head_dim",
                     "qk_head_dim", "rope_interleave", "sandwich_norm"}

_DEEPSEEK = {"vocab_size": "model.vocab_size", "hidden_size": "model.hidden_size",
             "num_hidden_layers": "model.num_layers", "first_k_dense_replace": "model.num_dense_layers",
             "intermediate_size": "model.dense_ffn_hidden", "num_attention_heads": "model.num_heads",
             "q_lora_rank": "model.q_lora_rank", "kv_lora_rank": "model.kv_lora_rank",
             "qk_nope_head_dim": "model.qk_nope_head_dim", "qk_rope_head_dim": "model.qk_rope_head_dim",
             "v_head_dim": "model.v_head_dim", "max_position_embeddings": "model.max_position_embeddings",
             "rope_theta": "model.rope_theta", "rms_norm_eps": "model.norm_eps",
             "tie_word_embeddings": "model.tie_embeddings", "num_nextn_predict_layers": "model.mtp_depth",
             "n_routed_experts": "moe.num_experts", "n_shared_experts": "moe.num_shared_experts",
             "moe_intermediate_size": "moe.expert_ffn_hidden", "num_experts_per_tok": "moe.top_k",
             "norm_topk_prob": "moe.norm_topk_prob", "routed_scaling_factor": "moe.routed_scaling_factor"}

# openPangu's config.json: DeepSeek-V3's keys, some renamed
_OPENPANGU_NAMES = {"first_k_dense_replace": "num_dense_layers", "q_lora_rank": "attention_q_lora_dim",
                    "kv_lora_rank": "attention_kv_lora_dim", "qk_nope_head_dim": "attention_qk_dim",
                    "qk_rope_head_dim": "attention_qk_rope_dim", "v_head_dim": "attention_v_dim",
                    "num_nextn_predict_layers": "num_mtp_layers", "n_routed_experts": "num_routed_experts",
                    "n_shared_experts": "num_shared_experts"}
_OPENPANGU = {_OPENPANGU_NAMES.get(key, key): path for key, path in _DEEPSEEK.items()}

KEYS = {"deepseek_v3": _DEEPSEEK, "openpangu": _OPENPANGU}
MODEL_TYPES = {"deepseek_v3": "deepseek_v3", "openpangu": "pangu_ultra_moe"}
ARCHITECTURES = {"deepseek_v3": "DeepseekV3ForCausalLM", "openpangu": "PanguUltraMoEForCausalLM"}
# values pangu_ms fills in where a config.json leaves a key out (the HF config classes' defaults)
_DEFAULTS = {"q_lora_rank": None, "attention_q_lora_dim": None, "tie_word_embeddings": False,
             "num_nextn_predict_layers": 0, "num_mtp_layers": 0, "norm_topk_prob": True,
             "routed_scaling_factor": 1.0}


def detect_format(cj: dict, where: str = "config.json") -> str:
    """``deepseek_v3`` or ``openpangu`` from a config.json's ``model_type`` (or its key names)."""
    mt = cj.get("model_type", "")
    if mt == "deepseek_v3" or (not mt and "n_routed_experts" in cj):
        return "deepseek_v3"
    if mt in ("pangu_ultra_moe", "openpangu_moe") or (not mt and "num_routed_experts" in cj):
        return "openpangu"
    raise ConfigError(f"{where}: model_type '{mt}' is neither deepseek_v3 nor pangu_ultra_moe (give --format)")


def _refuse(cj: dict, fmt: str, where: str) -> None:
    act = cj.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{where}: hidden_act={act!r}: pangu_ms's experts are SwiGLU (silu)")
    if cj.get("attention_bias"):
        raise ConfigError(f"{where}: attention_bias=true: pangu_ms's attention projections have no bias")
    if cj.get("rope_scaling"):
        raise ConfigError(f"{where}: rope_scaling={cj['rope_scaling']!r} is not mapped onto pangu_ms's RoPE "
                          f"settings; remove it to import the unscaled model")
    if cj.get("quantization_config"):
        raise ConfigError(f"{where}: quantization_config present (FP8 block-quantised weights): dequantise the "
                          f"checkpoint to bf16/fp32 first")
    score = cj.get("scoring_func", "sigmoid")
    if score != "sigmoid":
        raise ConfigError(f"{where}: scoring_func={score!r}: both formats route with sigmoid scores")
    freq = cj.get("moe_layer_freq", 1)
    if freq != 1:
        raise ConfigError(f"{where}: moe_layer_freq={freq}: pangu_ms puts MoE in every layer after the dense ones")


def recipe_sections(cj: dict, fmt: str, where: str = "config.json") -> tuple[dict, list[str]]:
    """config.json -> (``{"model": {...}, "moe": {...}}``, ignored keys). MTP depth is what config.json says;
    the importer checks it against the tensors."""
    check_format(fmt)
    _refuse(cj, fmt, where)
    keys = KEYS[fmt]
    sections = {"model": {"attention_type": "mla", "sandwich_norm": bool(cj.get("sandwich_norm", False))
                          if fmt == "openpangu" else False,
                          "rope_interleaved": bool(cj.get("rope_interleave", True)),
                          "latent_norm_eps": HF_LATENT_NORM_EPS},
                "moe": {"router_score": "sigmoid"}}
    for key, path in keys.items():
        if key in cj:
            value = cj[key]
        elif key in _DEFAULTS:
            value = _DEFAULTS[key]
        else:
            raise ConfigError(f"{where}: key '{key}' missing (needed for {path})")
        if path in ("model.q_lora_rank",) and value is None:
            value = 0
        section, name = path.split(".")
        sections[section][name] = value
    groups, group_topk = int(cj.get("n_group", 1) or 1), int(cj.get("topk_group", 1) or 1)
    sections["moe"].update(router_num_groups=groups, router_group_topk=group_topk if group_topk < groups else 0)
    ignored = sorted(k for k in cj if k not in keys and k not in _NO_WEIGHT_EFFECT and
                     k not in ("n_group", "topk_group"))
    return sections, ignored


def config_json(cfg: Config, fmt: str, mtp: bool = True, dtype: str = "float32") -> dict:
    """The config.json of the model in format ``fmt`` (``mtp=False``: without the MTP layers)."""
    check_format(fmt)
    why = exportable(cfg, fmt)
    if why:
        raise ConfigError(f"cannot write this model as {fmt}: " + "; ".join(why))
    values = {}
    for key, path in KEYS[fmt].items():
        section, name = path.split(".")
        values[key] = getattr(getattr(cfg, section), name)
    m = cfg.model
    q_key = "q_lora_rank" if fmt == "deepseek_v3" else "attention_q_lora_dim"
    values[q_key] = m.q_lora_rank if m.q_lora_rank > 0 else None
    values["num_nextn_predict_layers" if fmt == "deepseek_v3" else "num_mtp_layers"] = m.mtp_depth if mtp else 0
    out = {"architectures": [ARCHITECTURES[fmt]], "model_type": MODEL_TYPES[fmt], **values,
           "num_key_value_heads": m.num_heads, "hidden_act": "silu", "attention_bias": False,
           "attention_dropout": 0.0, "rope_scaling": None, "use_cache": True, "torch_dtype": dtype}
    if fmt == "deepseek_v3":
        e = cfg.moe
        out.update({"n_group": e.router_num_groups, "topk_group": e.router_group_topk or e.router_num_groups,
                    "scoring_func": "sigmoid", "topk_method": "noaux_tc",
                    "rope_interleave": m.rope_interleaved, "moe_layer_freq": 1})
    else:
        out["sandwich_norm"] = m.sandwich_norm
    return out


def export_warnings(cfg: Config) -> list[str]:
    """What HF cannot represent exactly (the export still runs; the caller prints these)."""
    out = []
    if cfg.model.latent_eps != HF_LATENT_NORM_EPS:
        out.append(f"model latent_norm_eps is {cfg.model.latent_eps:g}; HF's q_a_layernorm / kv_a_layernorm use "
                   f"{HF_LATENT_NORM_EPS:g} (a tiny numerical difference)")
    return out


__all__ = ["HF_LATENT_NORM_EPS", "KEYS", "detect_format", "recipe_sections", "config_json", "export_warnings"]
