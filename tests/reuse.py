"""One compiled Trainer for several runs of the same config (they differ only in ``train.output_dir``): after a
run, ``fresh_run`` puts it back to its state right after construction (``snapshot``) and points it at the next
directory, so that the next run is the run a newly built Trainer would do, without compiling its step again."""
import dataclasses
import os


def snapshot(tr) -> dict:
    """Every parameter of the trainer's step cell (weights, AdamW moments, step counters)."""
    return {p.name: p.asnumpy().copy() for p in tr.step_cell.get_parameters()}


def fresh_run(tr, state: dict, output_dir: str) -> None:
    """Trainer ``tr`` as if just built for ``output_dir``: every parameter back to ``state`` (its ``snapshot``
    right after construction), nothing resumed yet, the checkpoint manager on the new directory."""
    from mindspore import Tensor
    from pangu_ms.train import checkpoint as ck
    assert snapshot(tr).keys() == state.keys()
    ck.assign_parameters(tr.step_cell, {n: Tensor(v) for n, v in state.items()})
    tr.cfg = dataclasses.replace(tr.cfg, train=dataclasses.replace(tr.cfg.train, output_dir=output_dir))
    tr.run_dir = os.path.abspath(output_dir)
    os.makedirs(tr.run_dir, exist_ok=True)
    tr.start_step, tr.skipped_before = 0, 0
    tr.checkpoints = tr._checkpoint_manager()
