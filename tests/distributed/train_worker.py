"""msrun worker: several pangu_ms training runs in sequence in one launch, each the ``Trainer`` run/train.py runs
(stage pretrain). argv[1] is a JSON object ``{"recipe": path, "sets": [key=value, ...], "runs": [{"output_dir":
dir, "stop_after": N or null, "sets": [...] (optional)}, ...]}``: the runs differ only in their output directory.
One Trainer (one compiled step) serves all of them: before each run after the first it is put back to its freshly
initialised state and pointed at the next directory (tests/reuse.py); a run with its own ``sets`` (appended to the
common ones) gets a Trainer (and a compile) of its own. Every run writes its own train.log, metrics.jsonl and checkpoints/;
each rank prints one ``RESULT {json}`` line with the losses of every run."""
import json
import os
import sys

from tests.reuse import fresh_run, snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        if run.get("sets"):
            tr = Trainer(load_config(os.path.join(ROOT, spec["recipe"]), spec["sets"] + run["sets"]
                                     + [f"train.output_dir={run['output_dir']}"]), progress=False)
        elif i:
            fresh_run(tr, initial, run["output_dir"])
        summary = tr.train(stop_after=run.get("stop_after"))
        done.append({"output_dir": tr.run_dir, "start_step": tr.start_step, "losses": summary["losses"]})
    print("RESULT " + json.dumps({"rank": tr.rt.rank, "world": tr.rt.world, "runs": done}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
