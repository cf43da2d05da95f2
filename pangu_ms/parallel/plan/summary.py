"""Human-readable plan (tools/show_plan.py)."""
from __future__ import annotations

from ...config import ConfigError
from .memory import memory_lines
from .specs import MESHES, ShardPlan


def summarize(plan: ShardPlan) -> str:
    """Human-readable plan (used by tools/show_plan.py)."""
    d = plan.dims
    s = plan.axis_sizes
    lines = ["== layout =="]
    lines.append(f"world {d.world} = dp {d.dp} x tp {d.tp} x pp {d.pp} x cp {d.cp}; vpp {d.vpp}; stage size "
                 f"{d.stage_size}; ranks/node {d.ranks_per_node} ({d.num_nodes} nodes)")
    lines.append(f"experts: ep {d.ep}, etp {d.etp_setting}, tp_extend_ep {d.tp_extend_ep} -> EP width {d.ep_width}, "
                 f"expert-TP {d.etp}, "
                 f"expert-DP {d.edp}, {d.experts_per_rank} experts/rank")
    lines.append(f"micro-batch: {plan.tokens_per_microbatch} tokens per stage-global micro-batch, "
                 f"{plan.num_micro_batches} micro-batches per step")
    lines.append("== groups (rank 0's; count x size) ==")
    for kind in ("dp", "tp", "pp", "cp", "dp_cp", "ep", "expert_dp", "expert_tp", "embedding"):
        gs = d.groups(kind)
        g0 = next(g for g in gs if 0 in g) if any(0 in g for g in gs) else gs[0]
        lines.append(f"  {kind:<10} {len(gs)} x {len(gs[0])}  rank 0: {_short(g0)}")
    if d.ep_width > 1 and plan.hierarchical:
        try:
            inner, outer = d.hierarchical_of(0)
            lines.append(f"  hier-a2a   inner {_short(inner)}  outer {_short(outer)}")
        except ConfigError as err:
            lines.append(f"  hier-a2a   {err}")
    mem = plan.memory
    if mem:
        lines.append(f"memory (heaviest stage, per device): {mem['heaviest_stage_layer_params_per_device'] / 1e9:.3f}"
                     f" B layer params, optimizer state "
                     f"{mem['heaviest_stage_layer_optimizer_bytes_per_device'] / 2**30:.2f} GiB (without embedding/heads)")
    lines.append(f"== pipeline stages (pp {d.pp} x vpp {d.vpp}) ==")
    lines.append(plan.stages.table())
    lines.append("== op strategies (in_strategy per input; mesh dense=(dp,cp,tp) "
                 f"{tuple(s[a] for a in MESHES['dense'])}, expert=(edp,ep,etp) "
                 f"{tuple(s[a] for a in MESHES['expert'])}) ==")
    for o in plan.ops:
        seed = " [seed]" if o.seed else ""
        lines.append(f"  {o.name:<32} {o.prim:<19} {o.kind:<10} {plan.strategy(o)}{seed}")
    lines.append("== parameters (strategy | replicas | optimizer shard) ==")
    for p in plan.params:
        lines.append(f"  {p.pattern:<48} {str(p.spec.factors(s)):<12} x{p.replicas:<5} opt/{p.opt_shard}"
                     + (f"  ({p.opt_note})" if p.opt_note and p.opt_shard == 1 and 'off' not in p.opt_note else ""))
    lines.append("== set_auto_parallel_context ==")
    for mode in ("semi_auto", "auto"):
        lines.append(f"  {mode}: {plan.context[mode]}")
    lines.append(f"  pipeline: {plan.context['pipeline']}")
    if "memory" in plan.context:
        lines.append("== memory: per-stage recompute, swap ==")
        lines += memory_lines(plan.context["memory"])
    if plan.notes:
        lines.append("== notes ==")
        lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _short(ranks) -> str:
    ranks = list(ranks)
    return str(ranks) if len(ranks) <= 8 else f"[{ranks[0]}, {ranks[1]}, ..., {ranks[-1]}] ({len(ranks)})"
