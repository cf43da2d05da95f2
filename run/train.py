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
    """A MindFormers-style recipe (runner_config / model.model_config) goes through mindformers.Trainer. A file that
    cannot be parsed raises the loader's ConfigError here already (it names the file)."""
    from pangu_ms.config.loader import parse_yaml_file
    if not os.path.isfile(path):
        return False                     # load_config reports the missing file
    data = parse_yaml_file(path) or {}
    return "runner_config" in data or isinstance(data.get("model"), dict) and "model_config" in data["model"]


def check_output_dir(path: str) -> None:
    """Create ``train.output_dir`` now, so that an impossible one is named before anything is built."""
    from pangu_ms.config import ConfigError
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"train.output_dir: cannot create {os.path.abspath(path)}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"train.output_dir: {os.path.abspath(path)} is not writable")


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
    if os.environ.get("MS_ROLE") == "MS_WORKER":   # run/msrun.sh names a rank that dies without a word by its pid
        print(f"[msrun worker] rank {os.environ.get('RANK_ID', '?')} pid {os.getpid()}", flush=True)
    from pangu_ms.config import ConfigError, load_config
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after: must be >= 1, got {args.stop_after}")

    if is_mindformers_yaml(args.config):
        if args.overrides:
            raise ConfigError(f"--set: applies to pangu_ms recipes; {args.config} is a MindFormers YAML, edit it "
                              f"instead")
        from pangu_ms.integrations.mindformers import train_with_mindformers
        train_with_mindformers(args.config)
        return 0
    cfg = load_config(args.config, args.overrides)
    check_output_dir(cfg.train.output_dir)
    import mindspore as ms
    ms.set_device("CPU" if os.environ.get("PANGU_MS_DEVICE", "CPU") == "CPU" else os.environ["PANGU_MS_DEVICE"])
    from pangu_ms.train.divergence import DivergenceError
    from pangu_ms.train.stages import run_stage
    try:
        summary = run_stage(cfg, progress=not args.no_progress, stop_after=args.stop_after)
    except DivergenceError as e:                    # train.on_nonfinite: one line, exit code 3
        print(f"error: {e}", file=sys.stderr)
        return 3
    if "valid_loss" in summary:
        print(f"final validation loss {summary['valid_loss']:.4f}; {summary['tokens_per_s']:.0f} tokens/s; "
              f"run directory {os.path.abspath(cfg.train.output_dir)}")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
