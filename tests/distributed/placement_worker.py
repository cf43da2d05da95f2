"""msrun worker (2 ranks, dp=2 ep=2): dynamic expert placement is invisible to the math, moves weights and both
AdamW moments intact, survives checkpoint / resume, and balances a skewed router. One launch, one trainer, one
compiled training step (it also returns the reduced gradients), four parts:

A. Two steps under the identity placement, then step 3 twice from the same state: once as it is, once after both
   MoE layers' experts were re-placed by fixed permutations (moves across ranks and within a rank). Right after
   the move every logical expert's weights and both Adam moments must equal the state before it bit for bit; the
   loss and every gradient (expert gradients compared per logical expert) of the two step-3 runs, and every
   parameter and moment after them, must match within the EP-test tolerance.
B. That state (non-identity placement) is saved with the checkpoint manager (expert ranges and tables in the
   manifest, as the trainer saves), step 4 is run, the state restored, moved to yet another placement, and the
   checkpoint loaded: the tables return and step 4's loss is reproduced. Rank 0 also loads it into a one-process
   model (no EP, no placement): every weight and moment equals the logical-order state bit for bit.
C. Back to the initial state: the trainer with moe.expert_placement on (interval 2, threshold 0.08) on the skewed
   router trains 6 steps with checkpoints at 4 and 6 (metrics.jsonl / expert_load.jsonl give the device-load CV
   before / after the first migration, after step 2).
D. The same trainer, its step-6 checkpoint removed and its in-memory placement scrambled, resumes at step 4 and
   must reproduce C's losses of steps 5 and 6, its tables and its predictor exactly.
Each rank prints one ``RESULT {json}`` line.
"""
import json
import os
import shutil
import sys
import time

import numpy as np

from tests.distributed.placement_common import logical_rows, one_process_state, start

T0 = time.time()
SETS = ["parallel.dp=2", "parallel.ep=2", "parallel.micro_batch_size=2", "data.source=synthetic",
        "model.num_layers=3", "model.mtp_depth=0", "train.seq_length=32", "train.global_batch_size=4", "train.warmup_steps=1",
        "train.lr=1e-2", "train.min_lr=1e-3", "train.adam_eps=1e-3", "train.log_interval=1",
        "train.eval_interval=100", "train.eval_batches=0", "train.sample_tokens=0", "train.peak_flops=1e11",
        "train.steps=6", "train.save_interval=4", "train.keep_last=3",
        "moe.expert_placement=true", "moe.placement_interval=2", "moe.placement_threshold=0.08"]
PERMS = [np.array([5, 0, 7, 2, 1, 4, 3, 6], np.int32), np.array([3, 6, 0, 5, 7, 1, 2, 4], np.int32)]
SKEW_EXPERTS, SKEW = (0, 1, 2, 3), 20.0      # all on EP rank 0 under the identity placement


def skew_router(net):
    """Router rows of SKEW_EXPERTS scaled x SKEW in every main-stack MoE layer (their sigmoid scores saturate:
    most tokens pick two of them, all held by EP rank 0 under the identity placement)."""
    from mindspore import Tensor
    for i in net.moe_layer_ids:
        w = net.layers[i].moe.router.weight
        a = w.asnumpy()
        a[list(SKEW_EXPERTS)] *= SKEW
        w.set_data(Tensor(a))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main():
    out_dir = sys.argv[1]
    cfg, rt, tr = start("GRAPH_MODE", SETS, f"{out_dir}/C")
    import mindspore as ms
    from mindspore import Tensor
    from pangu_ms.parallel.grads import expert_param_names
    from pangu_ms.train import checkpoint as ck
    from pangu_ms.train.step import TrainStep

    res = {"rank": rt.rank, "world": rt.world}
    world, E = rt.world, cfg.moe.num_experts

    def logical(local, table):
        return logical_rows(local, table, rt)

    skew_router(tr.net)
    cell, place = tr.step_cell, tr.placement
    grads_step = TrainStep(tr.loss_cell, tr.optimizer, cfg.train.grad_clip, cell.reducer, return_grads=True)
    step_fn = ms.jit(grads_step.construct)
    tr._step = lambda x, y: step_fn(x, y)[:7]              # the trainer runs the same compiled graph
    experts = expert_param_names(tr.net)
    moe_ids = tr.net.moe_layer_ids
    n_out = 7

    def snapshot():
        return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}

    def restore(state):
        ck.assign_parameters(cell, {n: Tensor(v) for n, v in state.items()})
        place.read_tables()

    def layer_of(name):
        found = [i for i, j in enumerate(moe_ids) if f"layers.{j}.moe." in name]
        return found[0] if found else None

    def logical_state(state, tables):
        """Every tensor of ``state`` with expert rows in logical order (experts gathered from all ranks)."""
        out = {}
        for name, v in state.items():
            base = name.split(".", 1)[1] if name.startswith(("adam_m.", "adam_v.")) else name
            i = layer_of(base) if base in experts else None
            out[name] = logical(v, tables[i]) if i is not None else v
        return out

    def diff(a, b):
        worst = {"expert_w": 0.0, "expert_m": 0.0, "expert_v": 0.0, "dense": 0.0}
        exact = True
        for name, x in a.items():
            if x.dtype.kind != "f":
                continue
            base = name.split(".", 1)[1] if name.startswith(("adam_m.", "adam_v.")) else name
            kind = "dense" if base not in experts else \
                {"adam_m": "expert_m", "adam_v": "expert_v"}.get(name.split(".")[0], "expert_w")
            worst[kind] = max(worst[kind], rel(b[name], x))
            exact = exact and bool(np.array_equal(x, b[name]))
        return worst, exact

    def run(step):
        ids = tr.sampler.batch(step, 0)
        out = step_fn(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))
        grads = {p.name: g.asnumpy() for p, g in zip(tr.optimizer.parameters, out[n_out:])}
        tables = place.tables()
        grads = {n: logical(g, tables[layer_of(n)]) if n in experts and layer_of(n) is not None else g
                 for n, g in grads.items()}
        return float(out[0].asnumpy()), grads, out[4].asnumpy()

    # ------------------------------------------------------------------ A: invisible to the math
    initial = snapshot()
    res["A_losses"] = [run(0)[0], run(1)[0]]
    before = snapshot()
    loss_ref, grads_ref, load_ref = run(2)
    after_ref = logical_state(snapshot(), place.tables())
    restore(before)
    place.migrate({0: PERMS[0], 1: PERMS[1]})
    moved_state = logical_state(snapshot(), place.tables())
    worst, exact = diff(logical_state(before, np.stack([np.arange(E)] * 2)), moved_state)
    res["after_move"] = {"worst": worst, "exact": exact, "tables": place.tables().tolist()}
    loss_mig, grads_mig, load_mig = run(2)
    res["A"] = {"loss_ref": loss_ref, "loss_mig": loss_mig, "loss_rel": abs(loss_ref - loss_mig) / abs(loss_ref),
                "grad_rel": max(rel(grads_mig[n], g) for n, g in grads_ref.items()),
                "load_equal": bool(np.array_equal(load_ref, load_mig)),
                "final_state": diff(after_ref, logical_state(snapshot(), place.tables()))[0]}

    # ------------------------------------------------------------------ B: checkpoint under another placement
    local = ck.local_parameter_names(cell, experts)
    mgr = ck.CheckpointManager(os.path.join(out_dir, "B"), rt.rank, world, local, barrier=rt.barrier,
                               all_sum=lambda x: ms.ops.AllReduce()(Tensor(np.asarray(x, np.float32))).asnumpy(),
                               log=lambda line: None, experts=tr.checkpoints.experts,
                               placement_of=tr.checkpoints.placement_of)
    path = mgr.save(cell, 3)
    saved_tables = place.tables().tolist()
    saved = snapshot()
    saved_logical = logical_state(saved, place.tables())
    if rt.rank == 0:           # the same checkpoint in one process (no EP, no placement): logical experts
        one_state = one_process_state(cfg, path)
        res["one_process"] = {"names": sorted(one_state) == sorted(n for n in saved_logical if "placement" not in n),
                              "exact": all(np.array_equal(one_state[n], saved_logical[n]) for n in one_state)}
    loss4 = run(3)[0]
    restore(saved)
    place.migrate({0: PERMS[1], 1: PERMS[0]})
    other = place.tables().tolist()
    mgr.resume(cell)
    place.read_tables()
    res["ckpt"] = {"saved_tables": saved_tables, "other_tables": other, "loaded_tables": place.tables().tolist(),
                   "loss": loss4, "loss_after_load": run(3)[0]}
    res["time_ab_s"] = time.time() - T0
    print(f"parts A+B done after {res['time_ab_s']:.0f} s", flush=True)

    # ------------------------------------------------------------------ C: the trainer, skewed router
    restore(initial)
    summary = tr.train()
    res["C"] = {"losses": summary["losses"], "history": place.history,
                "tables": place.tables().tolist(), "pred": place.predictor.pred.tolist()}
    res["time_c_s"] = time.time() - T0
    # ------------------------------------------------------------------ D: resume from step 4
    # the same Trainer (its compiled step is reused): step 6's checkpoint removed, the in-memory state scrambled
    # (another placement with its weights and moments moved accordingly, a fresh predictor), so that everything
    # the resumed steps see has to come from the step-4 checkpoint
    from pangu_ms.parallel.placement_predictor import EMALoadPredictor
    rt.barrier()
    if rt.rank == 0:
        shutil.copy(os.path.join(out_dir, "C", "metrics.jsonl"), os.path.join(out_dir, "metrics_C.jsonl"))
        shutil.rmtree(ck.checkpoint_paths(os.path.join(out_dir, "C"), 6).directory)
    rt.barrier()
    tr.placement.migrate({0: PERMS[1], 1: PERMS[0]})
    tr.placement.predictor = EMALoadPredictor(cfg.moe.placement_theta)
    tr.placement.history = []
    scrambled = tr.placement.tables().tolist()
    summary2 = tr.train()
    res["D"] = {"start_step": tr.start_step, "losses": summary2["losses"], "history": tr.placement.history,
                "tables": tr.placement.tables().tolist(), "pred": tr.placement.predictor.pred.tolist(),
                "scrambled_tables": scrambled}
    res["total_s"] = time.time() - T0
    print("RESULT " + json.dumps(res, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
