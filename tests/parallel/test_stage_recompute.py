"""``train.recompute_layers_per_stage`` on the one pipeline split: the recomputed global layer indices (hand-computed
from the split), and the layout check naming the key."""
import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.parallel.dims import layout_problems
from pangu_ms.parallel.stage_recompute import decoder_layers_per_virtual_stage, recompute_layer_indices
from tests.conftest import tiny_overrides


def cfg(**extra):
    return load_config(None, tiny_overrides(**extra))


PP2_VPP2 = {"model.num_layers": 9, "model.mtp_depth": 1, "parallel.pp": 2, "parallel.vpp": 2,
            "train.global_batch_size": 4, "parallel.micro_batch_size": 1}


def test_balanced_split_with_vpp():
    # 9 layers + 1 MTP = 10 items over 4 virtual stages, balanced: [2, 3, 3, 2] (lighter ends: last, first);
    # the MTP module sits on the last one -> decoder layers [2, 3, 3, 1]: layers 0-1 | 2-4 | 5-7 | 8
    c = cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[2,1,0,1]"})
    assert decoder_layers_per_virtual_stage(c) == (2, 3, 3, 1)
    assert recompute_layer_indices(c) == {0, 1, 2, 8}
    c = cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[0,3,2,0]"})
    assert recompute_layer_indices(c) == {2, 3, 4, 5, 6}


def test_explicit_split_pp4():
    c = cfg(**{"model.num_layers": 10, "model.mtp_depth": 1, "parallel.pp": 4, "train.global_batch_size": 4,
               "parallel.micro_batch_size": 1, "parallel.pipeline_split": "explicit",
               "parallel.layers_per_virtual_stage": "[4,3,2,2]", "train.recompute_layers_per_stage": "[4,1,1,0]"})
    # decoder layers 0-3 | 4-6 | 7-8 | 9 (+ mtp.0)
    assert decoder_layers_per_virtual_stage(c) == (4, 3, 2, 1)
    assert recompute_layer_indices(c) == {0, 1, 2, 3, 4, 7}


def test_empty_means_none():
    assert recompute_layer_indices(cfg()) == frozenset()


def test_counts_beyond_the_stage_are_a_layout_problem():
    c = cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[2,1,0,2]"})   # last stage: 1 decoder layer
    problems = layout_problems(c)
    assert problems == ["train.recompute_layers_per_stage: virtual stage 3 recomputes 2 layers but holds only 1 "
                        "decoder layers (split [2, 3, 3, 1])"]
    with pytest.raises(ConfigError, match="virtual stage 3 recomputes 2 layers"):
        recompute_layer_indices(c)


def test_length_must_be_pp_times_vpp():
    with pytest.raises(ConfigError, match=r"train.recompute_layers_per_stage: 2 entries, but parallel.pp\*vpp = 4"):
        cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[1,1]"})


def test_listed_swap_layer_recomputed_whole_is_a_problem():
    c = cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[1,0,0,0]", "train.swap.activations": "[core_attn]",
                           "train.swap.layers": "[0,5]"})
    assert layout_problems(c) == ["train.swap.activations: layers [0] are also recomputed whole by "
                                  "train.recompute_layers_per_stage (they store only their input, nothing to swap); "
                                  "drop them from train.swap.layers"]
    c = cfg(**PP2_VPP2, **{"train.recompute_layers_per_stage": "[1,0,0,0]", "train.swap.activations": "[core_attn]"})
    assert layout_problems(c) == []
