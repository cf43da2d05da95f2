"""msrun worker: several pangu_ms training runs in sequence in one launch, each the ``Trainer`` run/train.py runs
(stage pretrain). argv[1] is a JSON object ``{"recipe": path, "sets": [key=value, ...], "runs": [{"output_dir":
dir, "stop_after": N or null}, ...]}``: the runs differ only in their output directory. One Trainer (one compiled
step) serves all of them: before each run after the first it is put back to its freshly initialised state and
pointed at the next directory (``fresh_run``). Every run writes its own train.log, metrics.jsonl and checkpoints/;
each rank prints one ``RESULT {json}`` line with the losses of every run."""
import dataclasses
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snapshot(tr) -> dict:
    """Every parameter of the trainer's step cell (weights, AdamW moments, step counters)."""
    return {p.name: p.asnumpy().copy() for p in tr.step_cell.get_parameters()}


def fresh_run(tr, state: dict, output_dir: str) -> None:
    """Trainer ``tr`` as if just built for ``output_dir``: every parameter back to ``state`` (its ``snapshot``
    right after construction), nothing resumed yet, the checkpoint manager on the new directory."""
    from mindspore import Tensor
    from pangu_ms.train import checkpoint as ck
    ck.assign_parameters(tr.step_cell, {n: Tensor(v) for n, v in state.items()})
    assert snapshot(tr).keys() == state.keys()
    tr.cfg = dataclasses.replace(tr.cfg, train=dataclasses.replace(tr.cfg.train, output_dir=output_dir))
    tr.run_dir = os.path.abspath(output_dir)
    os.makedirs(tr.run_dir, exist_ok=True)
    tr.start_step, tr.skipped_before = 0, 0
    tr.checkpoints = tr._checkpoint_manager()


def main():
    spec = json.loads(sys.argv[1])
    import mindspore as ms
    ms.set_device("CPU")
    from pangu_ms.config import load_config
    from pangu_ms.train.loop import Trainer

    runs = spec["runs"]
    cfg = load_config(os.path.join(ROOT, spec["recipe"]), spec["sets"] + [f"train.output_dir={runs[0]['output_dir']}"])
    tr = Trainer(cfg, progress=False)
    initial = snapshot(tr)
    done = []
    for i, run in enumerate(runs):
        if i:
            fresh_run(tr, initial, run["output_dir"])
        summary = tr.train(stop_after=run.get("stop_after"))
        done.append({"output_dir": tr.run_dir, "start_step": tr.start_step, "losses": summary["losses"]})
    print("RESULT " + json.dumps({"rank": tr.rt.rank, "world": tr.rt.world, "runs": done}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
