"""``build_plan``: the plan of a config (layout, tensors, ops, optimizer sharding, context, notes)."""
from __future__ import annotations

from math import prod

from ...config import ConfigError
from ..dims import ParallelDims, layout_notes, layout_problems
from ..stages import assign_from_config
from .memory import memory_plan
from .ops import plan_ops
from .optimizer_shard import _apply_opt_shard, _choose_shard_size, _heaviest_counts
from .specs import BYTES_PER_OPT_PARAM, ShardPlan, TensorSpec
from .tensors import param_plans


def build_plan(cfg, shard_size: int | None = None, threshold_kb: int = 64, scheduler: str = "1f1b",
               strategy_file: str = "") -> ShardPlan:
    """Generate the plan. Raises :class:`ConfigError` for an invalid layout (first problem)."""
    problems = layout_problems(cfg)
    if problems:
        raise ConfigError(problems[0])
    d = ParallelDims.from_config(cfg)
    p, t = cfg.parallel, cfg.train
    expert_tp = d.etp > 1           # routed experts' FFN dim split over the expert-TP axis
    axis_sizes = {"dp": p.dp, "cp": p.cp, "tp": p.tp, "edp": d.edp, "ep": d.ep_width, "etp": d.etp}
    tokens = p.micro_batch_size * p.dp * t.seq_length
    stages = assign_from_config(cfg)
    params = param_plans(cfg, expert_tp)
    ops = plan_ops(cfg, expert_tp, tokens)
    counts = _heaviest_counts(cfg, stages, params, axis_sizes)
    counts.update({q.pattern: 1 for q in params if q.layers == "none"})
    if shard_size is None:
        shard_size = _choose_shard_size(params, axis_sizes, d.stage_size, threshold_kb, counts) \
            if p.optimizer_shard else -1
    _apply_opt_shard(params, axis_sizes, d.stage_size, shard_size, threshold_kb, p.optimizer_shard)
    n_micro = t.global_batch_size // (p.micro_batch_size * p.dp)
    plan = ShardPlan(dims=d, axis_sizes=axis_sizes, params=params, ops=ops, stages=stages, context={},
                     tokens_per_microbatch=tokens, num_micro_batches=n_micro,
                     hierarchical=p.hierarchical_alltoall)
    local = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) * counts[q.pattern] for q in params
                if q.layers != "none")
    extra = {q.pattern: prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) for q in params if q.layers == "none"}
    opt = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) // q.opt_shard * counts[q.pattern]
              for q in params if q.layers != "none")
    plan.memory = {"heaviest_stage_layer_params_per_device": local,
                   "model_level_params_per_device": extra,
                   "heaviest_stage_layer_optimizer_bytes_per_device": opt * BYTES_PER_OPT_PARAM,
                   "note": "decoder-layer parameters of the stage with the most layers, per device, "
                           "model-level tensors (embedding, heads) listed separately; optimizer bytes = "
                           f"{BYTES_PER_OPT_PARAM} B/param (fp32 param + Adam m, v) after optimizer sharding"}
    plan.context = _context(cfg, d, shard_size, threshold_kb, scheduler, strategy_file, n_micro)
    plan.context["memory"] = memory_plan(cfg)
    plan.notes = layout_notes(cfg) + _plan_notes(cfg, plan)
    return plan


def _context(cfg, d, shard_size, threshold_kb, scheduler, strategy_file, n_micro) -> dict:
    p = cfg.parallel
    common = {
        "device_num": d.world,
        "gradients_mean": False,
        "enable_alltoall": True,
        "dataset_strategy": ((p.dp, p.cp), (p.dp, p.cp)),   # input_ids, labels [B, S]
        "pipeline_stages": p.pp,
    }
    if p.pp > 1:
        common["pipeline_config"] = {"pipeline_interleave": p.vpp > 1, "pipeline_scheduler": scheduler}
    if p.optimizer_shard:
        common["enable_parallel_optimizer"] = True
        common["parallel_optimizer_config"] = {"optimizer_level": "level1",
                                               "optimizer_weight_shard_size": shard_size,
                                               "parallel_optimizer_threshold": threshold_kb}
    if strategy_file:
        common["strategy_ckpt_config"] = {"save_file": strategy_file, "only_trainable_params": False}
    semi = dict(common, parallel_mode="semi_auto_parallel")
    auto = dict(common, parallel_mode="auto_parallel", search_mode="sharding_propagation")
    return {
        "semi_auto": semi,
        "auto": auto,
        "pipeline": {"micro_size": n_micro, "vpp": p.vpp, "cell": "mindspore.parallel.nn.Pipeline"},
        "auto_parallel_api": {  # the same settings through mindspore.parallel.auto_parallel.AutoParallel
            "parallel_mode": {"semi_auto": "semi_auto", "auto": "sharding_propagation"},
            "pipeline": {"stages": p.pp, "interleave": p.vpp > 1, "scheduler": scheduler},
            "hsdp": ({"shard_size": shard_size, "threshold": threshold_kb, "optimizer_level": "level1"}
                     if p.optimizer_shard else None),
            "dataset_strategy": ((p.dp, p.cp), (p.dp, p.cp)),
        },
    }


def _plan_notes(cfg, plan) -> list:
    notes = []
    fused_split = [p.pattern for p in plan.params if p.spec.fused_halves > 1 and _fused_dim_split(p.spec, plan)]
    if fused_split:
        notes.append("fused gate/up weights split over tp need per-shard row order on Ascend "
                     "(plan.fused_shard_permutation): " + ", ".join(fused_split))
    unsharded = [p.pattern for p in plan.params if cfg.parallel.optimizer_shard and p.opt_shard == 1
                 and p.opt_note.startswith("dim0")]
    if unsharded:
        notes.append("optimizer state not sharded (dim0 indivisible): " + ", ".join(unsharded))
    return notes


def _fused_dim_split(spec: TensorSpec, plan) -> bool:
    fused_dim = 0 if len(spec.shape) == 2 else 2
    return spec.factors(plan.axis_sizes)[fused_dim] > 1
