#!/usr/bin/env python
"""Peak memory of a conversion against the checkpoint size, on a synthetic wide model (>= 1 GB by default).

    python tools/bench_convert.py [--work DIR] [--hidden 1024] [--experts 16] [--vocab 32000] [--keep]

Writes a random pangu_ms checkpoint of that shape directly from the parameter inventory (tensor by tensor, no
MindSpore model is built), then runs, each in its own process, ``pangu-convert export`` (openpangu naming, MTP
included, 256 MB shards), ``import`` of that HF directory and ``verify``, and prints each command's wall time and
peak RSS (``wait4`` of the child) next to the checkpoint size, the largest tensor and the RSS of a process that
only imports the converter (MindSpore included). The figures in docs/interop.md come from this script.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def synthetic_checkpoint(run: str, overrides: list) -> tuple:
    """Random checkpoint of the recipe (``tiny_cpu.yaml`` + overrides) at ``run``; returns (bytes, largest)."""
    from pangu_ms.config import dump_config, load_config
    from pangu_ms.interop.safetensors_io import SafetensorsWriter
    from pangu_ms.model.inventory import parameter_inventory
    from pangu_ms.train.checkpoint import checkpoint_paths, file_digest, write_manifest
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "yaml",
                                   "tiny_cpu.yaml"), overrides)
    entries = parameter_inventory(cfg)
    paths = checkpoint_paths(run, 1)
    os.makedirs(paths.directory, exist_ok=True)
    writer = SafetensorsWriter(paths.shared, [(p.name, "F32", p.shape) for p in entries], {"format": "ms"})
    rng = np.random.default_rng(0)
    for p in entries:
        rows = max(1, (1 << 24) // max(1, int(np.prod(p.shape[1:]))))       # ~64 MB of float32 at a time
        for start in range(0, p.shape[0], rows):
            shape = (min(rows, p.shape[0] - start),) + tuple(p.shape[1:])
            writer.write(p.name, rng.standard_normal(shape, dtype=np.float32) * 0.02)
    writer.close()
    write_manifest(paths, 1, "safetensors", 1, {"model.safetensors": file_digest(paths.shared)},
                   {p.name: list(p.shape) for p in entries})
    dump_config(cfg, os.path.join(run, "config.yaml"))
    return os.path.getsize(paths.shared), max(p.numel for p in entries) * 4


def measured(cmd: list) -> tuple:
    """(wall seconds, peak RSS bytes) of a child process."""
    t = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return time.perf_counter() - t, usage.ru_maxrss * 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed after)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--expert-ffn", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="pangu_convert_bench_")
    overrides = [f"model.hidden_size={args.hidden}", f"model.vocab_size={args.vocab}",
                 f"model.num_layers={args.layers}", f"model.dense_ffn_hidden={2 * args.hidden}",
                 f"model.num_heads={max(1, args.hidden // 128)}", "model.q_lora_rank=384", "model.kv_lora_rank=256",
                 "model.qk_nope_head_dim=64", "model.qk_rope_head_dim=32", "model.v_head_dim=64",
                 f"moe.num_experts={args.experts}", f"moe.expert_ffn_hidden={args.expert_ffn}", "moe.top_k=2"]
    run, hf, back = (os.path.join(work, n) for n in ("run", "hf", "back"))
    try:
        t = time.perf_counter()
        size, largest = synthetic_checkpoint(run, overrides)
        print(f"synthetic checkpoint: {size / 1e9:.3f} GB ({time.perf_counter() - t:.1f} s to write), largest "
              f"tensor {largest / 1e6:.0f} MB")
        py = [sys.executable, "-m", "pangu_ms.tools.convert_ckpt"]
        base = measured([sys.executable, "-c", "import pangu_ms.interop.hf_export, pangu_ms.interop.hf_import, "
                                               "pangu_ms.interop.verify, pangu_ms.train.checkpoint"])
        rows = [("import the converter only", base)]
        rows.append(("export (openpangu, MTP, 256MB shards)",
                     measured(py + ["export", "--checkpoint", run, "--out", hf, "--format", "openpangu",
                                    "--shard-size", "256MB"])))
        rows.append(("import (HF -> pangu_ms)", measured(py + ["import", "--hf-dir", hf, "--out", back])))
        rows.append(("verify (HF vs checkpoint)", measured(py + ["verify", "--hf-dir", hf, "--checkpoint", back])))
        print(f"\n| command | wall s | peak RSS | peak RSS - import-only | peak RSS / checkpoint |")
        print("|---|---:|---:|---:|---:|")
        for name, (wall, rss) in rows:
            print(f"| {name} | {wall:.1f} | {rss / 1e6:.0f} MB | {(rss - base[1]) / 1e6:.0f} MB | "
                  f"{rss / size:.2f} |")
        print(f"\ncheckpoint {size / 1e6:.0f} MB, largest tensor {largest / 1e6:.0f} MB")
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
