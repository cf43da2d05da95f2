#!/usr/bin/env python
"""Checkpoint interoperability with HF DeepSeek-V3 and openPangu-Ultra-MoE safetensors (streamed, bounded memory).

    pangu-convert import  --hf-dir DIR --out RUN_DIR [--format auto|deepseek_v3|openpangu]
    pangu-convert export  --checkpoint CKPT --out HF_DIR [--format openpangu|deepseek_v3] [--no-mtp]
                          [--shard-size 5GB] [--dtype float32|bfloat16|float16] [--config RECIPE]
    pangu-convert verify  --hf-dir DIR --checkpoint CKPT [--format ...] [--atol 0]
    pangu-convert logits  --checkpoint CKPT --ids IDS.npy --out LOGITS.npy

``import`` writes RUN_DIR/config.yaml (the recipe of the model, mapped from config.json) and the checkpoint
RUN_DIR/checkpoints/step_00000000 (weights only): train from it with ``--set stage.init_from=RUN_DIR``.
``export`` reads a checkpoint directory, a run directory (its newest complete checkpoint) or a
``checkpoints`` directory, with the recipe at <run>/config.yaml (or --config), and writes config.json,
model.safetensors.index.json and the shards that ``transformers`` ``from_pretrained`` loads (deepseek_v3;
openpangu needs openPangu's own modeling code). ``verify`` compares tensor by tensor (max abs diff, checksums)
and exits 1 when any differs by more than --atol; unknown / missing / mis-shaped tensors are errors.
``logits`` writes the model's float32 logits [batch, seq, vocab] for int token ids [batch, seq] (no MTP).
Mapping and choices: docs/interop.md.
"""
import argparse
import sys


def _import(args) -> int:
    from pangu_ms.interop.hf_import import import_hf
    import_hf(args.hf_dir, args.out, args.format, args.overrides)
    return 0


def _export(args) -> int:
    from pangu_ms.interop.hf_export import export_hf, parse_size
    fmt = "openpangu" if args.format == "auto" else args.format
    export_hf(args.checkpoint, args.out, fmt, not args.no_mtp, parse_size(args.shard_size), args.dtype, args.config)
    return 0


def _verify(args) -> int:
    from pangu_ms.interop.verify import verify
    checks = verify(args.hf_dir, args.checkpoint, args.format, args.config)
    bad = [c for c in checks if c.max_abs_diff > args.atol]
    for c in checks if args.all else bad:
        print(f"{c.name}  max_abs_diff {c.max_abs_diff:.3g}  hf {c.hf_checksum}  pangu {c.pangu_checksum}")
    worst = max((c.max_abs_diff for c in checks), default=0.0)
    same = sum(c.hf_checksum == c.pangu_checksum for c in checks)
    print(f"verified {len(checks)} tensors: {same} bit-identical, {len(bad)} differ by more than {args.atol:g} "
          f"(max abs diff {worst:.3g})")
    return 1 if bad else 0


def _logits(args) -> int:
    from pangu_ms.interop.logits import checkpoint_logits
    import numpy as np
    ids = np.load(args.ids)
    out = checkpoint_logits(args.checkpoint, ids, args.config)
    np.save(args.out, out)
    print(f"logits {list(out.shape)} -> {args.out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    fmts = ["auto", "deepseek_v3", "openpangu"]
    p = sub.add_parser("import", help="HF directory -> pangu_ms run directory")
    p.add_argument("--hf-dir", required=True)
    p.add_argument("--out", required=True, help="run directory to write (config.yaml + checkpoints/)")
    p.add_argument("--format", choices=fmts, default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe value for the written config.yaml (train / data / parallel settings)")
    p.set_defaults(run=_import)
    p = sub.add_parser("export", help="pangu_ms checkpoint -> HF directory")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=fmts, default="auto", help="auto = openpangu")
    p.add_argument("--no-mtp", action="store_true", help="leave the MTP layers out")
    p.add_argument("--shard-size", default="5GB")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the HF tensors (default: the checkpoint's)")
    p.add_argument("--config", default=None, help="recipe of the checkpoint (default <run>/config.yaml)")
    p.set_defaults(run=_export)
    p = sub.add_parser("verify", help="compare an HF directory with a pangu_ms checkpoint")
    p.add_argument("--hf-dir", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=fmts, default="auto")
    p.add_argument("--config", default=None)
    p.add_argument("--atol", type=float, default=0.0, help="allowed max abs diff per tensor (bf16 export: ~1e-2)")
    p.add_argument("--all", action="store_true", help="print every tensor, not only those that differ")
    p.set_defaults(run=_verify)
    p = sub.add_parser("logits", help="float32 logits of a checkpoint for token ids")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--ids", required=True, help=".npy of int token ids [batch, seq]")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None)
    p.set_defaults(run=_logits)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
