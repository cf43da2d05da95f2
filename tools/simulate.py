#!/usr/bin/env python
"""pangu_ms performance simulator: estimate a layout, search shapes x layouts, calibrate this machine.

  estimate   step time, tokens/s, MFU (with the peak it is quoted against), memory per device and a breakdown
             for one recipe + layout on N devices of a hardware profile.
  search     co-design search over model shapes (layers, hidden, experts, top-k; expert width solved for a
             parameter budget) x parallel layouts; ranked markdown + CSV table, Pareto and breakdown PNGs.
  calibrate  measure MindSpore GEMM / attention / element-wise throughput on this CPU and write a profile YAML;
             with --from-runs, fit a profile's efficiencies to measured runs (run directories or a CSV of step
             times) and report the errors before, after and leave-one-out (pangu_ms/sim/fit_runs.py).

Examples:
  python tools/simulate.py estimate --config yaml/pangu_ultra_moe_718b.yaml --hardware ascend_910b \\
      --devices 6144 --set parallel.tp=8 parallel.pp=16 parallel.vpp=2 parallel.ep=4 \\
      parallel.micro_batch_size=2 parallel.tp_extend_ep=true --json
  python tools/simulate.py search --config yaml/sim/pangu_ultra_moe_718b_6k.yaml --budget 718e9 \\
      --layers 54 58 61 64 66 --hidden 6144 7168 7680 8192 --experts 128 256 --out output/sim_search
  python tools/simulate.py estimate --config yaml/sim/deepseek_v3_671b.yaml --emit-recipe out.yaml
  python tools/show_plan.py --config out.yaml        # prints the same pipeline split
  python tools/simulate.py calibrate --out yaml/hardware/cpu_local.yaml
  python tools/simulate.py calibrate --from-runs yaml/sim/validation/published_runs_h100.csv --hardware h100 \\
      --out output/h100_fitted.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import sys


from pangu_ms.cli import run_cli  # noqa: E402
from pangu_ms.config import ConfigError, load_config  # noqa: E402
from pangu_ms.config.validate import validate_sim  # noqa: E402


def _load(args):
    overrides = []
    for s in args.set or []:
        overrides.extend(s if isinstance(s, list) else [s])
    if args.hardware:
        overrides.append(f"sim.hardware={args.hardware}")
    for name in ("devices", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:            # 0 used to fall back silently to sim.devices
            raise ConfigError(f"--{name}: must be >= 1, got {value}")
    if getattr(args, "imbalance_from", None):
        overrides.append(f"sim.expert_imbalance={imbalance_from(args.imbalance_from, args.imbalance_ep)}")
    cfg = load_config(args.config, overrides, validate=False)
    validate_sim(cfg)
    return cfg


def imbalance_from(run_dir: str, ep_width=None) -> float:
    """``sim.expert_imbalance`` measured in a training run (``--imbalance-from``): the mean per-EP-rank max/mean
    load of its logged steps and MoE layers, under the placement each step ran with (or, with ``--imbalance-ep W``,
    its experts' loads spread over W ranks in the static contiguous placement)."""
    from pangu_ms.data.errors import DataError
    from pangu_ms.moe.load_stats import measured_imbalance, read_expert_load
    try:
        value = measured_imbalance(read_expert_load(run_dir), ep_width)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"--imbalance-from: {e}") from None
    print(f"sim.expert_imbalance = {value:.4f} measured in {run_dir}", file=sys.stderr)
    return value


def cmd_estimate(args) -> int:
    from pangu_ms.sim.estimate import estimate
    from pangu_ms.sim.hardware import load_hardware

    cfg = _load(args)
    hw = load_hardware(cfg.sim.hardware)
    est = estimate(cfg, hw, args.devices or cfg.sim.devices or None)
    d = est.as_dict()
    if args.emit_recipe:
        _emit(est, args)
    if args.json:
        print(json.dumps(d, indent=2 if args.pretty else None))
        return 0
    print(f"hardware {hw.name}, {d['devices']} devices, layout {d['layout']}")
    print(f"step time {d['step_time_s']:.3f} s, {d['tokens_per_s']:.4g} tokens/s "
          f"({d['tokens_per_s_per_device']:.1f} per device)")
    print(f"MFU {100 * d['mfu']:.2f}% of {d['peak_flops_per_device'] / 1e12:.1f} TFLOPS ({d['peak_dtype']} dense "
          f"peak); model FLOPs/token {d['model_flops_per_token']:.4g} ({d['details']['flop_convention']})")
    print("MFU by peak: " + ", ".join(f"{100 * v:.2f}% ({k.replace('_', ' ')})" for k, v in d["mfu_by_peak"].items()))
    print(f"memory {d['memory_per_device_gb']:.2f} GiB of {d['hbm_usable_gb']:.1f} usable -> "
          f"{'fits' if d['fits'] else 'OOM'}")
    print("breakdown (s): " + ", ".join(f"{k} {v:.3f}" for k, v in d["breakdown"].items()))
    mem = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in d["memory_breakdown_gb"].items()
           if not isinstance(v, dict)}
    print(f"memory (GiB): {mem}")
    print(_split_line(d["details"]))
    return 0


def _split_line(details: dict) -> str:
    from pangu_ms.parallel.split import PipelineSplit
    return PipelineSplit(tuple(details["layers_per_virtual_stage"]), details["stage_split"]).describe()


def _emit(est, args) -> None:
    """Write the estimate's training recipe (layout + explicit split) to --emit-recipe."""
    from pangu_ms.sim.recipe import write_recipe
    write_recipe(est, args.emit_recipe, source=args.config)
    print(f"wrote {args.emit_recipe}: {_split_line(est.details)}", file=sys.stderr)


def _etp_value(x: str):
    if x == "auto":
        return None
    try:
        v = int(x)
    except ValueError:
        v = 0
    if v <= 0:
        raise ConfigError(f"search --etp: '{x}' is neither 'auto' nor an integer > 0")
    return v


def _space(args):
    from pangu_ms.sim.search import SearchSpace

    sp = SearchSpace(tp=args.tp, pp=args.pp, vpp=args.vpp, ep=args.ep, micro_batch=args.mbs,
                     recompute=args.recompute, tp_extend_ep=[x == "true" for x in args.extend],
                     etp=[_etp_value(x) for x in args.etp],
                     budget=args.budget or 0.0, tolerance=args.tolerance,
                     active_budget=args.active_budget or 0.0, active_tolerance=args.active_tolerance,
                     rank_by=args.rank_by)
    if args.ffn_multiple:
        sp.ffn_multiple = args.ffn_multiple
    if args.layers:
        sp.layers = args.layers
    if args.hidden:
        sp.hidden = args.hidden
    if args.experts:
        sp.experts = args.experts
    if args.top_k:
        sp.top_k = args.top_k
    return sp


def cmd_search(args) -> int:
    from pangu_ms.sim import search as S
    from pangu_ms.sim.hardware import load_hardware
    from pangu_ms.sim.residuals import RESIDUALS_PATH, mark_ties, uncertainty_band

    cfg = _load(args)
    hw = load_hardware(cfg.sim.hardware)
    devices = args.devices or cfg.sim.devices
    if not devices:
        raise ConfigError("search: --devices (or sim.devices) is required")
    res = S.run_search(cfg, _space(args), hw, devices, workers=args.workers, progress=not args.json,
                       limit=args.limit)
    rows = res["rows"]
    ranked = [r for r in rows if r["fits"]]
    if args.emit_recipe:
        if not ranked:
            raise ConfigError("search --emit-recipe: no candidate fits the memory budget")
        _emit(S.estimate_row(cfg, _space(args), hw, devices, ranked[0]), args)
    shapes = S.shape_ranking(rows, args.rank_by)
    band, n_cases = uncertainty_band()
    mark_ties(ranked, args.rank_by, band)
    mark_ties(shapes, args.rank_by, band)
    band_line = (f"uncertainty band +-{100 * band:.1f}% (mean |error| of the simulator on {n_cases} published runs, "
                 f"{os.path.relpath(RESIDUALS_PATH)}); tie = {args.rank_by} within the band of the best: "
                 f"{sum(r['tie'] for r in ranked)} candidates, {sum(r['tie'] for r in shapes)} shapes")
    summary = {"uncertainty_band": band, "band_cases": n_cases, "ties": sum(r["tie"] for r in ranked),
               "shape_ties": sum(r["tie"] for r in shapes),"evaluated": res["evaluated"], "invalid_layouts": res["invalid"], "feasible": len(ranked),
               "oom": len(rows) - len(ranked), "seconds": res["seconds"],
               "candidates_per_minute": res["per_minute"], "peak_flops_per_device": hw.mfu_peak,
               "peak_dtype": hw.mfu_peak_dtype, "shapes": len(res["shapes"])}
    if args.mark_shape:
        key = tuple(int(x) for x in args.mark_shape.split(","))
        rank = next((i for i, r in enumerate(shapes, 1) if tuple(r[k] for k in S.SHAPE_KEYS[:len(key)]) == key),
                    None)
        summary["marked_shape"] = {"shape": args.mark_shape, "rank": rank, "of": len(shapes)}
    if args.bench:
        print(f"{res['evaluated']} candidates in {res['seconds']:.2f} s = {res['per_minute']:.0f} candidates/min "
              f"({args.workers} workers)")
        return 0
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        S.write_csv(rows, os.path.join(args.out, "search.csv"))
        with open(os.path.join(args.out, "search.md"), "w", encoding="utf-8") as f:
            f.write(f"# Search ({hw.name}, {devices} devices; MFU vs {hw.mfu_peak / 1e12:.0f} TFLOPS "
                    f"{hw.mfu_peak_dtype} peak)\n\n## Top candidates\n\n{S.markdown_table(ranked, args.top)}\n\n"
                    f"{band_line}\n\n## Shapes (best layout each)\n\n{S.markdown_table(shapes, args.top)}\n\n"
                    f"```\n{json.dumps(summary, indent=1)}\n```\n")
        from pangu_ms.sim.plots import plot_breakdown, plot_pareto
        plot_pareto(rows, os.path.join(args.out, "pareto.png"), hw.usable_hbm_bytes / 1024 ** 3,
                    f"(peak {hw.mfu_peak / 1e12:.0f} TFLOPS {hw.mfu_peak_dtype})")
        plot_breakdown(ranked, os.path.join(args.out, "breakdown.png"))
        summary["out"] = args.out
    if args.json:
        print(json.dumps({"summary": summary, "top": ranked[:args.top], "shapes": shapes[:args.top]}))
    else:
        print(S.markdown_table(ranked, args.top))
        print("\n" + band_line)
        print("\nShapes (best layout each):")
        print(S.markdown_table(shapes, args.top))
        print(json.dumps(summary, indent=1))
    return 0


def cmd_calibrate(args) -> int:
    if args.from_runs:
        return _calibrate_from_runs(args)
    from pangu_ms.sim.calibrate import calibrate
    from pangu_ms.train.probe import compiled_train_step

    args.out = args.out or "yaml/hardware/cpu_local.yaml"
    res = calibrate(args.out, quick=args.quick, name=args.name or "cpu_local", passes=args.passes,
                    model_probe=not args.no_model_probe, step_factory=compiled_train_step)
    p = res["profile"]
    out = {"written": args.out, "peak_flops_fp32": p["peak_flops"]["fp32"], "hbm_bandwidth": p["hbm_bandwidth"],
           "attention_efficiency": p["attention_efficiency"], "op_overhead": p["op_overhead"],
           "gemm_efficiency": p["gemm_efficiency"]}
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


def _calibrate_from_runs(args) -> int:
    from pangu_ms.sim.fit_runs import calibrate_from_runs, markdown_report

    if not args.out:
        raise ConfigError("calibrate --from-runs: --out (the fitted profile YAML to write) is required")
    overrides = [x for s in args.set or [] for x in (s if isinstance(s, list) else [s])]
    res = calibrate_from_runs(args.from_runs, args.out, args.hardware, args.fit, overrides, args.name)
    if args.json:
        print(json.dumps(res))
    else:
        print(markdown_report(res))
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simulate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--config", required=True, help="recipe YAML (the project's config schema)")
        p.add_argument("--hardware", help="profile name in yaml/hardware (ascend_910b, h100, h800, ...) or a "
                                          "profile YAML path; default: sim.hardware of the recipe")
        p.add_argument("--devices", type=int, help="cluster size N; dp = N / (tp*pp*cp). Default sim.devices")
        p.add_argument("--set", nargs="+", action="append", metavar="KEY=VALUE",
                       help="config overrides, e.g. parallel.tp=8 sim.recompute=full")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--imbalance-from", metavar="RUN_DIR",
                       help="set sim.expert_imbalance to the per-EP-rank max/mean load measured in a training run "
                            "(its expert_load.jsonl)")
        p.add_argument("--imbalance-ep", type=int, metavar="W",
                       help="with --imbalance-from: spread the run's expert loads over W ranks (static placement) "
                            "instead of using the run's own EP width and placement")
        p.add_argument("--emit-recipe", metavar="OUT.yaml",
                       help="write the training recipe of the estimate (search: of the best candidate): its "
                            "layout and parallel.layers_per_virtual_stage, runnable by tools/show_plan.py and "
                            "run/train.py")

    e = sub.add_parser("estimate", help="estimate one recipe + layout",
                       description="Estimate step time, tokens/s, MFU, memory per device (fits / OOM) and a "
                                   "time breakdown for one recipe and layout.")
    common(e)
    e.add_argument("--pretty", action="store_true", help="indent the JSON")
    e.set_defaults(fn=cmd_estimate)

    s = sub.add_parser("search", help="search model shapes x parallel layouts",
                       description="Co-design search: shapes (layers x hidden x experts x top-k, expert width "
                                   "solved for --budget) x layouts (tp x pp x vpp x ep x micro-batch x "
                                   "tp_extend_ep x recompute). OOM candidates are excluded from the ranking.")
    common(s)
    s.add_argument("--budget", type=float, help="total parameters without MTP (e.g. 718e9)")
    s.add_argument("--tolerance", type=float, default=0.05, help="allowed relative budget miss (default 0.05)")
    s.add_argument("--active-budget", type=float,
                   help="target activated parameters per token (without MTP and input embedding, e.g. 39e9): "
                        "keep only shapes within --active-tolerance of it, i.e. compare at matched compute/token")
    s.add_argument("--active-tolerance", type=float,
                   help="allowed relative miss of --active-budget (default: --tolerance)")
    s.add_argument("--ffn-multiple", type=int,
                   help="expert width granularity of the budget solver (default 256; the validation uses 64)")
    s.add_argument("--rank-by", default="mfu", choices=["mfu", "tokens_per_s"],
                   help="ranking objective for candidates and shapes (default mfu)")
    s.add_argument("--layers", type=int, nargs="+")
    s.add_argument("--hidden", type=int, nargs="+")
    s.add_argument("--experts", type=int, nargs="+")
    s.add_argument("--top-k", type=int, nargs="+")
    s.add_argument("--tp", type=int, nargs="+", default=[1, 2, 4, 8])
    s.add_argument("--pp", type=int, nargs="+", default=[4, 8, 16])
    s.add_argument("--vpp", type=int, nargs="+", default=[1, 2])
    s.add_argument("--ep", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    s.add_argument("--mbs", type=int, nargs="+", default=[1, 2])
    s.add_argument("--recompute", nargs="+", default=["none", "moe_fine", "full"],
                   choices=["none", "selective", "moe_fine", "full", "auto"])
    s.add_argument("--extend", nargs="+", default=["true", "false"], choices=["true", "false"],
                   help="tp_extend_ep values to try")
    s.add_argument("--etp", nargs="+", default=["auto"],
                   help="parallel.etp values to try (expert tensor-parallel size; 'auto' = derived from tp and "
                        "tp_extend_ep; with an integer, --ep is the EP width)")
    s.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    s.add_argument("--limit", type=int, default=0, help="evaluate only the first N candidates")
    s.add_argument("--top", type=int, default=20, help="rows in the printed tables")
    s.add_argument("--out", help="directory for search.md, search.csv, pareto.png, breakdown.png")
    s.add_argument("--mark-shape", help="report the rank of this shape: layers,hidden,experts[,top_k,ffn]")
    s.add_argument("--bench", action="store_true", help="only print candidates/minute")
    s.set_defaults(fn=cmd_search)

    c = sub.add_parser("calibrate", help="measure this CPU with MindSpore and write a hardware profile, or fit a "
                                         "profile to measured runs (--from-runs)",
                       description="Measure MindSpore fp32 GEMM, attention-bmm and element-wise throughput on "
                                   "this machine and write a hardware profile YAML usable with --hardware. With "
                                   "--from-runs: fit a few efficiency parameters of a profile (--fit) to the step "
                                   "times of measured runs by least squares on log step time, print the error of "
                                   "each run before, after and leave-one-out, and write the fitted profile.")
    c.add_argument("--out", help="profile YAML to write (default yaml/hardware/cpu_local.yaml; required with "
                                 "--from-runs)")
    c.add_argument("--name", help="profile name (default cpu_local; with --from-runs <profile>_fitted)")
    c.add_argument("--from-runs", nargs="+", metavar="RUN_DIR_OR_CSV",
                   help="training run directories (config.yaml + metrics.jsonl) and/or CSV files of measured step "
                        "times (columns: recipe, name, devices, profile, overrides, source, KEY.PATH overrides, and "
                        "one of step_time_s, tokens_per_s, tokens_per_s_per_device, mfu)")
    c.add_argument("--hardware", help="with --from-runs: the profile to fit (name or YAML path); default the one "
                                      "profile the runs name")
    c.add_argument("--fit", nargs="+", default=["compute", "comm", "op_overhead"],
                   choices=["compute", "comm", "op_overhead", "step_overhead", "comm_compute_slowdown"],
                   help="with --from-runs: parameters to fit (default compute comm op_overhead; those the runs "
                        "cannot see are held at the base value)")
    c.add_argument("--set", nargs="+", action="append", metavar="KEY=VALUE",
                   help="with --from-runs: config overrides applied to every run (e.g. sim.moe_impl=training_cpu "
                        "for CPU runs)")
    c.add_argument("--quick", action="store_true", help="shorter measurements")
    c.add_argument("--passes", type=int, default=3, help="calibration passes; the profile takes their medians")
    c.add_argument("--no-model-probe", action="store_true",
                   help="per-kernel cost from a generic autodiff stack instead of the project's own training step")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_calibrate)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
