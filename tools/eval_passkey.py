#!/usr/bin/env python
"""Passkey retrieval (needle in a haystack) of a trained pangu_ms model over lengths x depths.

    python tools/eval_passkey.py --config yaml/tiny_cpu_long_context.yaml \\
        --checkpoint output/tiny_cpu_long_context [--lengths 128 256 512] [--depths 0 0.25 0.5 0.75 1] \\
        [--trials 10] [--json] [--out heatmap.png] [--set model.rope_theta=160000]

``--checkpoint`` is a checkpoint directory (``.../checkpoints/step_N``), a run directory (its latest checkpoint),
or a long_context stage directory (the last finished sub-stage). The model is rebuilt from the run's own
``config.yaml`` when there is one (so an extended model gets its RoPE base / scaling), otherwise from ``--config``
(a long_context recipe then means its last sub-stage); ``--set`` overrides either (e.g. try other RoPE bases on a
model that has not been extended, as the base was chosen by NIAH tests in Pangu Ultra). The RoPE tables are
rebuilt for the longest evaluated length. Prints a table (accuracy = exact greedy match of the key) and writes a
PNG heat-map with ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/pangu_ms_mflogs")
os.environ.setdefault("GLOG_v", "3")


def resolve_run(path: str):
    """-> (checkpoint dir, run dir or None)."""
    from pangu_ms.train.checkpoint import CHECKPOINTS, MANIFEST, newest_checkpoint
    from pangu_ms.train.long_context import DONE_FILE
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        run = os.path.dirname(os.path.dirname(path))
        return path, run if os.path.isfile(os.path.join(run, "config.yaml")) else None
    ck = newest_checkpoint(path, warn=lambda line: print(line, file=sys.stderr))
    if ck:
        run = os.path.dirname(path) if os.path.basename(path) == CHECKPOINTS else path
        return ck, run if os.path.isfile(os.path.join(run, "config.yaml")) else None
    subs = sorted((d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, DONE_FILE))),
                  key=lambda d: int(d.split("_")[0]) if d.split("_")[0].isdigit() else -1) \
        if os.path.isdir(path) else []
    if subs:
        return resolve_run(os.path.join(path, subs[-1]))
    raise SystemExit(f"error: no checkpoint found at {path}")


def build_model(args):
    """(net, cfg, tokenizer, checkpoint) for the arguments."""
    from pangu_ms.config import load_config
    from pangu_ms.data import load_tokenizer
    ckpt, run = (None, None)
    if args.checkpoint:
        ckpt, run = resolve_run(args.checkpoint)
    if run:
        cfg = load_config(os.path.join(run, "config.yaml"), args.overrides, validate=False)
    elif args.config:
        cfg = load_config(args.config, args.overrides)
        if cfg.stage.name == "long_context" and cfg.long_context.schedule:
            from pangu_ms.train.long_context import sub_stage_config
            cfg = sub_stage_config(cfg, len(cfg.long_context.schedule) - 1)
    else:
        raise SystemExit("error: give --config (and/or a --checkpoint run directory with config.yaml)")
    lengths = args.lengths or list(cfg.long_context.passkey_eval_lengths) or \
        [cfg.train.seq_length * k for k in (1, 2, 4)]
    args.lengths = lengths
    chunk = args.attention_chunk if args.attention_chunk >= 0 else \
        (cfg.long_context.attention_chunk or (256 if max(lengths) > 1024 else 0))
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, max_position_embeddings=max(max(lengths),
                                                                              cfg.model.max_position_embeddings)),
        long_context=dataclasses.replace(cfg.long_context, attention_chunk=chunk))
    tok_path = cfg.data.tokenizer or os.path.join(cfg.data.path, "tokenizer.json")
    if args.tokenizer:
        tok_path = args.tokenizer
    if not os.path.isfile(tok_path):
        raise SystemExit(f"error: tokenizer not found ({tok_path}); pass --tokenizer")
    tok = load_tokenizer(tok_path)
    from pangu_ms.model import build_model
    net = build_model(cfg)
    if ckpt:
        from pangu_ms.train.checkpoint import CheckpointError, load_checkpoint
        try:
            load_checkpoint(net, ckpt)
        except CheckpointError as e:
            raise SystemExit(f"error: --checkpoint: {e}") from None
    return net, cfg, tok, ckpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="recipe YAML (used when the checkpoint's run has no config.yaml)")
    ap.add_argument("--checkpoint", help="checkpoint dir, run dir or long_context stage dir (none: random init)")
    ap.add_argument("--lengths", type=int, nargs="+", help="context lengths in tokens (default: L, 2L, 4L of "
                                                            "the model's training length)")
    ap.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--trials", type=int, default=10, help="prompts (random keys) per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attention-chunk", type=int, default=-1,
                    help="query chunk of the CPU attention (-1: the config's, or 256 beyond 1024 tokens)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the config's data.path/tokenizer.json)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--out", help="write a PNG heat-map here")
    ap.add_argument("--pynative", action="store_true", help="PyNative mode instead of ms.jit")
    args = ap.parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    from pangu_ms.eval.passkey import evaluate_passkey, format_table, plot_heatmap
    net, cfg, tok, ckpt = build_model(args)
    log = None if args.json else (lambda m: print(m, flush=True))
    res = evaluate_passkey(net, tok, args.lengths, args.depths, args.trials, args.seed, graph=not args.pynative,
                           log=log)
    res.update({"checkpoint": ckpt, "rope_theta": cfg.model.rope_theta,
                "rope_scaling": cfg.long_context.rope_scaling, "train_seq_length": cfg.train.seq_length})
    if args.out:
        res["heatmap"] = plot_heatmap(res, args.out, f"passkey accuracy (trained at {cfg.train.seq_length}, "
                                                     f"theta {cfg.model.rope_theta:g})")
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(format_table(res, f"passkey accuracy, {ckpt or 'random init'} (rope_theta {cfg.model.rope_theta:g}, "
                                f"trained at {cfg.train.seq_length}):"))
        if args.out:
            print(f"heat-map: {res['heatmap']}")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
