#!/usr/bin/env python
"""Aux-loss-free expert bias vs a deliberately skewed router: expert-load CV before / after training.

Every MoE router's rows 0 and 1 are scaled x``--skew`` at initialisation (those two experts then win about half of
all tokens), the aux loss is off, and the model trains on synthetic data with ``moe.expert_bias`` on, once with
the sign update (``--rate``) and once with rate 0. The load CV (std / mean of the tokens per expert, averaged over
the MoE layers) is measured on one held batch before training and after the last step.

    python tools/expert_bias_demo.py --steps 300            # numbers in docs/parallel.md ("expert bias")
"""
import argparse
import os
import sys



def skewed_router_cv(overrides, rate: float, steps: int, skew: float = 20.0):
    """(load CV before training, load CV after ``steps`` steps) of the skewed model built from ``overrides``
    (a list of ``key=value`` strings or a callable ``small_cfg``-style factory)."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor
    from pangu_ms.config import load_config
    from pangu_ms.data.synthetic import SyntheticSampler
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step

    fixed = {"moe.expert_bias": "true", "moe.expert_bias_update_rate": rate, "moe.aux_loss_coeff": 0.0,
             "train.steps": steps, "train.warmup_steps": 0}
    if callable(overrides):
        cfg = overrides(**fixed)
    else:
        cfg = load_config(None, list(overrides) + [f"{k}={v}" for k, v in fixed.items()])
    ms.set_seed(cfg.train.seed)
    net = build_model(cfg)
    for i in net.moe_layer_ids:
        w = net.layers[i].moe.router.weight
        skewed = w.asnumpy().copy()
        skewed[:2] *= skew
        w.set_data(Tensor(skewed, w.dtype))
    loss_cell = CausalLMLoss(net, cfg.model.mtp_loss_weight)
    step = compile_step(TrainStep(loss_cell, build_optimizer(net.trainable_params(), cfg.train),
                                  cfg.train.grad_clip), cfg.train.mode)
    t = cfg.train
    sampler = SyntheticSampler(cfg.model.vocab_size, t.seq_length, t.global_batch_size, 0, 1, t.seed)
    held = sampler.global_batch(10 ** 6)
    x, y = Tensor(held[:, :-1]), Tensor(held[:, 1:])

    def cv():
        load = loss_cell(x, y)[4].asnumpy().astype(np.float64)
        return float(np.mean(load.std(1) / load.mean(1)))
    before = cv()
    for s in range(steps):
        ids = sampler.batch(s)
        step(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))
    return before, cv()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="yaml/tiny_cpu.yaml")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rate", type=float, default=1e-2)
    ap.add_argument("--skew", type=float, default=20.0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    from pangu_ms.config import ConfigError, load_config
    try:
        base = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def make(**fixed):
        return load_config(args.config, args.overrides + ["data.source=synthetic", "model.mtp_depth=0"]
                           + [f"{k}={v}" for k, v in fixed.items()])
    del base
    for rate in (0.0, args.rate):
        before, after = skewed_router_cv(make, rate, args.steps, args.skew)
        print(f"rate {rate:g}: load CV {before:.3f} before -> {after:.3f} after {args.steps} steps")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
