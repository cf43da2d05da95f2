#!/usr/bin/env python
"""Print and validate the parallel layout and Ascend shard plan of a recipe (runs on CPU, imports no MindSpore).

    python tools/show_plan.py --config yaml/pangu_ultra_moe_718b_pretrain.yaml
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.dp=2 --set parallel.ep=2 --json
    python tools/show_plan.py --config yaml/tiny_cpu.yaml --set parallel.dp=4 --rank 3   # groups of one rank

Prints the layout, a groups summary, the pipeline stage assignment, the op strategies and parameter layouts, the
set_auto_parallel_context settings (semi-auto and auto + sharding_propagation). Exit status: 0 valid,
2 invalid recipe / layout / plan (every problem printed, one line each, to stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import sys


from pangu_ms.config import ConfigError, load_config  # noqa: E402
from pangu_ms.parallel.dims import layout_problems  # noqa: E402
from pangu_ms.parallel.plan import build_plan, plan_problems, summarize  # noqa: E402


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
        plan = build_plan(cfg, shard_size=args.shard_size)
    except (ConfigError, ValueError) as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    problems = plan_problems(plan)
    if args.json:
        out = plan.as_dict()
        out["problems"] = problems
        if args.rank is not None:
            out["rank_groups"] = {k: list(v) for k, v in plan.dims.rank_groups(args.rank).items()}
        print(json.dumps(out, indent=1, default=list))
    else:
        print(summarize(plan))
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
    if problems:
        for p in problems:
            print(f"error: {args.config}: {p}", file=sys.stderr)
        return 2
    print(f"OK: {args.config} validates for {plan.dims.world} devices", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
