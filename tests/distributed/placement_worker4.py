"""msrun worker (4 ranks, dp=4 ep=4, 2 experts per rank): the executor across four ranks, without compiling a
training step (PyNative forward only). After a re-placement of both MoE layers (experts crossing between all four
ranks) every logical expert's weights and both AdamW moments are bit-identical to before, the forward loss is
unchanged, and a checkpoint saved under the new placement (the trainer's manager: ranges + tables) loads into a
one-process model as logical experts (rank 0). Each rank prints one ``RESULT {json}`` line."""
import json
import sys
import time

import numpy as np

from tests.distributed.placement_common import logical_rows, one_process_state, start

T0 = time.time()
SETS = ["parallel.dp=4", "parallel.ep=4", "parallel.micro_batch_size=1", "data.source=synthetic",
        "model.num_layers=3", "model.mtp_depth=0", "train.seq_length=16", "train.global_batch_size=4",
        "train.eval_batches=0", "train.sample_tokens=0", "train.peak_flops=1e11", "moe.expert_placement=true"]
PERMS = [np.array([7, 2, 4, 0, 6, 1, 3, 5], np.int32), np.array([1, 6, 3, 4, 0, 7, 5, 2], np.int32)]


def results(out_dir):
    """This rank's results (the one-process load on rank 0), the run writing to ``out_dir``."""
    cfg, rt, tr = start("PYNATIVE_MODE", SETS, out_dir)
    from mindspore import Tensor
    from pangu_ms.parallel.grads import expert_param_names
    from pangu_ms.train import checkpoint as ck

    world, E = rt.world, cfg.moe.num_experts
    el = E // rt.groups["ep"].size
    cell, place = tr.step_cell, tr.placement
    rng = np.random.default_rng(rt.rank)
    for p in cell.get_parameters():          # distinct AdamW moments per rank and expert (zero after init)
        if p.name.startswith(("adam_m.", "adam_v.")):
            p.set_data(Tensor(np.abs(rng.standard_normal(p.shape)).astype(np.float32)))
    experts = expert_param_names(tr.net)
    moe_ids = tr.net.moe_layer_ids

    def layer_of(name):
        base = name.split(".", 1)[1] if name.startswith(("adam_m.", "adam_v.")) else name
        found = [i for i, j in enumerate(moe_ids) if f"layers.{j}.moe." in base]
        return found[0] if found and base in experts else None

    def logical_state(tables):
        out = {}
        for p in cell.get_parameters():
            v, i = p.asnumpy(), layer_of(p.name)
            out[p.name] = logical_rows(v, tables[i], rt) if i is not None else v
        return out

    ids = tr.sampler.batch(0, 0)
    x, y = Tensor(ids[:, :-1]), Tensor(ids[:, 1:])

    def loss():
        return float(tr.loss_cell(x, y)[0].asnumpy())

    before, loss_before = logical_state(place.tables()), loss()
    place.migrate({0: PERMS[0], 1: PERMS[1]})
    after, loss_after = logical_state(place.tables()), loss()
    moved = [int(e) for e in np.nonzero(PERMS[0] // el != np.arange(E) // el)[0]]
    res = {"rank": rt.rank, "world": world, "loss_before": loss_before, "loss_after": loss_after,
           "exact": all(np.array_equal(before[n], after[n]) for n in before if "placement" not in n),
           "tables": place.tables().tolist(), "moved_layer0": moved}
    path = tr.checkpoints.save(cell, 1)
    if rt.rank == 0:
        got = one_process_state(cfg, path)
        res["one_process_exact"] = all(np.array_equal(got[n], after[n]) for n in got)
        res["manifest_placement"] = bool(ck.read_manifest(path)["experts"].get("placement"))
    res["total_s"] = time.time() - T0
    return res


def main():
    print("RESULT " + json.dumps(results(sys.argv[1]), default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
