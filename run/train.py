#!/usr/bin/env python
"""Train any pangu_ms recipe: ``python run/train.py --config yaml/<recipe>.yaml [--set key.path=value ...]``.

One entry for every stage (``stage.name`` in the recipe). Launched by ``run/msrun.sh`` it trains with the
explicit data / expert parallelism of ``pangu_ms.parallel``. Outputs go to ``train.output_dir``: train.log,
metrics.jsonl, tb/ (tensorboardX), checkpoints/, config.yaml; MindFormers' own logs under mindformers_log/.
A run resumes automatically from its latest complete checkpoint (``--set train.resume=false`` to restart).

A MindFormers-style YAML (``model.model_config`` / ``runner_config``, e.g. yaml/mindformers/tiny_cpu_trainer.yaml)
is trained by ``mindformers.Trainer`` with the registered pangu_ms model and CPU wrapper instead.
"""
import argparse
import os
import sys



def is_mindformers_yaml(path: str) -> bool:
    """A MindFormers-style recipe (runner_config / model.model_config) goes through mindformers.Trainer."""
    import yaml
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return "runner_config" in data or isinstance(data.get("model"), dict) and "model_config" in data["model"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="recipe YAML (e.g. yaml/tiny_cpu.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set train.steps=100 (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    ap.add_argument("--stop-after", type=int, default=None, metavar="N",
                    help="stop after N steps of this invocation, keeping a checkpoint (emulates an interruption; "
                         "the next invocation resumes)")
    args = ap.parse_args(argv)

    if is_mindformers_yaml(args.config):
        if args.overrides:
            print("error: --set applies to pangu_ms recipes; edit the MindFormers YAML instead", file=sys.stderr)
            return 2
        from pangu_ms.integrations.mindformers import train_with_mindformers
        train_with_mindformers(args.config)
        return 0
    from pangu_ms.config import ConfigError, load_config
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import mindspore as ms
    ms.set_device("CPU" if os.environ.get("PANGU_MS_DEVICE", "CPU") == "CPU" else os.environ["PANGU_MS_DEVICE"])
    from pangu_ms.data.errors import DataError
    from pangu_ms.train.checkpoint import CheckpointError
    from pangu_ms.train.stages import run_stage
    try:
        summary = run_stage(cfg, progress=not args.no_progress, stop_after=args.stop_after)
    except (DataError, CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "valid_loss" in summary:
        print(f"final validation loss {summary['valid_loss']:.4f}; {summary['tokens_per_s']:.0f} tokens/s; "
              f"run directory {os.path.abspath(cfg.train.output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
