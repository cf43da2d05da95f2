#!/usr/bin/env python
"""Parameter and FLOP counts of a recipe, from the config alone (no weights are allocated).

    python tools/model_stats.py --config yaml/pangu_ultra_moe_718b.yaml [--set key=value ...] [--json]

Prints total parameters (with and without MTP), activated parameters per token, and training FLOPs per token
(forward + backward = 3 x forward; attention over the full S x S square; conventions in
pangu_ms/model/stats.py). ``--json`` prints one object with total_params, total_params_without_mtp,
active_params, train_flops_per_token (and more).
"""
import argparse
import json
import os
import sys



def human(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3f}{unit}"
    return f"{n:.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="recipe YAML")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value (repeatable)")
    ap.add_argument("--seq-length", type=int, default=None, help="sequence length for the attention FLOPs "
                    "(default: train.seq_length of the recipe)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    from pangu_ms.config import ConfigError, load_config
    from pangu_ms.model.stats import compute_stats
    if args.seq_length is not None and args.seq_length < 1:
        raise ConfigError(f"--seq-length: must be >= 1, got {args.seq_length}")
    cfg = load_config(args.config, args.overrides)
    s = compute_stats(cfg, args.seq_length)
    if args.json:
        print(json.dumps(s.as_dict()))
        return 0
    b = s.breakdown
    rows = [
        ("total parameters", human(s.total_params)),
        ("total without MTP", human(s.total_params_without_mtp)),
        ("activated per token (no MTP, no input embedding)", human(s.active_params)),
        (f"training FLOPs per token (seq {s.seq_length})", human(s.train_flops_per_token)),
        ("training FLOPs per token without MTP", human(s.train_flops_per_token_without_mtp)),
        ("dense / MoE layers", f"{b['dense_layers']} / {b['moe_layers']}"),
        ("params per MoE layer (active)", f"{human(b['moe_layer_params'])} ({human(b['moe_layer_active_params'])})"),
        ("attention params per layer", human(b["attention_params_per_layer"])),
        ("embedding / LM head / MTP", f"{human(b['embedding'])} / {human(b['lm_head'])} / {human(b['mtp_params'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{args.config}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
