#!/usr/bin/env python
"""Compare the simulator's predicted step time with the measured step of pangu_ms training, single process and
explicit data / expert parallelism under msrun.

For each case (a model shape x a layout; shapes: four sizes of the MLA + MoE model, ~0.2M to ~29M parameters, and
a dense GQA model; layouts: one process, DP2 and DP2 x EP2 on two msrun ranks of this machine) it
  1. predicts the step time with the profile of this machine calibrated in the same run (compute: the passes of
     ``tools/simulate.py calibrate``, interleaved with the single-process steps; the intra-node link: world-group
     AllReduce timings inside the msrun launch, ``pangu_ms/sim/calibrate_comm.py``), fp32, the project's CPU
     reference path (``sim.moe_impl=training_cpu``: unfused element-wise ops, full attention, the explicit
     collectives built from AllReduce / AllGather, gradient reduction after the backward);
  2. measures it: ``PanguForCausalLM`` + ``TrainStep`` (with the runtime's expert-parallel dispatcher and gradient
     reducer under msrun) compiled in graph mode, median wall time of the steps after two warm-up steps; every
     msrun case runs in one 2-rank launch, interleaved round by round;
  3. prints a markdown table with the relative error and the Spearman rank correlation of predicted vs measured
     step time, over all cases and over the layouts of each shape (does the simulator order them as the machine
     does).

  python tools/validate_sim_cpu.py [--rounds 5] [--steps 3] [--layouts "1 process" DP2 "DP2 EP2"]
                                   [--save-profile yaml/hardware/cpu_local.yaml] [--json]

The two ranks share this machine's cores: the simulator divides the profile's compute rates by the ranks on the
host (``host_shared`` in the profile, ``pangu_ms/sim/hardware.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


from pangu_ms.config import load_config  # noqa: E402
from pangu_ms.sim.estimate import estimate  # noqa: E402
from pangu_ms.sim.hardware import load_hardware  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(ROOT, "yaml", "tiny_cpu.yaml")
SIM_CPU = ["sim.precision=fp32", "sim.attention_causal_skip=false", "sim.fused_kernels=false",
           "sim.moe_impl=training_cpu", "model.compute_dtype=float32", "model.param_dtype=float32",
           "sim.dp_overlap=false",   # the explicit path reduces the gradients after the backward
           "model.backend=cpu"]      # --backend: the reference ops (unfused) the tables in docs/simulator.md used
# configs of clearly different size (total parameters from stats.py: ~0.19M, ~1.3M, ~7.5M, ~29M) and family
CONFIGS = {
    "xs (h64, 2 layers, 4 experts, batch 4 x 64)": [
        "model.hidden_size=64", "model.num_layers=2", "model.dense_ffn_hidden=128", "model.num_heads=2",
        "moe.num_experts=4", "moe.expert_ffn_hidden=32", "model.q_lora_rank=32", "model.kv_lora_rank=16",
        "train.global_batch_size=4", "parallel.micro_batch_size=4"],
    "tiny_cpu (h128, 4 layers, 8 experts, 8 x 64)": [],
    "m (h256, 4 layers, 8 experts, vocab 2048, 8 x 128)": [
        "model.hidden_size=256", "model.dense_ffn_hidden=768", "model.num_heads=8", "moe.expert_ffn_hidden=192",
        "model.vocab_size=2048", "train.seq_length=128"],
    "dense GQA (h256, 4 layers, 8/2 heads, no experts, 8 x 128)": [
        "model.hidden_size=256", "model.attention_type=gqa", "model.num_heads=8", "model.num_kv_heads=2",
        "moe.num_experts=0", "model.num_dense_layers=4", "model.dense_ffn_hidden=768", "model.vocab_size=2048",
        "train.seq_length=128"],
    "l (h512, 4 layers, 8 experts, vocab 4096, 8 x 128)": [
        "model.hidden_size=512", "model.dense_ffn_hidden=1536", "model.num_heads=8", "moe.expert_ffn_hidden=384",
        "model.q_lora_rank=128", "model.kv_lora_rank=64", "model.vocab_size=4096", "train.seq_length=128"],
}


#: layout name -> (msrun ranks, overrides); the global batch stays the config's, split over the DP ranks
LAYOUTS = {
    "1 process": (1, []),
    "DP2": (2, ["parallel.dp=2", "parallel.ep=1"]),
    "DP2 EP2": (2, ["parallel.dp=2", "parallel.ep=2"]),
}


def case_overrides(shape: str, layout: str) -> list:
    """Overrides of one case: the shape's, the CPU simulator settings, the layout's and one micro-batch per
    rank (the measured step runs the rank's whole share of the global batch as one micro-batch)."""
    ranks, lay = LAYOUTS[layout]
    base = load_config(TINY, CONFIGS[shape] + SIM_CPU)
    return CONFIGS[shape] + SIM_CPU + lay + [f"parallel.micro_batch_size={base.train.global_batch_size // ranks}"]


def cases(layouts) -> list:
    """(shape, layout) pairs; expert parallelism only for shapes with experts."""
    out = []
    for shape in CONFIGS:
        moe = load_config(TINY, CONFIGS[shape]).moe.enabled
        out += [(shape, lay) for lay in layouts if moe or "EP" not in lay]
    return out


def predict(shape: str, layout: str, hardware):
    return estimate(load_config(TINY, case_overrides(shape, layout)), hardware, LAYOUTS[layout][0])


def in_run_profile(prof: dict, link: dict | None, world: int):
    """The profile of this run: the single-process calibration ``prof`` and, when msrun cases ran, the fitted
    intra-node link with ``world`` ranks on this host sharing its cores (``host_shared``: each rank gets 1/world
    of the compute rates, ``HardwareProfile.per_rank``)."""
    from pangu_ms.sim.hardware import profile_from_dict
    prof = dict(prof)
    if link is not None:
        prof.update(intra_node=link, devices_per_node=world, host_shared=True)
    return profile_from_dict(prof, "cpu_local")


def build_step(shape: str, layout: str, rank_world: tuple | None = None):
    """Compiled graph-mode TrainStep of the project's model and a fixed batch; returns a callable step.
    ``rank_world``: (rank, world) of an msrun job whose collectives are initialised (the explicit path)."""
    from pangu_ms.train.probe import compiled_train_step   # lazy: imports MindSpore and the model
    cfg = load_config(TINY, case_overrides(shape, layout))
    runtime = None
    if rank_world is not None:
        from pangu_ms.parallel.runtime import distributed_runtime
        runtime = distributed_runtime(cfg, *rank_world)
    return compiled_train_step(cfg, runtime)


def measure_single(todo, rounds: int, steps: int, quick_cal: bool):
    """Interleaved: each round runs one calibration pass, then ``steps`` steps of every single-process case. The
    machine is shared, so calibration and training see the same load; the profile takes the median of the
    passes and each case the median of its steps."""
    import mindspore as ms
    from pangu_ms.sim.calibrate import build_profile, combine, measure as cal_measure
    from pangu_ms.train.probe import compiled_train_step

    ms.set_recursion_limit(10000)
    runs = {}
    for c in todo:
        runs[c] = build_step(*c)
        runs[c]()                                # compile + first step
        runs[c]()
    times = {c: [] for c in todo}
    passes = []
    for r in range(rounds):
        passes.append(cal_measure(quick=quick_cal, step_factory=compiled_train_step))
        for c in todo:
            for _ in range(steps):
                times[c].append(runs[c]())
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{statistics.median(v):.3f}s" for v in times.values())
              + f"; op_overhead {passes[-1]['op_overhead'] * 1e6:.1f} us", file=sys.stderr, flush=True)
    meas = combine(passes)
    return build_profile(meas), {c: statistics.median(v) for c, v in times.items()}, meas


def worker(todo, rounds: int, steps: int) -> None:
    """Under msrun (every rank runs this): the cases' steps and the AllReduce probe, interleaved by round; rank 0
    prints ``RESULT {json}`` (per case the median step, per size the median AllReduce seconds)."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    from pangu_ms.sim.calibrate_comm import measure_collectives

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_recursion_limit(10000)
    init()
    rank, world = get_rank(), get_group_size()
    runs = {}
    for c in todo:
        runs[c] = build_step(*c, rank_world=(rank, world))
        runs[c]()
        runs[c]()
    times = {c: [] for c in todo}
    probes = []
    for r in range(rounds):
        probes.append(measure_collectives())
        for c in todo:
            for _ in range(steps):
                times[c].append(runs[c]())
        if rank == 0:
            print(f"msrun round {r + 1}/{rounds}: " + ", ".join(f"{statistics.median(v):.3f}s"
                                                              for v in times.values()), flush=True)
    if rank == 0:
        coll = {k: {b: statistics.median(p[k][b] for p in probes) for b in probes[0][k]} for k in probes[0]}
        print("RESULT " + json.dumps({"world": world, "collectives": coll,
                                      "steps": [[*c, statistics.median(times[c])] for c in todo]}), flush=True)


def measure_msrun(todo, rounds: int, steps: int, ranks: int = 2) -> tuple:
    """Launch ``worker`` on ``ranks`` msrun ranks; returns ({case: seconds}, {"allreduce" | "allgather": {bytes:
    seconds}}, world)."""
    import socket
    import subprocess
    import tempfile

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log_dir = tempfile.mkdtemp(prefix="validate_sim_cpu_msrun_")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = ["msrun", f"--worker_num={ranks}", f"--local_worker_num={ranks}", f"--master_port={port}", "--join=True",
           f"--log_dir={log_dir}", os.path.abspath(__file__), "--msrun-cases", json.dumps([list(c) for c in todo]),
           "--rounds", str(rounds), "--steps", str(steps), "--backend", SIM_CPU[-1].split("=", 1)[1]]
    print(f"msrun: {len(todo)} cases on {ranks} ranks (logs {log_dir})", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    text = open(os.path.join(log_dir, "worker_0.log"), errors="replace").read() \
        if os.path.exists(os.path.join(log_dir, "worker_0.log")) else ""
    res = [json.loads(ln[len("RESULT "):]) for ln in text.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not res:
        tail = "\n".join(text.splitlines()[-30:])
        raise SystemExit(f"validate_sim_cpu: the msrun launch failed (rc {proc.returncode}); {log_dir}/worker_0.log:"
                         f"\n{tail}\n{proc.stderr[-1500:]}")
    out = res[-1]
    coll = {k: {int(b): t for b, t in v.items()} for k, v in out["collectives"].items()}
    return {(a, b): t for a, b, t in out["steps"]}, coll, out["world"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default=None, help="predict with this profile instead of calibrating in-run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per config per round")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), metavar="LAYOUT",
                    help=f"layouts to measure (default all: {', '.join(LAYOUTS)})")
    ap.add_argument("--quick-calibration", action="store_true")
    ap.add_argument("--save-profile",
                    help="write the in-run calibrated profile here (e.g. yaml/hardware/cpu_local.yaml)")
    ap.add_argument("--predict-only", action="store_true", help="skip the measurement (needs --hardware)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cpu_fused"),
                    help="model.backend of every case (default cpu, the reference ops of the published tables)")
    ap.add_argument("--msrun-cases", default=None, help=argparse.SUPPRESS)     # JSON case list; run under msrun
    args = ap.parse_args(argv)
    SIM_CPU[-1] = f"model.backend={args.backend}"
    unknown = [x for x in args.layouts if x not in LAYOUTS]
    if unknown:
        raise SystemExit(f"--layouts: unknown {unknown} (known: {', '.join(LAYOUTS)})")
    if args.msrun_cases is not None:
        return worker([tuple(c) for c in json.loads(args.msrun_cases)], args.rounds, args.steps)
    todo = cases(args.layouts)
    measured, meas = {}, None
    if args.predict_only:
        hw = load_hardware(args.hardware or os.path.join(ROOT, "yaml", "hardware", "cpu_local.yaml"))
    else:
        link, world, coll = None, 1, None
        multi = [c for c in todo if LAYOUTS[c[1]][0] > 1]
        if multi:
            m_times, coll, world = measure_msrun(multi, args.rounds, args.steps)
            measured.update(m_times)
            from pangu_ms.sim.calibrate_comm import link_from_allreduce
            link = link_from_allreduce(coll["allreduce"], world)
        prof, s_times, meas = measure_single([c for c in todo if LAYOUTS[c[1]][0] == 1], args.rounds, args.steps,
                                             args.quick_calibration)
        measured.update(s_times)
        hw = in_run_profile(prof, link, world)
        if args.hardware:
            hw = load_hardware(args.hardware)
        if args.save_profile:
            from pangu_ms.sim.hardware import save_hardware
            save_hardware(hw, args.save_profile, header="Profile calibrated in-run by tools/validate_sim_cpu.py "
                          f"({time.strftime('%Y-%m-%d')}); medians of {meas['passes']} passes interleaved with the "
                          "training steps; intra_node: world-group AllReduce under msrun, 2 ranks.")
    from pangu_ms.model.stats import compute_stats
    from pangu_ms.sim.kernels import reference_step_kernels
    coll_rows = collective_rows(coll, hw, world) if not args.predict_only and coll else []
    rows = []
    for shape, layout in todo:
        e = predict(shape, layout, hw)
        cfg = load_config(TINY, case_overrides(shape, layout))
        row = {"config": shape, "layout": layout,
               "params_m": compute_stats(cfg, cfg.train.seq_length).total_params / 1e6,
               "kernels": reference_step_kernels(cfg), "predicted_s": e.step_time_s,
               "comm_s": e.breakdown_s["ep_alltoall_exposed"] + e.breakdown_s["dp_reduce_exposed"]}
        if (shape, layout) in measured:
            row["measured_s"] = measured[(shape, layout)]
            row["error"] = row["predicted_s"] / row["measured_s"] - 1.0
        rows.append(row)
    corr = rank_correlations(rows) if measured else None
    if args.json:
        print(json.dumps({"rows": rows, "spearman": corr, "collectives": coll_rows, "op_overhead": hw.op_overhead, "peak": hw.mfu_peak,
                          "bandwidth": hw.hbm_bandwidth, "gemm_efficiency": hw.gemm_efficiency.points(),
                          "intra_node": {"bandwidth": hw.intra_node.bandwidth, "latency": hw.intra_node.latency}},
                         indent=1))
        return
    print(f"Profile {hw.name}: peak {hw.mfu_peak / 1e9:.1f} GFLOPS fp32 (measured), "
          f"{hw.hbm_bandwidth / 1e9:.1f} GB/s, op_overhead {hw.op_overhead * 1e6:.1f} us/kernel, "
          f"AllReduce link {hw.intra_node.bandwidth / 1e9:.2f} GB/s + {hw.intra_node.latency * 1e6:.0f} us\n")
    if coll_rows:
        print("| collective (2 ranks) | bytes | measured ms | model ms (fitted link) |\n|---|---|---|---|")
        for k, b, m_s, p_s in coll_rows:
            print(f"| {k} | {b:,} | {1e3 * m_s:.2f} | {1e3 * p_s:.2f} |")
        print()
    print("| config | layout | params | kernels/step (counted) | predicted step s | of which collectives s | "
          "measured step s | error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        meas_s = f"{r['measured_s']:.4f}" if r.get("measured_s") else "-"
        err = f"{100 * r['error']:+.1f}%" if r.get("error") is not None else "-"
        print(f"| {r['config']} | {r['layout']} | {r['params_m']:.2f}M | {r['kernels']:.0f} | {r['predicted_s']:.4f} "
              f"| {r['comm_s']:.4f} | {meas_s} | {err} |")
    if corr:
        print(f"\nSpearman rank correlation of predicted vs measured step time over {corr['n']} cases: "
              f"{corr['all']:.3f}")
        for shape, v in corr["per_shape"].items():
            print(f"  layouts of {shape}: {v:.3f}")


def collective_rows(coll, hw, world) -> list:
    """(kind, bytes, measured s, model s) of the probe's collectives: AllReduce is what the link is fitted to,
    AllGather (gathered bytes) checks the model's all-gather = half an all-reduce."""
    from pangu_ms.sim.comm import allgather_time, allreduce_time
    out = []
    for kind, fn in (("AllReduce", allreduce_time), ("AllGather", allgather_time)):
        for b, t in sorted(coll[kind.lower()].items()):
            out.append((kind, b, t, fn(b, world, hw, False)))
    return out


def rank_correlations(rows) -> dict:
    """Spearman of predicted vs measured over every measured case, and over the layouts of each shape (shapes
    with >= 3 measured layouts)."""
    from pangu_ms.sim.residuals import spearman
    done = [r for r in rows if r.get("measured_s")]
    out = {"n": len(done), "all": spearman([r["predicted_s"] for r in done], [r["measured_s"] for r in done])
           if len(done) >= 2 else None, "per_shape": {}}
    for shape in dict.fromkeys(r["config"] for r in done):
        sub = [r for r in done if r["config"] == shape]
        if len(sub) >= 3:
            out["per_shape"][shape] = spearman([r["predicted_s"] for r in sub], [r["measured_s"] for r in sub])
    return out


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
