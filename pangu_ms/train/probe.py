"""The project's training step compiled on a fixed random batch and timed per call: the probe of the simulator's
CPU calibration (``pangu_ms/sim/calibrate.py``, which receives it as ``step_factory``) and of the kernel
counter (``tools/count_kernels.py``)."""
from __future__ import annotations

import time

import numpy as np


def compiled_train_step(cfg, runtime=None):
    """The project's training step (PanguForCausalLM + TrainStep, graph mode, fp32) for ``cfg`` on a fixed
    random batch of the config's global batch x sequence length; returns a callable that runs one step and
    returns its wall time (the first call compiles).

    ``runtime``: the msrun runtime of the explicit path (``pangu_ms.parallel.runtime``): the model gets its MoE
    hooks (expert-parallel dispatcher, aux-loss scope), the step its gradient reducer, and this rank trains on its
    ``global / dp`` rows of the batch. None: one process."""
    import mindspore as ms
    from ..model import CausalLMLoss, build_model
    from .optim import build_optimizer
    from .step import TrainStep, compile_step

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_recursion_limit(10000)
    net = build_model(cfg, hooks=runtime.hooks if runtime is not None else None)
    opt = build_optimizer(net.trainable_params(), cfg.train)
    reducer = runtime.grad_reducer(net, opt) if runtime is not None else None
    step = compile_step(TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight), opt, cfg.train.grad_clip, reducer),
                        "graph")
    rng = np.random.default_rng(0)
    shape = (cfg.train.global_batch_size, cfg.train.seq_length)
    ids = ms.Tensor(rng.integers(0, cfg.model.vocab_size, shape).astype(np.int32))
    labels = ms.Tensor(rng.integers(0, cfg.model.vocab_size, shape).astype(np.int32))
    if runtime is not None:
        ids, labels = runtime.micro_batch(ids), runtime.micro_batch(labels)

    def run() -> float:
        t0 = time.perf_counter()
        step(ids, labels)[0].asnumpy()
        return time.perf_counter() - t0
    return run
