"""msrun worker: expert/data-parallel training vs the single-process run of the same global batch.

Launched by tests/distributed/test_msrun_ep.py (``msrun --worker_num=N ... python ep_worker.py --scenario S``).
Every rank builds (1) the single-process reference model (no collectives) and trains it on the *global* batch,
(2) the distributed model with ``rt.hooks`` on its micro-batch, and compares after each of ``--steps`` steps:
loss, reduced gradients (before clipping), grad norm and parameters (expert tensors against the reference
slice this rank owns). It also checks the EP-group aux loss against a numpy reference over the union of the
group's tokens (router statistics recorded from a PyNative forward of the reference model), and, for
hierarchical scenarios, trains a flat-dispatcher copy and compares it with the hierarchical one.
Each rank prints one ``RESULT {json}`` line; the pytest side asserts on them.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

T0 = time.time()
SCENARIOS = {
    # name: overrides on yaml/tiny_cpu.yaml (world size from msrun)
    "flat": ["parallel.dp=2", "parallel.ep=2"],
    "hier": ["parallel.dp=2", "parallel.ep=2", "parallel.hierarchical_alltoall=true", "parallel.ranks_per_node=1"],
    "hier4": ["parallel.dp=4", "parallel.ep=4", "parallel.hierarchical_alltoall=true", "parallel.ranks_per_node=2"],
    "dp4ep2": ["parallel.dp=4", "parallel.ep=2"],
}
# num_layers 2 (1 dense + 1 MoE, + the MoE MTP layer) keeps graph compilation short. adam_eps 1e-3: AdamW's
# update lr*m/(sqrt(v)+eps) has slope up to lr/(4 eps) in g near |g| ~ eps, so with eps=1e-8 fp32 rounding noise
# (~1e-7 of the largest gradient) in near-zero gradient elements moves parameters by up to ~lr (measured: 1e-3
# relative after one step, for the single-process run against itself with a different summation order just as for
# EP); eps=1e-3 bounds the slope to lr/eps, so the parameters test the parallel path, not the optimizer's
# conditioning. Run with --set train.adam_eps=1e-8 to see the recipe value.
COMMON = ["model.num_layers=2", "train.seq_length=16", "train.global_batch_size=4", "train.steps=3",
          "train.warmup_steps=1", "train.lr=1e-2", "train.min_lr=1e-3", "train.adam_eps=1e-3"]


def rel(a, b):
    """(||a-b|| / ||b||, max|a-b| / max|b|) of one tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)),
            float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))


class Recorder:
    """Wraps a LoadBalancingLoss in PyNative and stores (mask, probs) of every call."""

    def __init__(self):
        self.calls = []

    def wrap(self, inner):
        from mindspore import nn
        rec = self

        class _Rec(nn.Cell):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def construct(self, mask, probs, batch):
                rec.calls.append((mask.asnumpy().astype(np.float64), probs.asnumpy().astype(np.float64), batch))
                return self.inner(mask, probs, batch)
        return _Rec()


def numpy_aux(calls, seqs, e, k, coeff):
    """Aux loss (summed over MoE layers) of the token union of sequences ``seqs`` from recorded statistics."""
    total = 0.0
    for mask, probs, batch in calls:
        s = mask.shape[0] // batch
        m = mask.reshape(batch, s, e)[seqs].reshape(-1, e)
        p = probs.reshape(batch, s, e)[seqs].reshape(-1, e)
        n = m.shape[0]
        f = m.sum(0) * e / (k * n)
        total += coeff * float((f * p.sum(0) / n).sum())
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-flat-copy", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()

    import mindspore as ms
    from mindspore import Tensor, ops
    ms.set_device("CPU")
    from pangu_ms.train.mf import ensure_mindformers
    ensure_mindformers(os.environ.get("LOCAL_DEFAULT_PATH", "/tmp/mflog"))
    ms.set_context(mode=ms.PYNATIVE_MODE)           # ms.jit compiles the steps; the recording pass is PyNative
    from pangu_ms.config import load_config
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.parallel.comm import single_group
    from pangu_ms.parallel.ep_dispatcher import comm_volume
    from pangu_ms.parallel.runtime import MoEHooks, setup_parallel
    from pangu_ms.train.step import TrainStep
    from pangu_ms.train.optim import build_optimizer

    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu.yaml"), COMMON + SCENARIOS[args.scenario]
                      + [f"parallel.micro_batch_size={4 // int(SCENARIOS[args.scenario][0].split('=')[1])}"]
                      + args.overrides)
    rt = setup_parallel(cfg)
    t_init = time.time() - T0
    res = {"scenario": args.scenario, "rank": rt.rank, "world": rt.world, "describe": rt.describe()}
    e, k, coeff = cfg.moe.num_experts, cfg.moe.top_k, cfg.moe.aux_loss_coeff
    B, S = cfg.train.global_batch_size, cfg.train.seq_length
    clip = cfg.train.grad_clip
    first, count = rt.hooks.local_experts

    # ---------------------------------------------------------------- models
    ref = build_model(cfg)
    net = build_model(cfg, hooks=rt.hooks)
    nets = {"dist": net}
    if rt.hooks.hierarchical and not args.no_flat_copy:
        g = rt.groups
        flat_hooks = MoEHooks(cfg.moe, rt.hooks.local_experts, g["ep"], None, None, g["ep"], False)
        nets["flat"] = build_model(cfg, hooks=flat_hooks)

    # ---------------------------------------------------------------- data (identical on every rank)
    rng = np.random.default_rng(2024)
    batches = [rng.integers(0, cfg.model.vocab_size, (B, S + 1)).astype(np.int32) for _ in range(args.steps)]
    b = B // rt.dp_size
    mine = slice(rt.dp_rank * b, (rt.dp_rank + 1) * b)

    # ---------------------------------------------------------------- router statistics (PyNative, reference)
    rec = Recorder()
    moe_layers = [c for _, c in ref.cells_and_names() if type(c).__name__ == "MoELayer"]
    saved = [m.aux for m in moe_layers]
    for m in moe_layers:
        m.aux = rec.wrap(m.aux)
    x0 = batches[0]
    ref(Tensor(x0[:, :-1]), Tensor(x0[:, 1:]))
    for m, a in zip(moe_layers, saved):
        m.aux = a
    ep_ranks = rt.groups["ep"].ranks
    ep_dp = sorted({rt.dims.coord(r).dp for r in ep_ranks})
    group_seqs = np.concatenate([np.arange(d * b, (d + 1) * b) for d in ep_dp])
    aux_np_group = numpy_aux(rec.calls, group_seqs, e, k, coeff)
    aux_np_micro = numpy_aux(rec.calls, np.arange(mine.start, mine.stop), e, k, coeff)
    aux_np_global = numpy_aux(rec.calls, np.arange(B), e, k, coeff)

    # ---------------------------------------------------------------- comm volume from the real routing
    main_calls = [c for c in rec.calls]
    idx_by_member = []
    for r in ep_ranks:
        d = rt.dims.coord(r).dp
        per_layer = []
        for mask, _, batch in main_calls:
            s = mask.shape[0] // batch
            m = mask.reshape(batch, s, e)[d * b:(d + 1) * b].reshape(-1, e)
            per_layer.append(np.argsort(-m, axis=1, kind="stable")[:, :k])
        idx_by_member.append(per_layer)
    vol = comm_volume(idx_by_member, e, cfg.model.hidden_size, [rt.dims.node_of(r) for r in ep_ranks])
    res["comm_volume"] = vol

    # ---------------------------------------------------------------- steps
    ref_opt = build_optimizer(ref.trainable_params(), cfg.train)
    w = cfg.model.mtp_loss_weight
    ref_step = ms.jit(TrainStep(CausalLMLoss(ref, w), ref_opt, clip, None, return_grads=True).construct)
    steps, opts = {}, {}
    for key, n in nets.items():
        opts[key] = build_optimizer(n.trainable_params(), cfg.train)
        red = rt.grad_reducer(n, opts[key])
        steps[key] = ms.jit(TrainStep(CausalLMLoss(n, w), opts[key], clip, red, return_grads=True).construct)
    world_sum = ops.AllReduce()

    def dp_mean(v):
        # dp_cp == world in every scenario here
        return float(world_sum(Tensor(np.array([v], np.float32))).asnumpy()[0]) / rt.world

    expert_names = {p.name for _, c in net.cells_and_names() if type(c).__name__ == "RoutedExperts"
                    for p in c.get_parameters()}

    def compare(dist_params, grads_d, ref_params, grads_r):
        ref_by_name = {p.name: (p, g) for p, g in zip(ref_params, grads_r)}
        gmax, pmax, gmx, pmx = 0.0, 0.0, 0.0, 0.0
        worst_g = worst_p = ""
        for p, g in zip(dist_params, grads_d):
            rp, rg = ref_by_name[p.name]
            rg, rpv = rg.asnumpy(), rp.asnumpy()
            if p.name in expert_names:
                rg, rpv = rg[first:first + count], rpv[first:first + count]
            (dg, dgm), (dpv, dpm) = rel(g.asnumpy(), rg), rel(p.asnumpy(), rpv)
            gmx, pmx = max(gmx, dgm), max(pmx, dpm)
            if dg > gmax:
                gmax, worst_g = dg, p.name
            if dpv > pmax:
                pmax, worst_p = dpv, p.name
        return gmax, worst_g, pmax, worst_p, gmx, pmx

    res["steps"] = []
    t_steps = {}
    outs_all = {}
    for i, x in enumerate(batches):
        ids, lab = Tensor(x[:, :-1]), Tensor(x[:, 1:])
        t = time.time()
        ro = ref_step(ids, lab)
        t_steps.setdefault("ref", []).append(time.time() - t)
        n_out = 7
        r_loss, r_lm, r_mtp, r_aux, _, _, r_norm = [float(v.asnumpy()) if v.ndim == 0 else v for v in ro[:n_out]]
        r_grads = ro[n_out:]
        entry = {"step": i, "ref_loss": r_loss}
        for key, n in nets.items():
            t = time.time()
            do = steps[key](Tensor(x[mine, :-1]), Tensor(x[mine, 1:]))
            t_steps.setdefault(key, []).append(time.time() - t)
            loss, lm, mtp, aux = [float(v.asnumpy()) for v in do[:4]]
            norm = float(do[6].asnumpy())
            d_grads = do[n_out:]
            outs_all.setdefault(key, []).append(do)
            gl = dp_mean(loss)
            gmax, wg, pmax, wp, gmx, pmx = compare(opts[key].parameters, d_grads, ref_opt.parameters, r_grads)
            entry[key] = {"loss": gl, "loss_rel": abs(gl - r_loss) / abs(r_loss),
                          "lm_rel": abs(dp_mean(lm) - r_lm) / abs(r_lm),
                          "mtp_rel": abs(dp_mean(mtp) - r_mtp) / abs(r_mtp),
                          "aux": aux, "aux_ref_model": r_aux, "norm": norm, "ref_norm": r_norm,
                          "norm_rel": abs(norm - r_norm) / r_norm,
                          "grad_rel": gmax, "grad_worst": wg, "param_rel": pmax, "param_worst": wp,
                          "grad_rel_maxabs": gmx, "param_rel_maxabs": pmx}
            if i == 0:
                entry[key]["aux_np_group"] = aux_np_group
                entry[key]["aux_np_rel"] = abs(aux - aux_np_group) / aux_np_group
        res["steps"].append(entry)
    if "flat" in nets:
        # hierarchical vs flat: every output, gradient and the parameters after the steps
        hv = 0.0
        for a, c in zip(outs_all["dist"], outs_all["flat"]):
            for u, v in zip(a, c):
                hv = max(hv, float(np.max(np.abs(u.asnumpy() - v.asnumpy()))))
        pv = max(float(np.max(np.abs(p.asnumpy() - q.asnumpy())))
                 for p, q in zip(opts["dist"].parameters, opts["flat"].parameters))
        res["hier_vs_flat_max_abs"] = {"outputs_and_grads": hv, "params": pv}
    # aux-loss-free expert bias (when moe.expert_bias is on): the main-stack routers' bias after the steps
    res["expert_bias"] = {key: [n.layers[j].moe.router.expert_bias.asnumpy().tolist() for j in n.moe_layer_ids]
                          for key, n in {"ref": ref, **nets}.items() if cfg.moe.expert_bias}
    res["aux_np"] = {"group": aux_np_group, "micro": aux_np_micro, "global": aux_np_global,
                     "group_ranks": list(ep_ranks)}
    res["times"] = {"init_s": t_init, "first_step_s": {k2: v[0] for k2, v in t_steps.items()},
                    "steady_step_s": {k2: float(np.median(v[1:])) if len(v) > 1 else None
                                      for k2, v in t_steps.items()},
                    "total_s": time.time() - T0}
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
