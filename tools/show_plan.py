#!/usr/bin/env python
"""Print and validate the parallel layout and Ascend shard plan of a recipe (runs on CPU, imports no MindSpore).

    python tools/show_plan.py --config yaml/pangu_ultra_moe_718b_pretrain.yaml
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.dp=2 --set parallel.ep=2 --json
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.dp=4 --rank 3   # groups of one rank
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.dp=2 --set parallel.ep=2 --dry-run
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.pp=2 --set parallel.micro_batch_size=2 \
        --set train.recompute_layers_per_stage=[2,0] --set train.swap.optimizer_state=true --mindformers

``--dry-run`` builds the model on CPU, applies the plan in the stand-alone context (every target resolved in the
instantiated model, every strategy checked against the primitive's input shapes from one forward pass) and runs
one compiled training step with the strategies attached (pangu_ms/parallel/apply_ascend.py).

Prints the layout, a groups summary, the pipeline stage assignment, the op strategies and parameter layouts, the
set_auto_parallel_context settings (semi-auto and auto + sharding_propagation), the memory settings (per-stage
recompute, swap; Ascend only, docs/swap.md); ``--mindformers`` also prints the MindFormers 1.9 YAML sections of
the recipe (parallel_config, recompute_config, swap_config, optimizer.swap, offset). Exit status: 0 valid,
2 invalid recipe / layout / plan (every problem printed, one line each, to stderr).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys


from pangu_ms.config import ConfigError, load_config  # noqa: E402
from pangu_ms.parallel.dims import layout_problems  # noqa: E402
from pangu_ms.parallel.plan import build_plan, plan_problems, summarize  # noqa: E402
from pangu_ms.parallel.split import COST_METHODS, PipelineSplit  # noqa: E402


def _split_from_simulator(cfg):
    """``parallel.pipeline_split: time_balanced | memory_aware`` needs per-layer costs, which only the simulator
    computes: run it (sim.hardware, sim.devices) and hand the plan its split as an explicit list. Returns
    (cfg, the simulator's split label or None)."""
    if cfg.parallel.pipeline_split not in COST_METHODS:
        return cfg, None
    from pangu_ms.sim.estimate import estimate
    det = estimate(cfg).details
    par = dataclasses.replace(cfg.parallel, pipeline_split="explicit",
                              layers_per_virtual_stage=list(det["layers_per_virtual_stage"]))
    return dataclasses.replace(cfg, parallel=par), det["stage_split"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", required=True, help="recipe YAML (base: inheritance supported)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override, e.g. --set parallel.dp=2 (repeatable)")
    ap.add_argument("--world-size", type=int, default=None,
                    help="launch world size to check against dp*tp*pp*cp (default: not checked)")
    ap.add_argument("--rank", type=int, default=None, help="also print every group of this rank")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="optimizer_weight_shard_size (default: chosen to minimise optimizer memory)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--mindformers", action="store_true",
                    help="also print the MindFormers YAML sections (layout, recompute, swap) of the recipe")
    ap.add_argument("--dry-run", action="store_true",
                    help="apply the plan to the instantiated model on CPU, check it and run one training step")
    args = ap.parse_args(argv)

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = layout_problems(cfg, args.world_size)
    if problems:
        for p in problems:
            print(f"error: {args.config}: {p}", file=sys.stderr)
        return 2
    try:
        cfg, split_method = _split_from_simulator(cfg)
        plan = build_plan(cfg, shard_size=args.shard_size)
    except (ConfigError, ValueError) as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    if args.rank is not None and not 0 <= args.rank < plan.dims.world:
        raise ConfigError(f"--rank: {args.rank} is out of range [0, {plan.dims.world}) for {args.config}")
    problems = plan_problems(plan)
    if args.json:
        out = plan.as_dict()
        out["problems"] = problems
        if args.rank is not None:
            out["rank_groups"] = {k: list(v) for k, v in plan.dims.rank_groups(args.rank).items()}
        print(json.dumps(out, indent=1, default=list))
    else:
        print(summarize(plan))
        print(PipelineSplit(tuple(len(c) for c in plan.stages.chunks), split_method or plan.stages.split).describe())
        if args.rank is not None:
            d = plan.dims
            print(f"== rank {args.rank}: {d.coord(args.rank)} ==")
            for k, v in d.rank_groups(args.rank).items():
                print(f"  {k:<10} {list(v)}")
            if d.num_experts:
                ex = d.experts_of(args.rank)
                print(f"  experts    [{ex.start}, {ex.stop})")
            if plan.hierarchical and d.ep_width > 1:
                inner, outer = d.hierarchical_of(args.rank)
                print(f"  hier inner {list(inner)}  outer {list(outer)}")
    if args.mindformers and not args.json:
        from pangu_ms.integrations.mindformers_yaml import mindformers_yaml
        print("== MindFormers YAML sections ==")
        print(mindformers_yaml(cfg), end="")
    if problems:
        for p in problems:
            print(f"error: {args.config}: {p}", file=sys.stderr)
        return 2
    if args.dry_run:
        problems = dry_run(cfg, plan)
        if problems:
            for p in problems:
                print(f"error: {args.config}: dry run: {p}", file=sys.stderr)
            return 2
    print(f"OK: {args.config} validates for {plan.dims.world} devices", file=sys.stderr)
    return 0


def dry_run(cfg, plan) -> list:
    """Apply ``plan`` to the model on CPU (stand-alone), check it, run one training step; returns problems."""
    import mindspore as ms
    import numpy as np

    from pangu_ms.model.build import build_model
    from pangu_ms.model.loss import CausalLMLoss
    from pangu_ms.parallel.apply_ascend import PlanError, check_plan
    from pangu_ms.parallel.apply_swap import apply_swap
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step

    ms.set_device("CPU")
    net = CausalLMLoss(build_model(cfg), cfg.model.mtp_loss_weight)
    report = check_plan(net, plan, cfg)
    if report.problems:
        return report.problems
    print(f"dry run: {len(report.sharded)} primitives sharded, {report.checked} checked against their input "
          f"shapes, {len(report.unexecuted)} not called in this config", file=sys.stderr)
    optimizer = build_optimizer(net.trainable_params(), cfg.train)
    try:
        mem = apply_swap(net, plan.context["memory"], optimizer, dry_run=True)
    except PlanError as e:
        return [str(e)]
    print(f"dry run: memory plan resolved: {len(mem.recompute)} layers recomputed whole, {len(mem.offload)} cells "
          f"to offload ({sum(n for _, _, n in mem.offload)} primitives), {len(mem.optimizer_states)} optimizer "
          f"states to host (not applied on CPU)", file=sys.stderr)
    ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (cfg.parallel.micro_batch_size,
                                                                      cfg.train.seq_length + 1))
    step = compile_step(TrainStep(net, optimizer, cfg.train.grad_clip))
    loss = float(step(ms.Tensor(ids[:, :-1], ms.int32), ms.Tensor(ids[:, 1:], ms.int32))[0].asnumpy())
    print(f"dry run: training step ran with the strategies attached (loss {loss:.4f})", file=sys.stderr)
    return []


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
