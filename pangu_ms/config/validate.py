"""Cross-field validation of a :class:`Config`; the first violation raises one :class:`ConfigError` naming its key.

Layout checks that need the rank topology (TP divisibility of every sharded dim, hierarchical all-to-all node
shapes, the launch world size) live in :func:`pangu_ms.parallel.dims.validate_layout`.
"""
from __future__ import annotations

import math

from .errors import ConfigError
from .expert_grid import expert_grid_problem, expert_sizes
from .recompute import AUTO, resolve_recompute
from .schema import Config
from .stage_recompute import validate_stage_recompute
from .swap import validate_swap


def _positive(section, obj, names):
    for n in names:
        v = getattr(obj, n)
        if not math.isfinite(v) or v <= 0:          # nan <= 0 is False: test finiteness first
            raise ConfigError(f"{section}.{n}: must be a finite number > 0, got {v}")


def _non_negative(section, obj, names):
    for n in names:
        v = getattr(obj, n)
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{section}.{n}: must be a finite number >= 0, got {v}")


def validate_model(cfg: Config) -> None:
    m = cfg.model
    _positive("model", m, ["vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings",
                           "rope_theta", "norm_eps"])
    _non_negative("model", m, ["num_dense_layers", "mtp_depth", "mtp_loss_weight", "q_lora_rank",
                               "dense_ffn_hidden", "head_dim", "latent_norm_eps"])
    if m.num_dense_layers > m.num_layers:
        raise ConfigError(f"model.num_dense_layers: {m.num_dense_layers} > model.num_layers={m.num_layers}")
    if m.num_dense_layers > 0 or not cfg.moe.enabled:
        if m.dense_ffn_hidden <= 0:
            raise ConfigError("model.dense_ffn_hidden: must be > 0 when the model has dense FFN layers")
    if m.attention_type == "mla":
        _positive("model", m, ["kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"])
        if m.qk_rope_head_dim % 2:
            raise ConfigError(f"model.qk_rope_head_dim: must be even for RoPE, got {m.qk_rope_head_dim}")
    else:
        if m.head_dim == 0 and m.hidden_size % m.num_heads:
            raise ConfigError(f"model.num_heads: hidden_size={m.hidden_size} is not divisible by "
                              f"num_heads={m.num_heads}; set model.head_dim")
        if m.attn_head_dim % 2:
            raise ConfigError(f"model.head_dim: must be even for RoPE, got {m.attn_head_dim}")
        kv = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
        if kv <= 0 or m.num_heads % kv:
            raise ConfigError(f"model.num_kv_heads: num_heads={m.num_heads} must be a multiple of "
                              f"num_kv_heads={kv}")
    if m.init_method == "normal" and m.init_std <= 0:
        raise ConfigError(f"model.init_std: must be > 0, got {m.init_std}")
    _positive("model", m, ["embedding_init_std"])
    if m.sandwich_norm:
        _positive("model", m, ["dssn_c_attn", "dssn_c_mlp"])


def validate_moe(cfg: Config) -> None:
    e = cfg.moe
    _non_negative("moe", e, ["num_experts", "num_shared_experts", "aux_loss_coeff", "expert_bias_update_rate"])
    if not e.enabled:
        if cfg.model.num_dense_layers < cfg.model.num_layers and cfg.model.dense_ffn_hidden <= 0:
            raise ConfigError("model.dense_ffn_hidden: must be > 0 for a dense model (moe.num_experts=0)")
        return
    _positive("moe", e, ["expert_ffn_hidden", "top_k", "routed_scaling_factor", "sorted_block_size"])
    if e.top_k > e.num_experts:
        raise ConfigError(f"moe.top_k: {e.top_k} > moe.num_experts={e.num_experts}")
    _check_router_groups(e)
    if e.dispatcher == "drop_and_pad" and e.capacity_factor <= 0:
        raise ConfigError(f"moe.capacity_factor: must be > 0 for drop_and_pad, got {e.capacity_factor}")
    validate_placement(cfg)


def validate_placement(cfg: Config) -> None:
    """Dynamic expert placement: interval >= 1, theta in [0, 1), threshold in [0, 1]; enabled only with EP > 1 on
    the flat all-to-all (the explicit msrun path)."""
    e, p = cfg.moe, cfg.parallel
    if isinstance(e.placement_interval, bool) or e.placement_interval < 1:
        raise ConfigError(f"moe.placement_interval: must be an integer >= 1 (steps), got {e.placement_interval}")
    if not 0.0 <= e.placement_theta < 1.0:
        raise ConfigError(f"moe.placement_theta: must be in [0, 1), got {e.placement_theta}")
    if not 0.0 <= e.placement_threshold <= 1.0:
        raise ConfigError(f"moe.placement_threshold: must be in [0, 1], got {e.placement_threshold}")
    if not e.expert_placement:
        return
    width = expert_sizes(p.tp, p.ep, p.etp, p.tp_extend_ep)[0]
    if width <= 1:
        raise ConfigError("moe.expert_placement: needs expert parallelism (parallel.ep > 1); with one EP rank "
                          "there is nothing to re-place")
    if p.hierarchical_alltoall:
        raise ConfigError("moe.expert_placement: implemented for the flat all-to-all only "
                          "(set parallel.hierarchical_alltoall=false)")


def validate_parallel(cfg: Config) -> None:
    p, e, m = cfg.parallel, cfg.moe, cfg.model
    _positive("parallel", p, ["dp", "tp", "pp", "vpp", "ep", "cp", "micro_batch_size", "ranks_per_node"])
    if p.device_num and p.device_num != p.world_size:
        raise ConfigError(f"parallel.device_num: {p.device_num} != dp*tp*pp*cp = "
                          f"{p.dp}*{p.tp}*{p.pp}*{p.cp} = {p.world_size}")
    if e.enabled:
        # the expert grid (EP width x expert TP x expert DP = dp*cp*tp): config/expert_grid.py
        problem = expert_grid_problem(p.dp, p.cp, p.tp, p.ep, p.etp, p.tp_extend_ep)
        if problem and not problem.startswith("parallel.ep:"):
            raise ConfigError(problem)             # etp itself (type, contradiction with tp_extend_ep)
        width = expert_sizes(p.tp, p.ep, p.etp, p.tp_extend_ep)[0]
        if e.num_experts % width:
            what = "tp*ep" if p.tp_extend_ep else "ep"
            raise ConfigError(f"parallel.ep: moe.num_experts={e.num_experts} is not divisible by {what}={width}")
        if problem:
            raise ConfigError(problem)
    elif p.ep != 1:
        raise ConfigError(f"parallel.ep: {p.ep} > 1 but the model has no experts (moe.num_experts=0)")
    if m.num_heads % p.tp:
        raise ConfigError(f"parallel.tp: model.num_heads={m.num_heads} is not divisible by tp={p.tp}")
    stages = p.pp * p.vpp
    if p.vpp > 1 and p.pp == 1:
        raise ConfigError("parallel.vpp: virtual pipeline stages need parallel.pp > 1")
    if m.num_layers + m.mtp_depth < stages:
        raise ConfigError(f"parallel.pp: {m.num_layers}+{m.mtp_depth} layers (with MTP) cannot fill "
                          f"pp*vpp={stages} virtual stages")
    t = cfg.train
    per_step = p.micro_batch_size * p.dp
    if t.global_batch_size % per_step:
        raise ConfigError(f"train.global_batch_size: {t.global_batch_size} is not divisible by "
                          f"parallel.micro_batch_size*dp = {per_step}")
    n_micro = t.global_batch_size // per_step
    if p.pp > 1 and n_micro < p.pp:
        raise ConfigError(f"train.global_batch_size: {n_micro} micro-batches per step < pp={p.pp} "
                          f"(1F1B needs at least pp micro-batches)")
    if p.cp > 1 and t.seq_length % (2 * p.cp):
        raise ConfigError(f"parallel.cp: train.seq_length={t.seq_length} is not divisible by 2*cp={2 * p.cp}")


def validate_train(cfg: Config) -> None:
    t = cfg.train
    _positive("train", t, ["steps", "seq_length", "global_batch_size", "lr", "log_interval",
                           "eval_interval", "save_interval", "keep_last", "max_skipped_steps",
                           "loss_spike_window"])
    _positive("train", t, ["adam_eps"])                 # eps = 0 divides 0 by 0 for a parameter without gradient
    _non_negative("train", t, ["min_lr", "warmup_steps", "weight_decay", "grad_clip", "eval_batches",
                               "sample_tokens", "peak_flops", "loss_spike_factor"])
    if 0 < t.loss_spike_factor <= 1:
        raise ConfigError(f"train.loss_spike_factor: must be 0 (off) or > 1 (a multiple of the running median "
                          f"loss), got {t.loss_spike_factor}")
    if not 0 <= t.seed < 2 ** 32:
        raise ConfigError(f"train.seed: must be in [0, 2**32) (a numpy seed), got {t.seed}")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr: {t.min_lr} > train.lr={t.lr}")
    if not 0.0 <= t.decay_fraction <= 1.0:
        raise ConfigError(f"train.decay_fraction: must be in [0, 1], got {t.decay_fraction}")
    for n in ("adam_beta1", "adam_beta2"):
        v = getattr(t, n)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"train.{n}: must be in [0, 1), got {v}")
    if t.phases:
        total = sum(ph.steps for ph in t.phases)
        if total != t.steps:
            raise ConfigError(f"train.steps: {t.steps} != sum of train.phases steps {total}")
        for i, ph in enumerate(t.phases):
            _positive(f"train.phases[{i}]", ph, ["steps", "lr"])
            if ph.min_lr > ph.lr:
                raise ConfigError(f"train.phases[{i}].min_lr: {ph.min_lr} > lr={ph.lr}")
            if ph.warmup_steps > ph.steps:
                raise ConfigError(f"train.phases[{i}].warmup_steps: {ph.warmup_steps} > steps={ph.steps}")
            for name, w in ph.weights.items():
                if w < 0:
                    raise ConfigError(f"train.phases[{i}].weights.{name}: must be >= 0, got {w}")
    _non_negative("train", t, ["memory_budget_gb"])
    rc = resolve_recompute(cfg, t.recompute, "train.recompute")
    if rc == AUTO and t.memory_budget_gb <= 0:
        raise ConfigError("train.memory_budget_gb: train.recompute=auto needs a memory budget > 0 (GB)")
    validate_stage_recompute(cfg)
    validate_swap(cfg)
    if t.seq_length > cfg.model.max_position_embeddings:
        raise ConfigError(f"train.seq_length: {t.seq_length} > model.max_position_embeddings="
                          f"{cfg.model.max_position_embeddings}")


def validate_data(cfg: Config) -> None:
    d = cfg.data
    if d.source == "mindrecord" and not d.path:
        raise ConfigError("data.path: required when data.source is 'mindrecord'")
    if not 0.0 <= d.valid_fraction < 1.0:
        raise ConfigError(f"data.valid_fraction: must be in [0, 1), got {d.valid_fraction}")
    _non_negative("data", d, ["max_docs"])
    for name, w in d.weights.items():
        if w < 0:
            raise ConfigError(f"data.weights.{name}: must be >= 0, got {w}")
    for key in ("reset_attention_mask", "reset_position_ids"):
        if not getattr(cfg.train, key):
            continue
        if cfg.stage.name not in ("pretrain", "long_context"):
            raise ConfigError(f"train.{key}: applies to the pretrain and long_context stages, not "
                              f"stage.name={cfg.stage.name!r} (one sample per row there)")
        if d.source != "mindrecord":
            raise ConfigError(f"train.{key}: needs document boundaries of packed rows (data.source=mindrecord), "
                              f"but data.source is {d.source!r}")


def validate_sim(cfg: Config) -> None:
    """Simulator inputs (``tools/simulate.py`` runs only these and the stage split, not the training checks)."""
    s = cfg.sim
    _non_negative("sim", s, ["devices"])
    _positive("sim", s, ["tp_overlap_chunks", "unfused_traffic_factor"])
    for n in ("recompute_fraction", "swap_activations"):
        if not 0.0 <= getattr(s, n) <= 1.0:
            raise ConfigError(f"sim.{n}: must be in [0, 1], got {getattr(s, n)}")
    resolve_recompute(cfg, s.recompute, "sim.recompute")               # the same names and errors as training
    if s.expert_imbalance < 1.0:
        raise ConfigError(f"sim.expert_imbalance: the busiest device gets >= the mean load, so must be >= 1, "
                          f"got {s.expert_imbalance}")


def validate_config(cfg: Config) -> Config:
    """Run every check; returns cfg so it can be chained."""
    validate_model(cfg)
    validate_moe(cfg)
    validate_parallel(cfg)
    validate_sim(cfg)
    validate_train(cfg)
    validate_data(cfg)
    return cfg


def _check_router_groups(e) -> None:
    """moe.router_num_groups / router_group_topk: equal groups, enough experts in the allowed groups."""
    g, tg = e.router_num_groups, e.router_group_topk
    if g < 1 or e.num_experts % g:
        raise ConfigError(f"moe.router_num_groups: {g} must be >= 1 and divide moe.num_experts={e.num_experts}")
    if not 0 <= tg <= g:
        raise ConfigError(f"moe.router_group_topk: {tg} must be in [0, moe.router_num_groups={g}] (0 = all groups)")
    if e.group_limited and (e.num_experts // g < 2 or e.top_k > tg * (e.num_experts // g)):
        raise ConfigError(f"moe.router_group_topk: {tg} groups of {e.num_experts // g} experts cannot hold "
                          f"moe.top_k={e.top_k} choices (groups are ranked by their two best scores: >= 2 "
                          f"experts per group)")
