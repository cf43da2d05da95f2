"""Expert + data parallelism under msrun on CPU, against the single-process run.

* 2 ranks, dp=2 ep=2 (the EP group is the two DP ranks), hierarchical all-to-all with ranks_per_node=1 (two
  emulated nodes) *and* a flat-dispatcher copy, both trained 3 steps next to the single-process reference of the
  same global batch (tiny_cpu with 2 layers): loss, reduced gradients, grad norm, parameters; hierarchical ==
  flat; EP-group aux loss == its numpy reference over the union of the group's tokens.
* 4 ranks, dispatcher level (no full model): 2 emulated nodes x 2 ranks (intra-node all-to-all and inter-node
  gather on sub-groups), and EP groups {0,1},{2,3} with expert replicas {0,2},{1,3} through the fused gradient
  reducer and the aux-statistics reducer.

Each worker prints one ``RESULT {json}`` line per rank into ``<log_dir>/worker_<rank>.log``. The 4-rank check
is in test_msrun_four_ranks.py (the one 4-rank launch of the distributed tests).
"""
from tests.distributed.launch import launch


def test_ep2_dp2_flat_and_hierarchical_match_single_process(tmp_path):
    # with the aux-loss-free expert bias on: its update uses the load of the global batch
    res, wall, rc = launch(2, "ep_worker.py", ["--scenario", "hier", "--set", "moe.expert_bias=true",
                                               "--set", "moe.expert_bias_update_rate=0.01"], tmp_path)
    # results were printed before teardown; a teardown crash would still be a failure
    assert rc == 0
    for r, out in res.items():
        print(f"rank {r}: {out['describe']}")
        print(f"  times {out['times']}")
        vol = out["comm_volume"]
        print("  comm bytes/step (fwd+bwd, MoE layers of this EP group): " + ", ".join(
            f"{k}: inter {v['inter_node']} intra {v['intra_node']}" for k, v in vol.items() if k != "meta"))
        assert out["world"] == 2
        for entry in out["steps"]:
            for key in ("dist", "flat"):        # dist = hierarchical
                d = entry[key]
                print(f"  step {entry['step']} {key:4s}: loss_rel {d['loss_rel']:.2e} grad_rel {d['grad_rel']:.2e} "
                      f"(max-abs {d['grad_rel_maxabs']:.2e}, {d['grad_worst']}) param_rel {d['param_rel']:.2e} "
                      f"(max-abs {d['param_rel_maxabs']:.2e}) norm_rel {d['norm_rel']:.2e}")
                assert d["loss_rel"] <= 1e-6 and d["lm_rel"] <= 1e-6 and d["mtp_rel"] <= 1e-6
                assert d["norm_rel"] <= 1e-6
                assert d["param_rel"] <= 1e-6 and d["param_rel_maxabs"] <= 2e-6
                # per-tensor Frobenius relative error; norm gains' gradients are sums over all tokens with
                # cancellation and sit at ~1e-6 (fp32 summation order: reference masked-dense vs EP per-group)
                assert d["grad_rel"] <= 3e-6, d
                assert abs(d["aux"] - d["aux_ref_model"]) <= 1e-6 * d["aux_ref_model"]
        step0 = out["steps"][0]["dist"]
        assert step0["aux_np_rel"] <= 1e-6, step0
        # the EP group is both ranks here: its union is the global batch, and it differs from the micro-batch scope
        aux = out["aux_np"]
        assert abs(aux["group"] - aux["global"]) <= 1e-12 and abs(aux["micro"] - aux["group"]) > 1e-6
        hv = out["hier_vs_flat_max_abs"]
        print(f"  hierarchical vs flat max abs diff: {hv}")
        assert hv["outputs_and_grads"] <= 1e-6 and hv["params"] <= 1e-6
        assert vol["flat_exact"]["inter_node"] > 0 and vol["hier_exact"]["inter_node"] > 0
    # both ranks agree on the global numbers
    assert res[0]["steps"][-1]["dist"]["loss"] == res[1]["steps"][-1]["dist"]["loss"]
    # expert bias: identical on both ranks, equal to the single-process run's, and actually moved
    bias = {r: out["expert_bias"] for r, out in res.items()}
    assert bias[0]["dist"] == bias[1]["dist"] == bias[0]["ref"] == bias[0]["flat"], bias
    assert max(abs(v) for row in bias[0]["dist"] for v in row) > 0, bias
