"""The one pipeline split (parallel/split.py): the recipe key, its validation, the cost-driven methods on
hand-computed costs, and the plan's stages following it."""
from __future__ import annotations

import pytest

from pangu_ms.config import ConfigError, from_dict
from pangu_ms.parallel.dims import layout_problems
from pangu_ms.parallel.split import ItemCosts, chunk_sizes, pipeline_split, split_problems
from pangu_ms.parallel.stages import assign_from_config


def cfg(num_layers=6, mtp_depth=1, pp=2, vpp=1, **parallel):
    return from_dict({"model": {"num_layers": num_layers, "num_dense_layers": num_layers, "mtp_depth": mtp_depth},
                      "moe": {"num_experts": 0},
                      "train": {"global_batch_size": 8},
                      "parallel": {"pp": pp, "vpp": vpp, **parallel}})


def test_balanced_is_chunk_sizes_and_the_plan_follows():
    c = cfg(num_layers=6, mtp_depth=1, pp=2, vpp=2)          # 7 items over 4 virtual stages
    split = pipeline_split(c)
    assert split.method == "balanced" and list(split.counts) == chunk_sizes(7, 4) == [2, 2, 2, 1]
    st = assign_from_config(c)
    assert [len(ch) for ch in st.chunks] == [2, 2, 2, 1] and st.chunks[-1] == ["mtp.0"]


def test_explicit_list_is_what_the_plan_runs():
    c = cfg(pipeline_split="explicit", layers_per_virtual_stage=[1, 6])
    st = assign_from_config(c)
    assert st.split == "explicit" and st.chunks == [["layers.0"], [f"layers.{i}" for i in range(1, 6)] + ["mtp.0"]]
    assert st.stage_of["layers.0"] == 0 and st.stage_of["layers.1"] == 1 and st.stage_of["lm_head"] == 1


@pytest.mark.parametrize("parallel, message", [
    ({"pipeline_split": "explicit"}, "parallel.layers_per_virtual_stage: required when parallel.pipeline_split"),
    ({"pipeline_split": "explicit", "layers_per_virtual_stage": [3, 3]},
     "parallel.layers_per_virtual_stage: sums to 6, but the model has 6 layers + 1 MTP = 7"),
    ({"pipeline_split": "explicit", "layers_per_virtual_stage": [7]},
     "parallel.layers_per_virtual_stage: 1 entries, but parallel.pp*vpp = 2*1 = 2 virtual stages"),
    ({"pipeline_split": "explicit", "layers_per_virtual_stage": [7, 0]},
     "parallel.layers_per_virtual_stage: every virtual stage needs >= 1 layer"),
    ({"layers_per_virtual_stage": [3, 4]},
     "parallel.layers_per_virtual_stage: [3, 4] is set, but parallel.pipeline_split is 'balanced'"),
])
def test_bad_split_is_named_by_layout_problems(parallel, message):
    c = cfg(**parallel)
    assert split_problems(c)[0].startswith(message)
    assert layout_problems(c)[0].startswith(message)
    with pytest.raises(ConfigError, match="^" + message.replace("*", r"\*").replace("[", r"\[").replace("+", r"\+")):
        assign_from_config(c)


def test_mtp_must_fit_the_last_stage():
    c = cfg(num_layers=6, mtp_depth=2, pipeline_split="explicit", layers_per_virtual_stage=[7, 1])
    assert split_problems(c) == ["parallel.layers_per_virtual_stage: the last virtual stage has 1 items, fewer "
                                 "than model.mtp_depth=2 (every MTP module sits on the last stage)"]
    # balanced: 8 items over 8 stages leaves one slot for two MTP modules
    assert split_problems(cfg(num_layers=6, mtp_depth=2, pp=4, vpp=2))[0].startswith("model.mtp_depth: 2 MTP")


@pytest.mark.parametrize("method", ["time_balanced", "memory_aware"])
def test_cost_methods_need_the_simulator(method):
    with pytest.raises(ConfigError, match=rf"^parallel.pipeline_split: '{method}' needs per-layer time and memory "
                                          r"costs from the simulator; run `tools/simulate.py estimate"):
        assign_from_config(cfg(pipeline_split=method))


def test_time_balanced_hand_computed_mtp_kept_on_the_last_stage():
    """Times of 6 layers + 2 MTP modules (head folded into mtp.0): [3, 1, 1, 1, 1, 1 | 2, 2]. Both MTP modules are
    one unit of 4 on the last stage. Over 2 stages: [3, 1, 1] | [1, 1, 1, (4)] = 5 | 7, [3, 1, 1, 1] | [1, 1, (4)]
    = 6 | 6 (the optimum), so 4 items per stage."""
    c = cfg(num_layers=6, mtp_depth=2, pipeline_split="time_balanced")
    split = pipeline_split(c, ItemCosts(time=[3.0, 1, 1, 1, 1, 1, 2, 2]))
    assert split.method == "time_balanced" and list(split.counts) == [4, 4]
    assert assign_from_config(c, ItemCosts(time=[3.0, 1, 1, 1, 1, 1, 2, 2])).chunks[-1] == [
        "layers.4", "layers.5", "mtp.0", "mtp.1"]


def test_memory_aware_hand_computed():
    """1F1B, 2 stages, device 0 keeps 2 micro-batches, device 1 one. 4 layers + no MTP, time 1 each, activation 1,
    no states. Time-balanced [2, 2]: device 0 = 2 x 2 = 4 > budget 3.5, so the fastest fitting split is [1, 3]
    (device 0: 2, device 1: 3)."""
    c = cfg(num_layers=4, mtp_depth=0, pipeline_split="memory_aware")
    costs = dict(time=[1.0] * 4, state_bytes=[0.0] * 4, act_bytes=[1.0] * 4, transient_bytes=[0.0] * 4,
                 devices=[[(0, 2.0)], [(1, 1.0)]])
    assert pipeline_split(c, ItemCosts(**costs, budget=4.0)).counts == (2, 2)
    assert pipeline_split(c, ItemCosts(**costs, budget=4.0)).method == "time_balanced"
    fitted = pipeline_split(c, ItemCosts(**costs, budget=3.5))
    assert fitted.counts == (1, 3) and fitted.method == "memory_aware"
    oom = pipeline_split(c, ItemCosts(**costs, budget=1.0))
    assert oom.counts == (2, 2) and oom.method == "time_balanced_oom"
