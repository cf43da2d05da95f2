"""msrun worker (2 ranks, dp=2 ep=2): dynamic expert placement is invisible to the math, moves weights and both
AdamW moments intact, survives checkpoint / resume, and balances a skewed router. One launch, four parts:

A. Two identical EP models (same seed, same skewed router, same batches). Model B's experts of both MoE layers
   are re-placed after step 2 by fixed permutations (moves across ranks and within a rank); right after the move
   every logical expert's weights and both Adam moments must equal model A's bit for bit; then losses and every
   gradient (expert gradients compared per logical expert) and, after the last step, every parameter and moment
   must match model A within the EP-test tolerance.
B. B's state (non-identity placement) is saved with the checkpoint manager and loaded into A (identity placement):
   A's tables become B's, and one more step gives bit-identical losses.
C. The trainer with moe.expert_placement on (interval 2, threshold 0.08) on a skewed router, 6 steps, checkpoints
   at 4 and 6 (metrics.jsonl / expert_load.jsonl give the device-load CV before / after the first migration).
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

T0 = time.time()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    import mindspore as ms
    from mindspore import Tensor
    ms.set_device("CPU")
    from pangu_ms.train.mf import ensure_mindformers
    ensure_mindformers(os.environ.get("LOCAL_DEFAULT_PATH", "/tmp/mflog"))
    ms.set_context(mode=ms.GRAPH_MODE)
    from pangu_ms.config import load_config
    from pangu_ms.data.synthetic import SyntheticSampler
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.parallel.grads import expert_param_names
    from pangu_ms.parallel.placement_executor import ExpertPlacement, _world_all_gather
    from pangu_ms.parallel.runtime import setup_parallel
    from pangu_ms.train import checkpoint as ck
    from pangu_ms.train.loop import Trainer
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep

    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu.yaml"), SETS + [f"train.output_dir={out_dir}/C"])
    rt = setup_parallel(cfg)
    res = {"rank": rt.rank, "world": rt.world}
    ep = rt.groups["ep"]
    world, E = rt.world, cfg.moe.num_experts
    el = E // ep.size

    def gather(x):
        return _world_all_gather(np.ascontiguousarray(x).reshape(-1), world).reshape((world,) + x.shape)

    def logical(local, table):
        """[E, ...] in logical expert order from every rank's local rows under ``table``."""
        g = gather(local)
        return np.stack([g[ep.ranks[q // el], q % el] for q in np.asarray(table)])

    # ------------------------------------------------------------------ A: invisible to the math
    sampler = SyntheticSampler(cfg.model.vocab_size, cfg.train.seq_length, cfg.train.global_batch_size,
                               rt.dp_rank, rt.dp_size, cfg.train.seed, 2)
    models = {}
    for key in ("A", "B"):
        net = build_model(cfg, hooks=rt.hooks)
        skew_router(net)
        opt = build_optimizer(net.trainable_params(), cfg.train)
        cell = TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight), opt, cfg.train.grad_clip,
                         rt.grad_reducer(net, opt), return_grads=True)
        place = ExpertPlacement(net, cell, ep.ranks, ep.index, world, enabled=False)
        models[key] = (net, opt, cell, ms.jit(cell.construct), place)
    experts = expert_param_names(models["A"][0])
    k_steps, migrate_after = 3, 2
    res["A"] = []

    def by_name(cell):
        return {p.name: p for p in cell.get_parameters()}

    def state_diff():
        """max relative difference per kind over weights / moments, logical order for experts."""
        pa, pb = by_name(models["A"][2]), by_name(models["B"][2])
        ta, tb = models["A"][4].tables(), models["B"][4].tables()
        worst = {"expert_w": 0.0, "expert_m": 0.0, "expert_v": 0.0, "dense": 0.0}
        exact = True
        for name, p in pa.items():
            base = name.split(".", 1)[1] if name.startswith(("adam_m.", "adam_v.")) else name
            if base in experts:
                layer = [i for i, j in enumerate(models["A"][0].moe_layer_ids) if f"layers.{j}.moe." in base]
                if not layer:       # the MTP layer's experts never move
                    a, b = p.asnumpy(), pb[name].asnumpy()
                else:
                    a, b = logical(p.asnumpy(), ta[layer[0]]), logical(pb[name].asnumpy(), tb[layer[0]])
                kind = {"adam_m": "expert_m", "adam_v": "expert_v"}.get(name.split(".")[0], "expert_w")
            else:
                a, b = p.asnumpy(), pb[name].asnumpy()
                kind = "dense"
            if a.dtype.kind == "f":
                worst[kind] = max(worst[kind], rel(b, a))
                exact = exact and bool(np.array_equal(a, b))
        return worst, exact

    for step in range(k_steps):
        ids = sampler.batch(step, 0)
        outs = {}
        for key in ("A", "B"):
            outs[key] = models[key][3](Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))
        n_out = 7
        la, lb = float(outs["A"][0].asnumpy()), float(outs["B"][0].asnumpy())
        ta, tb = models["A"][4].tables(), models["B"][4].tables()
        gworst = 0.0
        for p, ga, gb in zip(models["A"][1].parameters, outs["A"][n_out:], outs["B"][n_out:]):
            a, b = ga.asnumpy(), gb.asnumpy()
            if p.name in experts:
                layer = [i for i, j in enumerate(models["A"][0].moe_layer_ids) if f"layers.{j}.moe." in p.name]
                if layer:
                    a, b = logical(a, ta[layer[0]]), logical(b, tb[layer[0]])
            gworst = max(gworst, rel(b, a))
        entry = {"step": step, "loss_a": la, "loss_b": lb, "loss_rel": abs(la - lb) / abs(la), "grad_rel": gworst,
                 "load_equal": bool(np.array_equal(outs["A"][4].asnumpy(), outs["B"][4].asnumpy())),
                 "tables_b": tb.tolist()}
        if step + 1 == migrate_after:
            models["B"][4].migrate({0: PERMS[0], 1: PERMS[1]})
            worst, exact = state_diff()
            res["after_move"] = {"worst": worst, "exact": exact, "tables": models["B"][4].tables().tolist(),
                                 "local_b0": by_name(models["B"][2])[
                                     f"layers.{models['B'][0].moe_layer_ids[0]}.moe.experts.w_gate_up"]
                                 .asnumpy()[0, :2, :2].tolist()}
        res["A"].append(entry)
    res["final_state"] = state_diff()[0]

    # ------------------------------------------------------------------ B: checkpoint under another placement
    local = ck.local_parameter_names(models["B"][2], experts)
    mgr = ck.CheckpointManager(os.path.join(out_dir, "B"), rt.rank, world, local, barrier=rt.barrier,
                               all_sum=lambda x: ms.ops.AllReduce()(Tensor(np.asarray(x, np.float32))).asnumpy(),
                               log=lambda line: None)
    path = mgr.save(models["B"][2], k_steps)
    before = models["A"][4].tables().tolist()
    ck.load_checkpoint(models["A"][2], path, rt.rank)
    models["A"][4].read_tables()
    ids = sampler.batch(k_steps, 0)
    la = float(models["A"][3](Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))[0].asnumpy())
    lb = float(models["B"][3](Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))[0].asnumpy())
    res["ckpt"] = {"tables_before": before, "tables_after": models["A"][4].tables().tolist(),
                   "tables_b": models["B"][4].tables().tolist(), "loss_a": la, "loss_b": lb}
    res["time_ab_s"] = time.time() - T0
    print(f"parts A+B done after {res['time_ab_s']:.0f} s", flush=True)

    # ------------------------------------------------------------------ C: the trainer, skewed router
    tr = Trainer(cfg, runtime=rt, progress=False)
    skew_router(tr.net)
    summary = tr.train()
    res["C"] = {"losses": summary["losses"], "history": tr.placement.history,
                "tables": tr.placement.tables().tolist(), "pred": tr.placement.predictor.pred.tolist()}
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
