"""msrun worker (4 ranks): the EP dispatchers, gradient reducer and aux-statistics reducer on sub-groups,
against single-process references computed in the same process.

Layout A: dp=4, ep=4, hierarchical_alltoall with ranks_per_node=2 -> 2 emulated nodes of 2 ranks: inner groups
{0,1},{2,3} (intra-node AllToAll over AllReduce, a sub-group), outer groups {0,2},{1,3} (AllGather /
ReduceScatter over AllReduce). Flat (world AllToAll over AllGather) and hierarchical dispatch of random routed
tokens: y, d/dx, d/dw (gate weights), d/dW (local experts) vs the single-process MaskedDense dispatcher on the
global token set; hierarchical vs flat.
Layout B: dp=4, ep=2 -> EP groups {0,1},{2,3}, expert replicas {0,2},{1,3}: flat dispatch on a sub-group, then
FusedGradReducer (dense grads: mean over 4 ranks; expert grads: sum over replicas / 4) and the global grad norm
vs the single-process gradient of the mean loss; StatsReducer over the EP group vs numpy sums.
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

T0 = time.time()
E, K, D, F, T = 8, 2, 16, 8, 8


class Init:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape):
        return (self.rng.standard_normal(shape) * 0.2).astype(np.float32)


def routing(world):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((world * T, D)).astype(np.float32)
    idx = np.stack([rng.choice(E, K, replace=False) for _ in range(world * T)]).astype(np.int32)
    w = rng.uniform(0.2, 1.5, (world * T, K)).astype(np.float32)
    r = rng.standard_normal((world * T, D)).astype(np.float32)
    return x, idx, w, r


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def results(inited=False):
    """This rank's results of layouts A and B (``inited``: the cluster is up already, e.g. another worker of the
    same launch ran first)."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    from mindspore.communication import get_group_size, get_rank, init
    if not inited:
        ms.set_device("CPU")
        init()
    rank, world = get_rank(), get_group_size()
    from pangu_ms.backend import get_backend
    from pangu_ms.config import load_config
    from pangu_ms.moe.dispatcher import MaskedDenseDispatcher
    from pangu_ms.moe.experts import RoutedExperts
    from pangu_ms.parallel.aux_reduce import StatsReducer
    from pangu_ms.parallel.dims import validate_layout
    from pangu_ms.parallel.ep_dispatcher import FlatEPDispatcher, HierarchicalEPDispatcher
    from pangu_ms.parallel.grads import FusedGradReducer
    from pangu_ms.parallel.runtime import build_groups
    be = get_backend("cpu")
    res = {"rank": rank, "world": world}
    x, idx, w, r = routing(world)
    mine = slice(rank * T, (rank + 1) * T)

    class Block(nn.Cell):
        def __init__(self, experts, disp, dense=None):
            super().__init__()
            self.experts, self.disp = experts, disp
            self.dense = dense

        def construct(self, x, idx, w, r):
            y, _ = self.disp(x, idx, w, self.experts)
            if self.dense is not None:
                y = ops.matmul(y, self.dense)
            return (y * r).sum(), y

    def run(block, xs, ids, ws, rs, scale=1.0):
        params = block.trainable_params()
        fn = ms.value_and_grad(block, grad_position=(0, 2), weights=params, has_aux=True)

        def f(a, b, c, d):
            (loss, y), (gin, gw) = fn(a, b, c, d)
            return loss, y, gin, gw
        loss, y, (dx, dw), gw = ms.jit(f)(Tensor(xs), Tensor(ids), Tensor(ws), Tensor(rs * scale))
        return float(loss.asnumpy()), y.asnumpy(), dx.asnumpy(), dw.asnumpy(), [g.asnumpy() for g in gw]

    def cfg_for(*sets):
        return load_config(os.path.join(ROOT, "yaml/tiny_cpu.yaml"),
                           ["moe.num_experts=8", "train.global_batch_size=4", "parallel.micro_batch_size=1"] + list(sets))

    # ------------------------------------------------------------------ layout A: flat + hierarchical, EP = world
    cfg = cfg_for("parallel.dp=4", "parallel.ep=4", "parallel.hierarchical_alltoall=true",
                  "parallel.ranks_per_node=2")
    dims = validate_layout(cfg, world)
    g = build_groups(dims, rank, world, hierarchical=True)
    res["A_groups"] = {k: v.ranks for k, v in g.items()}
    el = E // 4
    first = dims.experts_of(rank).start
    ref = Block(RoutedExperts(E, D, F, Init(1), be), MaskedDenseDispatcher(E, K))
    _, y_ref, dx_ref, dw_ref, gw_ref = run(ref, x, idx, w, r)
    out = {}
    for name, disp in (("flat", FlatEPDispatcher(E, K, g["ep"])),
                       ("hier", HierarchicalEPDispatcher(E, K, g["inner"], g["outer"]))):
        blk = Block(RoutedExperts(E, D, F, Init(1), be, local=(first, el)), disp)
        _, y, dx, dw, gw = run(blk, x[mine], idx[mine], w[mine], r[mine])
        out[name] = (y, dx, dw, gw)
        res[f"A_{name}"] = {"y": rel(y, y_ref[mine]), "dx": rel(dx, dx_ref[mine]), "dw": rel(dw, dw_ref[mine]),
                            "dW": max(rel(a, b[first:first + el]) for a, b in zip(gw, gw_ref))}
    res["A_hier_vs_flat_max_abs"] = max(float(np.max(np.abs(a - b))) for a, b in
                                        zip(out["hier"][:3] + tuple(out["hier"][3]),
                                            out["flat"][:3] + tuple(out["flat"][3])))

    # ------------------------------------------------------------------ layout B: EP groups {0,1},{2,3}
    cfg = cfg_for("parallel.dp=4", "parallel.ep=2")
    dims = validate_layout(cfg, world)
    g = build_groups(dims, rank, world)
    res["B_groups"] = {k: v.ranks for k, v in g.items()}
    el = E // 2
    first = dims.experts_of(rank).start
    dense0 = Init(3).normal((D, D))
    # reference: objective = mean over the 4 ranks of the per-rank sums
    ref = Block(RoutedExperts(E, D, F, Init(1), be), MaskedDenseDispatcher(E, K),
                Parameter(Tensor(dense0), name="dense"))
    _, _, _, _, gref = run(ref, x, idx, w, r, scale=1.0 / world)
    params_ref = [p.name for p in ref.trainable_params()]
    blk = Block(RoutedExperts(E, D, F, Init(1), be, local=(first, el)), FlatEPDispatcher(E, K, g["ep"]),
                Parameter(Tensor(dense0), name="dense"))
    params = blk.trainable_params()
    _, y, _, _, graw = run(blk, x[mine], idx[mine], w[mine], r[mine])
    expert_names = {p.name for p in blk.experts.trainable_params()}
    red = FusedGradReducer(params, expert_names, g["dp_cp"], g["expert_dp"], g["ep"], dims.dp * dims.cp)

    def reduce_fn(*gs):
        out_ = red(gs)
        return out_, ops.sqrt(red.global_sq_norm(out_))
    reduced, norm = ms.jit(reduce_fn)(*[Tensor(a) for a in graw])
    by = dict(zip(params_ref, gref))
    worst = 0.0
    for p, gr in zip(params, reduced):
        want = by[p.name]
        if p.name in expert_names:
            want = want[first:first + el]
        worst = max(worst, rel(gr.asnumpy(), want))
    res["B_grads_rel"] = worst
    res["B_norm_rel"] = abs(float(norm.asnumpy()) - float(np.sqrt(sum((a.astype(np.float64) ** 2).sum()
                                                                      for a in gref)))) / float(
        np.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in gref)))
    # aux statistics over the EP group
    rng = np.random.default_rng(11)
    cnt = rng.integers(0, 9, (world, E)).astype(np.float32)
    ps = rng.uniform(0, 3, (world, E)).astype(np.float32)
    sr = StatsReducer(g["ep"])

    def stats_fn(a, b, c):
        return sr(a, b, c)
    c2, p2, n2 = ms.jit(stats_fn)(Tensor(cnt[rank]), Tensor(ps[rank]), Tensor(np.float32(T * (rank + 1))))
    grp = list(g["ep"].ranks)
    res["B_stats_ok"] = bool(np.allclose(c2.asnumpy(), cnt[grp].sum(0), rtol=0, atol=0)
                             and np.allclose(p2.asnumpy(), ps[grp].sum(0), rtol=1e-6)
                             and float(n2.asnumpy()) == float(sum(T * (q + 1) for q in grp)))
    res["total_s"] = time.time() - T0
    return res


def main():
    print("RESULT " + json.dumps(results()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
