#!/usr/bin/env python
"""Training-throughput benchmark: pangu_ms (MindSpore, graph mode) vs HF transformers' DeepseekV3ForCausalLM
(PyTorch eager, CPU) on the same configuration, with MFU against the fp32 GEMM peak measured in the same run.

    python tools/bench.py --config yaml/tiny_cpu.yaml                       # batch 4 x recipe seq (64), 2 threads
    python tools/bench.py --config yaml/small_cpu.yaml --torch-compile --steps 4 --blocks 4   # seq 256
    python tools/bench.py --config yaml/tiny_cpu.yaml --set moe.aux_loss_coeff=0 --check-steps 10
    python tools/bench.py --config yaml/tiny_cpu.yaml --no-torch --json

What is measured (fp32, one process, ``--threads`` intra-op threads on both sides):
* pangu_ms: ``PanguForCausalLM`` + ``TrainStep`` (loss and gradients, global-norm clip ``train.grad_clip``, AdamW
  of ``build_optimizer`` with the recipe's schedule), compiled with ``ms.jit``; one step = one call, synchronised
  on the loss.
* PyTorch: ``DeepseekV3ForCausalLM`` from the same config (sigmoid router, ``norm_topk_prob``,
  ``routed_scaling_factor``, ``n_group = topk_group = 1``, first-k dense layers, MLA), torch AdamW with the same
  betas / eps / weight decay groups / per-step learning rate, ``clip_grad_norm_`` to the same clip, loss = token
  cross-entropy; ``attn_implementation`` eager by default (``--torch-attn sdpa`` for SDPA), ``--torch-compile``
  adds a ``torch.compile``'d forward as a third contestant.
* The weights of the pangu_ms model are copied into the HF model before either trains, and both train on the same
  batch, so the step-0 losses must agree (printed with their difference). pangu_ms adds the MoE load-balancing
  aux loss to its training loss and HF does not: with ``--check-steps N`` the lm losses of the first N steps are
  compared, which coincide beyond step 0 only with ``--set moe.aux_loss_coeff=0``.
* Timing: after ``--warmup`` steps each, ``--blocks`` rounds of ``--steps`` steps per contestant, interleaved
  (A, B, A, B, ...), so machine noise hits both alike; ms/step is the median over all timed steps (p10 / p90
  too; the ratios are printed at the median and at p10, the latter less sensitive to neighbours).
* ``--variant K=V[,K=V]`` adds a pangu_ms contestant with those overrides (an A/B of a setting, same run).
* ``torch.compile`` needs inductor's C++ toolchain; when it fails the contestant is left out and the reason printed.
* Peak RSS: growth of the process high-water mark while each contestant is built and runs its first steps
  (one process, in build order), so it is each one's own peak only approximately.
* MFU = tokens/s x ``compute_stats(cfg, seq).train_flops_per_token_without_mtp`` / peak, where peak is the best
  fp32 GFLOP/s of MindSpore ``MatMul`` on 1024..2048 squares in this run (torch's is printed too when present).

By default the recipe is overridden to ``model.mtp_depth=0`` and ``model.sandwich_norm=false`` (HF DeepSeek-V3 has
neither); ``--native`` keeps the recipe as written and skips PyTorch. The PyTorch side needs the optional
benchmark dependencies: ``pip install -r requirements-bench.txt`` (torch==2.13.0, transformers==4.57.1); without
them the PyTorch side is skipped with a message. ``LOCAL_DEFAULT_PATH`` defaults to /tmp/mflog (MindFormers logs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/mflog")
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from pangu_ms.bench.hf import COMPARABLE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True, help="recipe YAML, e.g. yaml/tiny_cpu.yaml")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="config override (repeatable)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    p.add_argument("--seq", type=int, default=0, help="tokens per sequence (default: the recipe's train.seq_length)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per block (default 10)")
    p.add_argument("--blocks", type=int, default=5, help="interleaved timing blocks per contestant (default 5)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after compilation (default 5)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for both frameworks (default 2)")
    p.add_argument("--no-torch", action="store_true", help="benchmark pangu_ms only")
    p.add_argument("--native", action="store_true",
                   help="keep the recipe's MTP / sandwich norm (not comparable with HF: implies --no-torch)")
    p.add_argument("--torch-attn", default="eager", choices=("eager", "sdpa"), help="HF attention implementation")
    p.add_argument("--torch-compile", action="store_true", help="also time a torch.compile'd HF forward")
    p.add_argument("--check-steps", type=int, default=0,
                   help="compare the lm losses of the first N training steps (exact only with aux_loss_coeff=0)")
    p.add_argument("--optimizer", default="auto", choices=("auto", "fused", "mindformers"),
                   help="pangu_ms AdamW implementation (build_optimizer impl; default auto = fused in fp32)")
    p.add_argument("--variant", action="append", default=[], metavar="K=V[,K=V]",
                   help="extra pangu_ms contestant with these overrides on top (repeatable), e.g. "
                        "moe.dropless_impl=masked_dense: an A/B of a setting in the same interleaved run")
    p.add_argument("--no-peak", action="store_true", help="skip the GEMM peak probe (no MFU)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def log(args, *a):
    if not args.json:
        print(*a, flush=True)


def torch_available():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return None
    except ImportError as e:
        return f"PyTorch side skipped: {e} (pip install -r requirements-bench.txt)"


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def timed_blocks(contestants: dict, steps: int, blocks: int) -> dict:
    """Interleaved blocks: for each round, each contestant runs ``steps`` synchronised steps."""
    per_step = {k: [] for k in contestants}
    for _ in range(blocks):
        for name, fn in contestants.items():
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                per_step[name].append(time.perf_counter() - t)
    return per_step


def main(argv=None) -> int:
    args = parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    try:
        ms.set_context(runtime_num_threads=args.threads)
    except Exception:  # noqa: BLE001  (option renamed in some releases; the default pool is used)
        pass
    from pangu_ms.config import load_config
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.model.stats import compute_stats
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.schedule import lr_values
    from pangu_ms.train.step import TrainStep, compile_step

    overrides = ([] if args.native else COMPARABLE) + list(args.set)
    if not args.seq:
        args.seq = load_config(args.config, overrides).train.seq_length
    overrides += [f"train.seq_length={args.seq}", f"train.global_batch_size={args.batch}",
                  f"parallel.micro_batch_size={args.batch}"]
    cfg = load_config(args.config, overrides)
    result = {"config": args.config, "overrides": overrides, "batch": args.batch, "seq": args.seq,
              "threads": args.threads, "load_avg_start": os.getloadavg()[0], "peak_rss_mb": {}}
    rss0 = peak_rss_mb()

    use_torch = not (args.no_torch or args.native)
    if use_torch:
        from pangu_ms.bench.hf import check_comparable
        why = check_comparable(cfg)
        missing = torch_available()
        if why:
            log(args, "PyTorch side skipped: config not expressible in HF DeepSeek-V3: " + "; ".join(why))
            result["torch_skipped"] = "; ".join(why)
            use_torch = False
        elif missing:
            log(args, missing)
            result["torch_skipped"] = missing
            use_torch = False

    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, cfg.model.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
    x_np, y_np = ids[:, :-1], ids[:, 1:]

    # ---- pangu_ms (and its --variant contestants) ----------------------------------------------------------
    x_ms, y_ms = ms.Tensor(x_np), ms.Tensor(y_np)
    contestants, rss1, weights, net = {}, rss0, None, None
    for variant in [""] + list(args.variant):
        extra = [kv for kv in variant.split(",") if kv]
        vcfg = load_config(args.config, overrides + extra) if extra else cfg
        vnet = build_model(vcfg)
        if weights is None:
            net, weights = vnet, {p.name: p.asnumpy().copy() for p in vnet.trainable_params()}
        opt = build_optimizer(vnet.trainable_params(), vcfg.train, impl=args.optimizer)
        step = compile_step(TrainStep(CausalLMLoss(vnet, vcfg.model.mtp_loss_weight), opt, vcfg.train.grad_clip),
                            vcfg.train.mode)
        losses = []

        def ms_step(step=step, losses=losses):
            out = step(x_ms, y_ms)
            losses.append(float(out[1].asnumpy()))

        name = f"pangu_ms[{variant}]" if variant else "pangu_ms"
        t0 = time.perf_counter()
        ms_step()
        result[f"{name}_compile_s" if variant else "pangu_compile_s"] = time.perf_counter() - t0
        for _ in range(2):
            ms_step()
        rss2 = peak_rss_mb()
        result["peak_rss_mb"][name] = rss2 - rss1
        rss1 = rss2
        contestants[name] = ms_step
        if variant:
            result[f"{name}_step0_loss"] = losses[0]
        else:
            ms_losses = losses

    # ---- PyTorch ----------------------------------------------------------------------------------------
    if use_torch:
        import torch
        from pangu_ms.bench.hf import TorchStep, build_hf_model, torch_adamw
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        n_lr = 1 + args.warmup + args.steps * args.blocks + 8
        lrs = [float(v) for v in lr_values(cfg.train)]          # the array pangu_ms's optimizer indexes
        lrs += [lrs[-1]] * max(0, n_lr - len(lrs))
        x_t, y_t = torch.from_numpy(x_np.astype(np.int64)), torch.from_numpy(y_np.astype(np.int64))
        runs = [("torch_eager", False)] + ([("torch_compile", True)] if args.torch_compile else [])
        for name, compiled in runs:
            model = build_hf_model(cfg, weights, args.torch_attn)
            ts = TorchStep(model, torch_adamw(model, cfg.train), cfg.train.grad_clip, lrs, compiled)
            losses = []

            def t_step(ts=ts, losses=losses):
                losses.append(ts(x_t, y_t))

            t0 = time.perf_counter()
            try:
                t_step()
                t_step()
            except Exception as e:  # noqa: BLE001  (torch.compile needs a working C++ toolchain / inductor)
                result[f"{name}_failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                log(args, f"{name} failed, left out: {result[f'{name}_failed']}")
                continue
            result[f"{name}_first_step_s"] = time.perf_counter() - t0
            rss2 = peak_rss_mb()
            result["peak_rss_mb"][name] = rss2 - rss1
            rss1 = rss2
            contestants[name] = t_step
            result[f"_{name}_losses"] = losses
        result["hf_params"] = sum(p.numel() for p in model.parameters())

    # ---- warm-up, interleaved timing ------------------------------------------------------------------
    for fn in contestants.values():
        for _ in range(args.warmup):
            fn()
    per_step = timed_blocks(contestants, args.steps, args.blocks)

    result["load_avg_end"] = os.getloadavg()[0]
    tokens = args.batch * args.seq
    stats = compute_stats(cfg, args.seq)
    flops_tok = stats.train_flops_per_token if cfg.model.mtp_depth else stats.train_flops_per_token_without_mtp
    result["train_flops_per_token"] = flops_tok
    result["params"] = sum(int(np.prod(p.shape)) for p in net.trainable_params())
    peak = None
    if not args.no_peak:
        from pangu_ms.bench.peak import mindspore_gemm_peak, torch_gemm_peak
        peak, per = mindspore_gemm_peak()
        result["gemm_peak_gflops"] = peak
        result["gemm_peak_by_size"] = {str(k): v for k, v in per.items()}
        if use_torch:
            result["torch_gemm_peak_gflops"] = torch_gemm_peak()
    for name, ts_ in per_step.items():
        med = float(np.median(ts_))
        r = {"ms_per_step": med * 1e3, "ms_per_step_p10": float(np.percentile(ts_, 10)) * 1e3,
             "ms_per_step_p90": float(np.percentile(ts_, 90)) * 1e3, "tokens_per_s": tokens / med}
        if peak:
            r["mfu"] = r["tokens_per_s"] * flops_tok / (peak * 1e9)
        result[name] = r
    if "torch_eager" in result:
        result["ratio_pangu_over_torch"] = result["pangu_ms"]["tokens_per_s"] / result["torch_eager"]["tokens_per_s"]
        tl = result.pop("_torch_eager_losses")
        result["step0_loss"] = {"pangu_ms_lm": ms_losses[0], "torch": tl[0], "abs_diff": abs(ms_losses[0] - tl[0])}
        if args.check_steps:
            n = min(args.check_steps, len(tl), len(ms_losses))
            d = [abs(a - b) for a, b in zip(ms_losses[:n], tl[:n])]
            result["loss_trace"] = {"pangu_ms_lm": ms_losses[:n], "torch": tl[:n], "max_abs_diff": max(d)}
    for name in ("torch_eager", "torch_compile"):
        if name in result:       # fastest-decile ratio: less sensitive to neighbours than the median on a busy box
            result[f"ratio_p10_pangu_over_{name}"] = result[name]["ms_per_step_p10"] / result["pangu_ms"]["ms_per_step_p10"]
    if "torch_compile" in result:
        result.pop("_torch_compile_losses", None)
        result["ratio_pangu_over_torch_compile"] = (result["pangu_ms"]["tokens_per_s"]
                                                    / result["torch_compile"]["tokens_per_s"])

    if args.json:
        print(json.dumps(result))
        return 0
    print(f"config {args.config}  overrides {' '.join(overrides)}")
    print(f"batch {args.batch} x seq {args.seq} = {tokens} tokens/step, {args.threads} threads, fp32; "
          f"{result['params']:,} parameters; {flops_tok / 1e6:.2f} MFLOP/token (train, model FLOPs)")
    if peak:
        sizes = ", ".join(f"{k}: {v:.0f}" for k, v in result["gemm_peak_by_size"].items())
        extra = f"; torch {result['torch_gemm_peak_gflops']:.0f}" if "torch_gemm_peak_gflops" in result else ""
        print(f"fp32 GEMM peak (MindSpore MatMul, GFLOP/s): {peak:.0f}  [{sizes}]{extra}")
    print(f"{'':16}{'ms/step':>9}{'p10':>8}{'p90':>8}{'tokens/s':>10}{'MFU':>8}{'peak RSS':>11}")
    for name in per_step:
        r = result[name]
        mfu = f"{100 * r['mfu']:.2f}%" if "mfu" in r else "-"
        rss = result["peak_rss_mb"].get(name)
        print(f"{name:16}{r['ms_per_step']:9.1f}{r['ms_per_step_p10']:8.1f}{r['ms_per_step_p90']:8.1f}"
              f"{r['tokens_per_s']:10.0f}{mfu:>8}{'' if rss is None else f'+{rss:.0f} MiB':>11}")
    print(f"peak RSS: the process high-water mark grown by building each contestant and running its first 3 steps "
          f"(in this order, one process; {rss0:.0f} MiB before); whole run {peak_rss_mb():.0f} MiB")
    for name in ("torch_compile",):
        if f"{name}_failed" in result:
            print(f"{name}: failed, left out: {result[name + '_failed']}")
    for variant in args.variant:
        name = f"pangu_ms[{variant}]"
        print(f"ratio {name} / pangu_ms (tokens/s): "
              f"{result[name]['tokens_per_s'] / result['pangu_ms']['tokens_per_s']:.2f}; step-0 loss "
              f"{result[name + '_step0_loss']:.6f} vs {ms_losses[0]:.6f}")
    if "ratio_pangu_over_torch" in result:
        print(f"ratio pangu_ms / PyTorch eager (tokens/s): {result['ratio_pangu_over_torch']:.2f} at the median, "
              f"{result['ratio_p10_pangu_over_torch_eager']:.2f} at p10")
        if "ratio_pangu_over_torch_compile" in result:
            print(f"ratio pangu_ms / torch.compile (tokens/s): {result['ratio_pangu_over_torch_compile']:.2f} at the "
                  f"median, {result['ratio_p10_pangu_over_torch_compile']:.2f} at p10")
        s0 = result["step0_loss"]
        print(f"step-0 loss (same weights, same batch): pangu_ms {s0['pangu_ms_lm']:.6f}  torch {s0['torch']:.6f}  "
              f"|diff| {s0['abs_diff']:.2e}")
        if "loss_trace" in result:
            print(f"lm-loss trace, first {len(result['loss_trace']['torch'])} steps: max |diff| "
                  f"{result['loss_trace']['max_abs_diff']:.2e}")
    print(f"pangu_ms compile + first step {result['pangu_compile_s']:.1f} s; 1-min load average "
          f"{result['load_avg_start']:.1f} -> {result['load_avg_end']:.1f} on {os.cpu_count()} CPUs")
    if max(result["load_avg_start"], result["load_avg_end"]) > os.cpu_count() + 0.5:
        print("WARNING: the machine is busy (load > CPUs): absolute timings are inflated, and frameworks whose "
              "kernels wait on a thread pool suffer unevenly; rerun on a quiet machine for the ratio")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
