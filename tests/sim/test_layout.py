"""The simulator evaluates the training layout: the same class (ParallelDims) and the same validation
(validate_config + layout_problems), so it rejects exactly what training rejects, with the same message."""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from pangu_ms.config import ConfigError, from_dict
from pangu_ms.config.validate import validate_config
from pangu_ms.parallel.dims import ParallelDims, layout_problems
from pangu_ms.sim import search
from pangu_ms.sim.estimate import estimate
from pangu_ms.sim.layout import LayoutError, apply_devices, resolve_layout
from tests.conftest import flat_hw


def tiny(model=None, moe=None, sim=None, **parallel):
    return from_dict({
        "model": {"vocab_size": 1024, "hidden_size": 128, "num_layers": 4, "num_dense_layers": 1,
                  "dense_ffn_hidden": 256, "num_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 16,
                  "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "mtp_depth": 1, **(model or {})},
        "moe": {"num_experts": 8, "top_k": 2, "expert_ffn_hidden": 64, "num_shared_experts": 1, **(moe or {})},
        "train": {"seq_length": 256, "global_batch_size": 16},
        "parallel": {"micro_batch_size": 1, **parallel}, "sim": sim or {}})


def escaped(message: str) -> str:
    return "^" + "".join("\\" + ch if ch in "*()[]+.?" else ch for ch in message) + "$"


# layouts validate_config accepts and layout_problems rejects, one rule each
REJECTED = {
    "tp_extend_ep needs dropless": tiny(dp=2, tp=2, ep=2, tp_extend_ep=True, moe={"dispatcher": "drop_and_pad"}),
    "vocab % tp": tiny(tp=2, model={"vocab_size": 1023}),
    "explicit split sums wrong": tiny(pp=2, vpp=2, pipeline_split="explicit", layers_per_virtual_stage=[1, 1, 1, 1]),
    "split list without explicit": tiny(pp=2, layers_per_virtual_stage=[2, 3]),
    "tp across nodes": tiny(dp=2, tp=2, ranks_per_node=1),
    "dualpipe with vpp": tiny(pp=2, vpp=2, sim={"pp_schedule": "dualpipe"}),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_simulator_rejects_what_layout_problems_rejects(case):
    cfg = REJECTED[case]
    validate_config(cfg)                                  # the basic checks pass ...
    problems = layout_problems(cfg)
    assert problems                                       # ... the layout checks do not
    hw = flat_hw(devices_per_node=cfg.parallel.ranks_per_node)
    with pytest.raises(LayoutError) as err:
        estimate(cfg, hw)
    assert str(err.value) == problems[0]


def test_search_accepts_exactly_the_valid_layouts():
    """Every candidate of a small grid: the search evaluates it iff validate_config + layout_problems accept it,
    and an accepted one is simulated with ParallelDims.from_config of its recipe."""
    hw = flat_hw()
    base = tiny()
    space = search.SearchSpace(tp=[1, 2, 4], pp=[1, 2, 4], vpp=[1, 2], ep=[1, 2, 4], micro_batch=[1, 2],
                               tp_extend_ep=[True, False], recompute=["none"])
    accepted = rejected = 0
    for lay in search.layouts(space):
        try:
            cand = apply_devices(search.candidate_config(base, lay), 8)
            validate_config(cand)
            problems = layout_problems(cand)
        except ConfigError as e:                          # validate_config raises its first problem
            problems = [str(e)]
        row = search.evaluate(base, lay, hw, 8)
        assert (row is None) == bool(problems), (lay, problems)
        if row is None:
            with pytest.raises(LayoutError, match=escaped(problems[0])):
                search.estimate_candidate(base, lay, hw, 8)
            rejected += 1
        else:
            accepted += 1
            assert row["dp"] == ParallelDims.from_config(cand).dp
    assert accepted > 10 and rejected > 10


def test_simulated_layout_is_parallel_dims():
    cfg, lay = resolve_layout(tiny(tp=2, pp=2, ep=2, tp_extend_ep=True), 8, 8)
    assert type(lay) is ParallelDims
    assert (lay.dp, lay.ep_width, lay.micro_batches, lay.tokens_per_micro, lay.pipeline_schedule) == (2, 4, 8, 256,
                                                                                                    "1f1b")
    assert list(itertools.chain(*lay.groups("ep"))) == list(range(8))
