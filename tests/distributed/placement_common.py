"""What the placement msrun workers (placement_worker.py, placement_worker4.py) share: the start-up (MindSpore on
CPU, tiny_cpu.yaml with the worker's overrides, the parallel runtime and its Trainer), the gather of every rank's
expert rows into logical expert order, and the load of a checkpoint into a one-process model."""
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start(mode: str, sets: list, out_dir: str):
    """MindSpore on CPU in ``mode`` ("GRAPH_MODE" / "PYNATIVE_MODE"; MindFormers' logs under LOCAL_DEFAULT_PATH),
    the config tiny_cpu.yaml + ``sets`` writing to ``out_dir``, its runtime and a Trainer on it: (cfg, rt, tr)."""
    import mindspore as ms
    ms.set_device("CPU")
    from pangu_ms.train.mf import ensure_mindformers
    ensure_mindformers(os.environ.get("LOCAL_DEFAULT_PATH", "/tmp/mflog"))
    ms.set_context(mode=getattr(ms, mode))
    from pangu_ms.config import load_config
    from pangu_ms.parallel.runtime import setup_parallel
    from pangu_ms.train.loop import Trainer
    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu.yaml"), sets + [f"train.output_dir={out_dir}"])
    rt = setup_parallel(cfg)
    return cfg, rt, Trainer(cfg, runtime=rt, progress=False)


def logical_rows(local, table, rt):
    """[E, ...] in logical expert order from every rank's local expert rows ``local`` under placement ``table``."""
    from pangu_ms.parallel.placement_executor import _world_all_gather
    ep, world = rt.groups["ep"], rt.world
    el = len(table) // ep.size
    g = _world_all_gather(np.ascontiguousarray(local).reshape(-1), world).reshape((world,) + local.shape)
    return np.stack([g[ep.ranks[q // el], q % el] for q in np.asarray(table)])


def one_process_state(cfg, path) -> dict:
    """Every parameter and AdamW moment of a one-process model (no EP, no placement) after loading checkpoint
    ``path`` into it."""
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.train import checkpoint as ck
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep
    net1 = build_model(cfg, seed=5)
    one = TrainStep(CausalLMLoss(net1, cfg.model.mtp_loss_weight),
                    build_optimizer(net1.trainable_params(), cfg.train), cfg.train.grad_clip)
    ck.load_checkpoint(one, path)
    return {q.name: q.asnumpy() for q in one.get_parameters()}
