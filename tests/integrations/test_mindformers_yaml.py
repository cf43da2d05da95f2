"""The MindFormers 1.9 YAML sections of a recipe: equal to hand-written ones, accepted by MindFormers' own config
classes and rule checks, and read back by MindFormers' own ``LayerSetting`` as the same layers (split, recompute,
swap) as pangu_ms's plan -- with swap, on the Cells of the instantiated pangu_ms model."""
import inspect

import mindspore as ms
import pytest

from pangu_ms.config import load_config
from pangu_ms.integrations.mindformers_yaml import mindformers_sections, mindformers_yaml
from pangu_ms.model import build_model
from pangu_ms.parallel.plan import build_plan
from pangu_ms.parallel.stage_recompute import recompute_layer_indices
from pangu_ms.train.mf import ensure_mindformers
from tests.conftest import tiny_overrides

ensure_mindformers()

from mindformers import MindFormerConfig  # noqa: E402
from mindformers.core.optim import AdamW  # noqa: E402
from mindformers.core.parallel_config import build_parallel_config  # noqa: E402
from mindformers.modules.transformer import TransformerSwapConfig  # noqa: E402
from mindformers.parallel_core.training_graph.transformer.utils import LayerSetting  # noqa: E402
from mindformers.tools import check_rules  # noqa: E402
from mindformers.tools.register.template import (MsParallelConfig, OptimizerConfig, ParallelConfig,  # noqa: E402
                                                 RecomputeConfig, SwapConfig)

# 9 layers + 1 MTP over pp 2 x vpp 2, balanced: items [2, 3, 3, 2] -> decoder layers [2, 3, 3, 1]
PP2_VPP2 = {"model.num_layers": 9, "model.mtp_depth": 1, "parallel.pp": 2, "parallel.vpp": 2,
            "train.global_batch_size": 4, "parallel.micro_batch_size": 1,
            "train.recompute_layers_per_stage": "[2,1,0,1]"}


def cfg(**extra):
    return load_config(None, tiny_overrides(**extra))


def test_sections_without_swap():
    sec = mindformers_sections(cfg(**PP2_VPP2))
    # MindFormers: avg = 9 // 4 = 2 layers per virtual stage + offset[chunk][stage]; chunk c//2 on stage c%2
    assert sec == {
        "parallel": {"enable_parallel_optimizer": False},
        "parallel_config": {"data_parallel": 1, "model_parallel": 1, "context_parallel": 1, "expert_parallel": 1,
                            "pipeline_stage": 2, "micro_batch_num": 4},
        "recompute_config": {"recompute": [[2, 1], [0, 1]]},
        "swap_config": {"swap": False},
        "optimizer": {"type": "AdamW", "swap": False},
        "env": {},
        "model": {"model_config": {"offset": [[0, 1], [1, -1]], "pp_interleave_num": 2}},
    }


def test_sections_with_swap_use_layer_indices():
    c = cfg(**PP2_VPP2, **{"train.swap.activations": "[core_attn,experts]", "train.swap.prefetch": 2,
                           "train.swap.optimizer_state": "true", "parallel.optimizer_shard": "true"})
    sec = mindformers_sections(c)
    assert sec["recompute_config"] == {"recompute": [0, 1, 2, 8]}      # global indices once swap is on
    assert sec["swap_config"] == {
        "swap": True, "default_prefetch": 2, "layer_swap": None,
        "op_swap": [{"op_name": r"attention\.core", "backward_prefetch": 2, "layers": [3, 4, 5, 6, 7]},
                    {"op_name": r"moe\.experts", "backward_prefetch": 2, "layers": [3, 4, 5, 6, 7]}]}
    assert sec["optimizer"] == {"type": "AdamW", "swap": True}
    assert sec["parallel"] == {"enable_parallel_optimizer": True}
    assert sec["env"] == {"MS_DEV_RUNTIME_CONF": "switch_inline:False"}
    text = mindformers_yaml(c)
    assert text.startswith('# export MS_DEV_RUNTIME_CONF="switch_inline:False"')
    assert "MTP module(s)" not in text                                   # the last virtual stage has layer 8
    alone = cfg(**{"model.num_layers": 3, "model.mtp_depth": 1, "parallel.pp": 2, "parallel.micro_batch_size": 1,
                   "parallel.pipeline_split": "explicit", "parallel.layers_per_virtual_stage": "[3,1]"})
    assert "# note: the last virtual stage holds only the MTP module(s)" in mindformers_yaml(alone)
    c = cfg(**{"train.swap.activations": "[layer]", "train.swap.layers": "[1,2]"})
    assert mindformers_sections(c)["swap_config"] == {
        "swap": True, "default_prefetch": 1, "layer_swap": [{"backward_prefetch": 1, "layers": [1, 2]}],
        "op_swap": None}
    assert mindformers_sections(cfg(**{"train.recompute": "full"}))["recompute_config"] == {"recompute": True}


def test_names_exist_in_mindformers():
    sec = mindformers_sections(cfg(**PP2_VPP2, **{"train.swap.activations": "[core_attn]",
                                                  "train.swap.optimizer_state": "true"}))
    # the strict templates raise KeyError on a key they do not know
    SwapConfig.apply(sec["swap_config"])
    RecomputeConfig.apply(sec["recompute_config"])
    ParallelConfig.apply(sec["parallel_config"])
    assert set(sec["parallel"]) <= set(MsParallelConfig.keys())
    assert "swap" in inspect.signature(AdamW.__new__).parameters and OptimizerConfig.type == "AdamW"
    TransformerSwapConfig(**sec["swap_config"])
    with pytest.raises(KeyError, match="unexpected key: prefetch"):
        SwapConfig.apply({"swap": True, "prefetch": 1})                # the check is real


def _mf_config(sec):
    mf = MindFormerConfig(**{k: sec[k] for k in ("parallel_config", "recompute_config", "swap_config")})
    build_parallel_config(mf)
    check_rules._check_recompute(mf)
    check_rules._check_swap(mf)
    return mf


@pytest.fixture
def interleave_context():
    ms.set_auto_parallel_context(pipeline_stages=2, pipeline_config={"pipeline_interleave": True,
                                                                     "pipeline_scheduler": "1f1b"})
    yield
    ms.reset_auto_parallel_context()


def test_mindformers_layer_setting_recomputes_the_same_layers(interleave_context):
    c = cfg(**PP2_VPP2)
    sec = mindformers_sections(c)
    ls = LayerSetting(9, sec["model"]["model_config"]["offset"], _mf_config(sec).parallel_config, 2)
    assert ls.layer_list.tolist() == [[2, 3], [3, 1]]                  # chunk x stage = pangu_ms's split
    mf_layers = {i for i in range(9) if ls._check_layer_rule(i)}
    assert mf_layers == recompute_layer_indices(c) == {0, 1, 2, 8}


def test_mindformers_layer_setting_swaps_the_plans_cells(interleave_context):
    c = cfg(**PP2_VPP2, **{"train.swap.activations": "[core_attn,experts]"})
    sec = mindformers_sections(c)
    ls = LayerSetting(9, sec["model"]["model_config"]["offset"], _mf_config(sec).parallel_config, 2)
    assert set(ls.layer_recompute) == recompute_layer_indices(c)     # swap on: indices
    net = build_model(c)
    cells = dict(net.cells_and_names())
    for i in range(9):
        ls.set_swap(cells[f"layers.{i}"], i)                            # MindFormers' pattern matcher
    marked = {name for name, cell in cells.items() if name.startswith("layers.") and cell._primitives and
              all(p.attrs.get("offload") for p in cell._primitives.values() if p)}
    expected = {o["cell"] for o in build_plan(c).context["memory"]["offload"]}
    assert marked == expected and len(expected) == 10
