#!/usr/bin/env python
"""Validate the simulator against published runs and print the markdown tables of docs/simulator.md.

Cases (recipes in yaml/sim/, every assumption written in the recipe header):
  1. Pangu Ultra MoE 718B on 6,144 Ascend 910B, published layout: final MFU / tokens/s vs 30.0% / 1.46M, the
     18.9% baseline, an ablation of each optimisation, and a sensitivity to the unknown global batch.
  2. Pangu Ultra MoE shape search at a 718B budget: rank of the paper's shape (61 layers, hidden 7680, 256 experts).
  3. Pangu Ultra 135B dense on 8,192 910B: baseline (43%) and optimised (> 52%) MFU.
  4. DeepSeek-V3 671B on 2,048 H800: GPU-hours per trillion tokens vs 180K.

  python tools/validate_sim_published.py [--skip-search] [--out docs/simulator_validation.md]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pangu_ms.config import load_config  # noqa: E402
from pangu_ms.sim.estimate import estimate  # noqa: E402
from pangu_ms.sim.hardware import load_hardware  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
R718 = os.path.join(ROOT, "yaml/sim/pangu_ultra_moe_718b_6k.yaml")
R135 = os.path.join(ROOT, "yaml/sim/pangu_ultra_135b_dense.yaml")
RDSV3 = os.path.join(ROOT, "yaml/sim/deepseek_v3_671b.yaml")

# cumulative ablation of the paper's optimisations (sec. 3.2); MC2 fused TP comm is on throughout
ABLATION = [
    ("baseline: flat all-to-all, no EP overlap, imbalance 1.3, full recompute",
     ["parallel.hierarchical_alltoall=false", "sim.ep_overlap=false", "sim.expert_imbalance=1.3",
      "sim.recompute=full"]),
    ("+ hierarchical EP all-to-all", ["sim.ep_overlap=false", "sim.expert_imbalance=1.3", "sim.recompute=full"]),
    ("+ adaptive pipe overlap (cross-micro-batch EP overlap)", ["sim.expert_imbalance=1.3", "sim.recompute=full"]),
    ("+ memory optimisation (cheapest recompute that fits instead of full)",
     ["sim.expert_imbalance=1.3", "sim.recompute=auto"]),
    ("+ dynamic expert placement (imbalance 1.3 -> 1.1) = final", ["sim.recompute=auto"]),
]


def est(path, overrides=(), devices=None):
    return estimate(load_config(path, list(overrides), validate=False), None, devices)


def pct(x):
    return f"{100 * x:.1f}%"


def case_718b(lines):
    lines.append("### Pangu Ultra MoE 718B, 6,144 Ascend 910B, TP8 PP16 VPP2 EP4 MBS2 (paper: 30.0% MFU, "
                 "1.46M tokens/s; baseline 18.9%)\n")
    lines.append("| step | MFU | tokens/s | step s | memory GiB | fits | recompute | bubble s | EP exposed s |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    res = []
    for name, ov in ABLATION:
        e = est(R718, ov)
        res.append(e)
        lines.append(f"| {name} | {pct(e.mfu)} | {e.tokens_per_s / 1e6:.3f}M | {e.step_time_s:.2f} | "
                     f"{e.memory_per_device_gb:.1f} | {e.fits} | {e.layout['recompute']} | "
                     f"{e.breakdown_s['pipeline_bubble']:.2f} | {e.breakdown_s['ep_alltoall_exposed']:.2f} |")
    base, final = res[0], res[-1]
    lines.append("")
    lines.append(f"Final: predicted MFU {pct(final.mfu)} vs 30.0% reported -> error "
                 f"{100 * (final.mfu - 0.30):+.1f} points; tokens/s {final.tokens_per_s / 1e6:.3f}M vs 1.46M -> "
                 f"{100 * (final.tokens_per_s / 1.46e6 - 1):+.1f}%. Baseline: {pct(base.mfu)} vs 18.9% "
                 f"(paper's baseline was on ~4K NPUs with an unknown configuration) -> "
                 f"{100 * (base.mfu - 0.189):+.1f} points. MFU against the {final.peak_flops_per_device / 1e12:.0f} "
                 f"TFLOPS {final.peak_dtype} peak.\n")
    lines.append("Sensitivity of the final prediction to the unpublished global batch (sequences of 4096):\n")
    lines.append("| global batch | micro-batches | MFU | tokens/s | memory GiB | recompute chosen |")
    lines.append("|---|---|---|---|---|---|")
    for gbs in (1536, 3072, 4608, 6144):
        e = est(R718, [f"train.global_batch_size={gbs}", "sim.recompute=auto"])
        lines.append(f"| {gbs} | {e.layout['micro_batches']} | {pct(e.mfu)} | {e.tokens_per_s / 1e6:.3f}M | "
                     f"{e.memory_per_device_gb:.1f} | {e.layout['recompute']} |")
    lines.append("")
    return final


def case_search(lines, workers):
    """Shape search at a 718B budget (+-2 %, expert width in multiples of 64: with 128 the width step moves the
    total by up to 6.6 % at hidden 7680 and some (layers, hidden) pairs, e.g. 66 x 7680, fell outside +-2 %).

    Primary: 256 routed experts, top-8 fixed (the paper picked the expert count from its MoE-block quality study,
    not from throughput) and layers x hidden searched. Secondary: the expert count free as well.
    """
    from pangu_ms.sim import search as S
    cfg = load_config(R718, ["sim.recompute=auto"], validate=False)
    hw = load_hardware("ascend_910b")
    cols = ("layers", "hidden", "experts", "expert_ffn", "total_params_b", "active_params_b", "tp", "pp", "vpp",
            "ep", "micro_batch_size", "recompute", "mfu", "tokens_per_s", "memory_gb")
    ranks = {}
    for label, experts in (("256 experts fixed", [256]), ("experts free", [128, 256, 512])):
        sp = S.SearchSpace(layers=[54, 58, 61, 64, 66, 70], hidden=[6144, 7168, 7680, 8192], experts=experts,
                           top_k=[8], tp=[4, 8], pp=[8, 16], vpp=[1, 2], ep=[2, 4, 8], micro_batch=[1, 2],
                           tp_extend_ep=[True], recompute=["auto"], budget=718e9, tolerance=0.02, ffn_multiple=64)
        res = S.run_search(cfg, sp, hw, 6144, workers=workers, progress=False)
        shapes = S.shape_ranking(res["rows"])
        rank = next((i for i, r in enumerate(shapes, 1)
                     if (r["layers"], r["hidden"], r["experts"]) == (61, 7680, 256)), None)
        ranks[label] = rank
        lines.append(f"### Shape search at a 718B budget, {label} (6,144 910B; {len(shapes)} feasible shapes, "
                     f"{res['evaluated']} candidates in {res['seconds']:.1f} s = {res['per_minute']:.0f}/min)\n")
        lines.append(f"Paper shape (61 layers, hidden 7680, 256 experts, top-8, expert 2048) ranks **{rank}** of "
                     f"{len(shapes)} shapes (best feasible layout each, by MFU).\n")
        lines.append(S.markdown_table(shapes, 8, cols))
        lines.append("")
        if label == "256 experts fixed":
            by = {(r["layers"], r["hidden"]): r for r in shapes}
            a, b = by.get((61, 7680)), by.get((66, 7680))
            if a and b:
                lines.append(f"61 vs 66 layers at hidden 7680: {a['tokens_per_s'] / b['tokens_per_s'] - 1:+.0%} "
                             f"tokens/s (paper: the 61-layer model 7 has ~15% higher throughput than a 66-layer "
                             f"alternative).\n")
    return ranks


def case_135b(lines):
    lines.append("### Pangu Ultra 135B dense, 8,192 Ascend 910B, TP8 PP8 VPP6 DP128 (paper: 43% baseline, "
                 "> 52% optimised)\n")
    lines.append("| case | switches | MFU | reported | error (points) | memory GiB |")
    lines.append("|---|---|---|---|---|---|")
    out = []
    for name, ov, rep in (("baseline", ["sim.tp_comm_overlap=false", "sim.fused_kernels=false"], 0.43),
                          ("optimised", [], 0.52)):
        e = est(R135, ov)
        out.append(e)
        lines.append(f"| {name} | {' '.join(ov) or 'MC2 + fused kernels'} | {pct(e.mfu)} | "
                     f"{'> ' if name == 'optimised' else ''}{pct(rep)} | {100 * (e.mfu - rep):+.1f} | "
                     f"{e.memory_per_device_gb:.1f} |")
    lines.append("")
    return out


def case_dsv3(lines):
    e = est(RDSV3)
    gh = 1e12 / e.tokens_per_s_per_device / 3600
    lines.append("### DeepSeek-V3 671B, 2,048 H800, PP16 (DualPipe) EP64 DP128, FP8 (paper: 180K GPU-hours per "
                 "trillion tokens)\n")
    lines.append("| predicted tokens/s/GPU | GPU-hours / 1T tokens | reported | error | MFU (bf16 peak) | "
                 "memory GiB | fits |")
    lines.append("|---|---|---|---|---|---|---|")
    lines.append(f"| {e.tokens_per_s_per_device:.0f} | {gh / 1e3:.0f}K | 180K | {100 * (gh / 180e3 - 1):+.1f}% | "
                 f"{pct(e.mfu)} | {e.memory_per_device_gb:.1f} | {e.fits} |")
    lines.append("")
    return e, gh


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    lines = []
    case_718b(lines)
    if not args.skip_search:
        case_search(lines, args.workers)
    case_135b(lines)
    case_dsv3(lines)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
