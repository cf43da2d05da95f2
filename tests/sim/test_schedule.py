"""Stage split of the pipeline: time-balanced vs memory-aware partition (parallel/partition.py), the recipe's
``parallel.pipeline_split`` / ``parallel.layers_per_virtual_stage`` in the simulator, and the DeepSeek-V3 recipe. Small cases are computed by hand in the comments."""
from __future__ import annotations

import dataclasses
import itertools
import os
import random
import re

import pytest

from pangu_ms.config import ConfigError, from_dict, load_config
from pangu_ms.parallel import partition as part
from pangu_ms.sim import schedule
from pangu_ms.sim.estimate import Simulator, estimate
from pangu_ms.sim.hardware import load_hardware
from pangu_ms.sim.layout import resolve_layout

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
RDSV3 = os.path.join(ROOT, "yaml", "sim", "deepseek_v3_671b.yaml")


def device_bytes(bounds, states, acts, trans, devices):
    """Memory of every device for a split, written out directly (the definition the partition must respect)."""
    out = []
    for held in devices:
        used = sum(sum(states[a:e]) + mb * sum(acts[a:e]) for c, mb in held for a, e in [bounds[c]])
        out.append(used + max(max(trans[a:e]) for c, _ in held for a, e in [bounds[c]]))
    return out


def chunk_max(bounds, times):
    return max(sum(times[a:e]) for a, e in bounds)


# ------------------------------------------------------------------ in-flight micro-batches per device
def test_device_chunks_1f1b_interleaved_dualpipe():
    # 1F1B p=3, m=8: stage s holds min(m, p - s) micro-batches of its one chunk
    assert schedule.device_chunks("1f1b", 3, 8) == [[(0, 3.0)], [(1, 2.0)], [(2, 1.0)]]
    # interleaved p=2, v=2, m=8: stage 0 holds 2(p-1) + (v-1)p + 1 = 5 chunk-activations, stage 1 3; spread evenly
    assert schedule.device_chunks("interleaved", 2, 8, 2) == [[(0, 2.5), (2, 2.5)], [(1, 1.5), (3, 1.5)]]
    # DualPipe p=4, m=8: device d holds (p - d) of stage d and (d + 1) of stage p-1-d
    assert schedule.device_chunks("dualpipe", 4, 8) == [[(0, 4.0), (3, 1.0)], [(1, 3.0), (2, 2.0)],
                                                        [(2, 2.0), (1, 3.0)], [(3, 1.0), (0, 4.0)]]


# ------------------------------------------------------------------ memory-aware partition, hand-computed
def test_1f1b_three_stages_time_balanced_split_does_not_fit():
    """6 blocks of time 1, state 1 and activation 1 per micro-batch; 1F1B p=3, m=8 -> 3, 2, 1 micro-batches.

    Time-balanced [2, 2, 2]: device 0 = 2 + 3 x 2 = 8 > 7. With max chunk time 3: stage 0 can hold 1 block
    (1 + 3 = 4; 2 blocks = 8), stage 1 at most 2 (2 + 2 x 2 = 6; 3 blocks = 9), stage 2 at most 3 (3 + 3 = 6),
    so 1 + 2 + 3 = 6 is the only fitting split at time 3 (time 2 allows only [2, 2, 2])."""
    times, states, acts, trans = [1.0] * 6, [1.0] * 6, [1.0] * 6, [0.0] * 6
    devices = schedule.device_chunks("1f1b", 3, 8)
    balanced = part.partition(times, 3)
    assert balanced == [(0, 2), (2, 4), (4, 6)]
    assert device_bytes(balanced, states, acts, trans, devices) == [8.0, 6.0, 4.0]
    split = part.memory_aware_partition(times, states, acts, trans, devices, 7.0)
    assert split == [(0, 1), (1, 3), (3, 6)]
    assert device_bytes(split, states, acts, trans, devices) == [4.0, 6.0, 6.0]
    assert chunk_max(split, times) == 3.0


def test_1f1b_transient_counts_once_per_device():
    """Same blocks, but the last block (LM head) has a 2-byte transient: stage 2 with 3 blocks = 6 + 2 = 8 > 7, so
    stages 0, 1, 2 hold at most 1 + 2 + 2 < 6 blocks: nothing fits at 7 (without the transient [1, 2, 3] did).
    At 8 the time-balanced [2, 2, 2] fits (devices 8, 6, 2 + 2 + 2 = 6)."""
    times, states, acts, trans = [1.0] * 6, [1.0] * 6, [1.0] * 6, [0.0] * 5 + [2.0]
    devices = schedule.device_chunks("1f1b", 3, 8)
    assert part.memory_aware_partition(times, states, acts, trans, devices, 7.0) is None
    split = part.memory_aware_partition(times, states, acts, trans, devices, 8.0)
    assert split == [(0, 2), (2, 4), (4, 6)]
    assert device_bytes(split, states, acts, trans, devices) == [8.0, 6.0, 6.0]


def test_nothing_fits_returns_none():
    # one block on stage 0 already needs 1 + 3 x 1 = 4 bytes
    devices = schedule.device_chunks("1f1b", 3, 8)
    assert part.memory_aware_partition([1.0] * 6, [1.0] * 6, [1.0] * 6, [0.0] * 6, devices, 3.9) is None


def test_1f1b_unequal_times_next_fastest_fitting_split():
    """Unequal times: [3, 1, 1, 1, 1, 3] over 2 stages (1F1B, 2 and 1 micro-batches), no states, activation 1.
    Time-balanced: [3,1,1 | 1,1,3] (5 | 5); device 0 = 2 x 3 = 6 > 5. Stage 0 with 2 blocks: 4 bytes, time 4; stage 1
    [1,1,1,3] = 6 time, 4 bytes. Stage 0 with 1 block: stage 1 time 7. So the answer is [(0, 2), (2, 6)], time 6."""
    times = [3.0, 1.0, 1.0, 1.0, 1.0, 3.0]
    devices = schedule.device_chunks("1f1b", 2, 4)
    assert part.partition(times, 2) == [(0, 3), (3, 6)]
    split = part.memory_aware_partition(times, [0.0] * 6, [1.0] * 6, [0.0] * 6, devices, 5.0)
    assert split == [(0, 2), (2, 6)] and chunk_max(split, times) == 6.0


def test_dualpipe_two_stages_pair_constraint():
    """DualPipe p=2, m=4: both devices hold stage 0 (2 micro-batches) and stage 1 (1 micro-batch). 6 blocks, time 1,
    activation 1: [3, 3] -> 2 x 3 + 3 = 9 > 8; [2, 4] -> 4 + 4 = 8 fits at time 4 (the best with 8 bytes)."""
    devices = schedule.device_chunks("dualpipe", 2, 4)
    assert devices == [[(0, 2.0), (1, 1.0)], [(1, 1.0), (0, 2.0)]]
    split = part.memory_aware_partition([1.0] * 6, [0.0] * 6, [1.0] * 6, [0.0] * 6, devices, 8.0)
    assert split == [(0, 2), (2, 6)]
    assert part.memory_aware_partition([1.0] * 6, [0.0] * 6, [1.0] * 6, [0.0] * 6, devices, 6.0) is None


def test_dualpipe_four_stages_mirror_pairs():
    """DualPipe p=4, m=8: devices 0/3 hold 4 x stage 0 + 1 x stage 3, devices 1/2 hold 3 x stage 1 + 2 x stage 2.
    8 blocks of time 1 and activation 1, budget 9. Time 2 forces [2,2,2,2]: 4x2 + 2 = 10 > 9. At time 3 (sizes
    <= 3): device 0 needs 4 c0 + c3 <= 9 and device 1 3 c1 + 2 c2 <= 9, so c1 + c2 <= 4 ((1, 3)) and, with c0 = 1,
    c3 <= 3; c0 = 2 leaves c3 = 1 and 2 + 1 + 4 < 8. The only split is [1, 1, 3, 3] (devices: 7 and 9)."""
    devices = schedule.device_chunks("dualpipe", 4, 8)
    split = part.memory_aware_partition([1.0] * 8, [0.0] * 8, [1.0] * 8, [0.0] * 8, devices, 9.0)
    assert split == [(0, 1), (1, 2), (2, 5), (5, 8)]
    assert device_bytes(split, [0.0] * 8, [1.0] * 8, [0.0] * 8, devices) == [7.0, 9.0, 9.0, 7.0]


def test_interleaved_split_fits_its_devices():
    """Interleaved p=2, v=2 (device 0: chunks 0 and 2, 2.5 micro-batches each; device 1: chunks 1 and 3, 1.5 each).
    The equal share of the device budget per chunk is conservative: whatever it returns must fit."""
    devices = schedule.device_chunks("interleaved", 2, 8, 2)
    times, states, acts = [1.0] * 8, [1.0] * 8, [1.0] * 8
    assert max(device_bytes(part.partition(times, 4), states, acts, [0.0] * 8, devices)) == 14.0
    split = part.memory_aware_partition(times, states, acts, [0.0] * 8, devices, 13.0)
    assert split is not None and max(device_bytes(split, states, acts, [0.0] * 8, devices)) <= 13.0
    # device 0 = 3.5 x (c0 + c2) and device 1 = 2.5 x (c1 + c3) with c0+c2 = 3, c1+c3 = 5 -> 10.5 and 12.5
    assert chunk_max(split, times) == 3.0


@pytest.mark.parametrize("sched,p", [("1f1b", 2), ("1f1b", 3), ("dualpipe", 2), ("dualpipe", 4)])
def test_memory_aware_matches_brute_force(sched, p):
    """Random small cases: the smallest largest-chunk time over every fitting split, by enumeration."""
    rng = random.Random(1234 + p)
    devices = schedule.device_chunks(sched, p, 2 * p)
    for _ in range(40):
        n = rng.randint(p, 8)
        times = [rng.choice([1.0, 2.0, 3.0]) for _ in range(n)]
        states = [rng.choice([0.0, 1.0]) for _ in range(n)]
        acts = [rng.choice([1.0, 2.0]) for _ in range(n)]
        trans = [rng.choice([0.0, 0.0, 2.0]) for _ in range(n)]
        budget = rng.uniform(4.0, 30.0)
        best = None
        for cuts in itertools.combinations(range(1, n), p - 1):
            b = list(zip((0,) + cuts, cuts + (n,)))
            if max(device_bytes(b, states, acts, trans, devices)) <= budget:
                t = chunk_max(b, times)
                best = t if best is None else min(best, t)
        split = part.memory_aware_partition(times, states, acts, trans, devices, budget)
        if best is None:
            assert split is None
        else:
            assert split is not None and chunk_max(split, times) == best
            assert max(device_bytes(split, states, acts, trans, devices)) <= budget


# ------------------------------------------------------------------ estimate: the recipe's split
def tiny(pp=2, parallel=None, **sim):
    d = {"model": {"vocab_size": 1024, "hidden_size": 256, "num_layers": 4, "num_dense_layers": 1,
                   "dense_ffn_hidden": 512, "num_heads": 8, "q_lora_rank": 64, "kv_lora_rank": 32,
                   "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "mtp_depth": 1},
         "moe": {"num_experts": 16, "top_k": 4, "expert_ffn_hidden": 128},
         "train": {"seq_length": 512, "global_batch_size": 64},
         "parallel": {"pp": pp, "tp": 1, "ep": 1, "micro_batch_size": 1, **(parallel or {})}, "sim": sim}
    return from_dict(d)


def test_explicit_split_sets_the_blocks():
    # items: 4 layers + 1 MTP; [2, 3] = (embedding, layers 0-1) | (layers 2-3, head, MTP proj/layer/head)
    e = estimate(tiny(parallel={"pipeline_split": "explicit", "layers_per_virtual_stage": [2, 3]}), "h100", 2)
    assert e.details["layers_per_virtual_stage"] == [2, 3] and e.details["stage_split"] == "explicit"
    assert e.details["blocks_per_virtual_stage"] == [3, 6]
    assert e.details["decoder_layers_per_virtual_stage"] == [2, 2]


@pytest.mark.parametrize("counts,msg", [([2, 2], "sums to 4, but the model has 4 layers + 1 MTP = 5"),
                                        ([5], "1 entries, but parallel.pp*vpp"),
                                        ([0, 5], "needs >= 1 layer")])
def test_explicit_split_validation_names_the_key(counts, msg):
    with pytest.raises(ConfigError, match=r"parallel\.layers_per_virtual_stage: .*" + re.escape(msg)):
        estimate(tiny(parallel={"pipeline_split": "explicit", "layers_per_virtual_stage": counts}), "h100", 2)


def test_memory_aware_keeps_the_time_balanced_split_when_it_fits():
    e = estimate(tiny(parallel={"pipeline_split": "memory_aware"}), "h100", 2)
    assert e.fits and e.details["stage_split"] == "time_balanced"
    assert e.details["layers_per_virtual_stage"] == list(
        estimate(tiny(parallel={"pipeline_split": "time_balanced"}), "h100", 2).details["layers_per_virtual_stage"])


def test_deepseek_v3_recipe_fits_with_memory_aware_split():
    """The recipe's time-balanced split (stage 0 = embedding + 3 dense + 2 MoE layers) runs out of memory on
    device 0; the memory-aware split fits, its largest stage at most one block above the time-balanced one's
    (it moves layers between stages; with node-limited routing it is 1.4 % slower)."""
    cfg = load_config(RDSV3, validate=False)
    assert cfg.parallel.pipeline_split == "memory_aware"
    e = estimate(cfg)
    assert e.fits and e.details["stage_split"] == "memory_aware"
    assert e.memory_per_device_gb <= e.hbm_usable_gb
    forced = estimate(dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel,
                                                                            pipeline_split="time_balanced")))
    assert not forced.fits and forced.details["layers_per_virtual_stage"] != e.details["layers_per_virtual_stage"]
    hw = load_hardware(cfg.sim.hardware)
    cfg_r, lay = resolve_layout(cfg, None, hw.devices_per_node)
    times = Simulator(cfg_r, lay, hw).item_costs(Simulator(cfg_r, lay, hw).blocks()).time
    chosen = part.bounds_from_counts(e.details["layers_per_virtual_stage"])
    balanced = part.bounds_from_counts(forced.details["layers_per_virtual_stage"])
    assert chunk_max(balanced, times) <= chunk_max(chosen, times) <= chunk_max(balanced, times) + max(times)


def test_recompute_auto_keeps_the_fastest_fitting(monkeypatch):
    """auto: a granularity that fits only with a memory-aware split does not end the search; the first one whose
    time-balanced split fits does, and the fastest fitting estimate is returned."""
    import importlib
    from types import SimpleNamespace
    est_mod = importlib.import_module("pangu_ms.sim.estimate")   # the module (pangu_ms.sim.estimate is also a function)
    table = {"none": (False, "time_balanced_oom", 9.0), "selective": (True, "memory_aware", 12.0),
             "moe_fine": (True, "time_balanced", 11.0), "full": (True, "time_balanced", 10.0)}
    tried = []

    def fake_run(self):
        fits, split, step = table[self.cfg.sim.recompute]
        tried.append(self.cfg.sim.recompute)
        return SimpleNamespace(fits=fits, details={"stage_split": split}, step_time_s=step,
                               recompute=self.cfg.sim.recompute)
    monkeypatch.setattr(est_mod.Simulator, "__init__", lambda self, cfg, layout, hw: setattr(self, "cfg", cfg))
    monkeypatch.setattr(est_mod.Simulator, "run", fake_run)
    cfg = tiny(recompute="auto")
    out = est_mod.run_with_recompute(cfg, None, None)
    assert out.recompute == "moe_fine" and tried == ["none", "selective", "moe_fine"]
    table["selective"] = (True, "memory_aware", 10.5)          # now the memory-aware fit is the faster one
    tried.clear()
    assert est_mod.run_with_recompute(cfg, None, None).recompute == "selective"
