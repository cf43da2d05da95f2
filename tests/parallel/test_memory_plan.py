"""The memory settings of the Ascend plan (``plan.context["memory"]``): the dict for hand-written recipes, the plan
printer's lines, and their resolution against the instantiated model and optimizer (CPU: dry run only)."""
import subprocess
import sys

import mindspore as ms
import pytest
from mindspore import Parameter, Tensor

from pangu_ms.config import load_config
from pangu_ms.model import build_model
from pangu_ms.parallel.apply_ascend import AscendOnlyError, PlanError
from pangu_ms.parallel.apply_swap import apply_swap, optimizer_states
from pangu_ms.parallel.plan import build_plan, summarize
from pangu_ms.train.optim import build_optimizer
from tests.conftest import ROOT, tiny_overrides

PP2 = {"model.num_layers": 5, "model.mtp_depth": 1, "parallel.pp": 2, "train.global_batch_size": 2,
       "parallel.micro_batch_size": 1}


def cfg(**extra):
    return load_config(None, tiny_overrides(**extra))


def test_memory_plan_dict():
    # 5 layers + 1 MTP over 2 stages: [3, 3] -> decoder [3, 2]; layer 0 dense, 1-4 MoE
    c = cfg(**PP2, **{"train.recompute_layers_per_stage": "[2,0]", "train.swap.activations": "[core_attn,experts]",
                      "train.swap.prefetch": 2, "train.swap.optimizer_state": "true"})
    mem = build_plan(c).context["memory"]
    off = [{"cell": c, "backward_prefetch": 2} for c in
           ["layers.2.attention.core", "layers.2.moe.experts", "layers.3.attention.core", "layers.3.moe.experts",
            "layers.4.attention.core", "layers.4.moe.experts"]]
    assert mem == {"recompute_layers_per_stage": [2, 0], "decoder_layers_per_virtual_stage": [3, 2],
                   "recompute_layers": [0, 1], "offload": off, "optimizer_state_device": "CPU",
                   "env": {"MS_DEV_RUNTIME_CONF": "switch_inline:False"}}


def test_memory_plan_off_and_layer_targets():
    mem = build_plan(cfg()).context["memory"]
    assert mem == {"recompute_layers_per_stage": [], "decoder_layers_per_virtual_stage": [3],
                   "recompute_layers": [], "offload": [], "optimizer_state_device": None, "env": {}}
    c = cfg(**{"train.swap.activations": "[layer]", "train.swap.layers": "[2,0]"})
    assert [o["cell"] for o in build_plan(c).context["memory"]["offload"]] == ["layers.0", "layers.2"]
    c = cfg(**{"train.swap.activations": "[mlp,shared_expert]"})        # mlp: dense layer 0 only; shared: 1, 2
    assert [o["cell"] for o in build_plan(c).context["memory"]["offload"]] == [
        "layers.0.mlp", "layers.1.moe.shared_expert", "layers.2.moe.shared_expert"]


def test_summary_prints_the_memory_section():
    c = cfg(**PP2, **{"train.recompute_layers_per_stage": "[1,1]", "train.swap.optimizer_state": "true"})
    text = summarize(build_plan(c))
    assert "per-stage full recompute [1, 1] of decoder layers per virtual stage [3, 2] -> layers [0, 3]" in text
    assert "optimizer-state swap: AdamW moments as Parameter(device='CPU')" in text
    assert "activation swap: off" in text


@pytest.fixture(scope="module")
def tiny_net_and_optimizer():
    c = cfg()
    net = build_model(c)
    return net, build_optimizer(net.trainable_params(), c.train)


def test_dry_run_resolves_targets_in_the_model(tiny_net_and_optimizer):
    net, opt = tiny_net_and_optimizer
    c = cfg(**{"train.recompute_layers_per_stage": "[1]", "train.swap.activations": "[core_attn,experts]",
               "train.swap.optimizer_state": "true"})
    rep = apply_swap(net, build_plan(c).context["memory"], opt, dry_run=True)
    assert rep.recompute == ["layers.0"] and rep.problems == []
    # Primitive attributes Cell.offload marks: attention core score_matmul, rope_score_matmul, value_matmul (its
    # softmax is functional: not marked); routed experts dense_gate_up, dense_down, bmm_gate_up, bmm_down
    assert rep.offload == [("layers.1.attention.core", 1, 3), ("layers.1.moe.experts", 1, 4),
                           ("layers.2.attention.core", 1, 3), ("layers.2.moe.experts", 1, 4)]
    names = rep.optimizer_states
    params = [p.name for p in net.trainable_params()]
    assert sorted(names) == sorted([f"adam_m.{n}" for n in params] + [f"adam_v.{n}" for n in params])
    # nothing was changed: no primitive carries the offload attribute, no state is host-resident
    cells = dict(net.cells_and_names())
    assert not any("offload" in p.attrs for p in cells["layers.1.attention.core"]._get_prims_recursively())
    assert all(p._get_user_data("parameter_device") is None for p in optimizer_states(opt))


def test_missing_target_and_cpu_refusal(tiny_net_and_optimizer):
    net, opt = tiny_net_and_optimizer
    mem = {"recompute_layers": [7], "offload": [{"cell": "layers.0.attention.nope", "backward_prefetch": 1}],
           "optimizer_state_device": None, "env": {}}
    with pytest.raises(PlanError, match=r"missing cell 'layers.7' \(recompute_layers\); missing cell "
                                        r"'layers.0.attention.nope' \(offload\)"):
        apply_swap(net, mem, opt, dry_run=True)
    mem = build_plan(cfg(**{"train.swap.optimizer_state": "true"})).context["memory"]
    with pytest.raises(AscendOnlyError, match="apply_swap is Ascend-only"):
        apply_swap(net, mem, opt)


def test_host_device_user_data_is_mindspores():
    # the user data apply_swap sets on Ascend is the one Parameter(device="CPU") sets in MindSpore 2.9
    p = Parameter(Tensor([1.0], ms.float32), name="w", device="CPU")
    assert p._get_user_data("parameter_device") == "CPU"


def test_show_plan_mindformers_cli():
    r = subprocess.run([sys.executable, "tools/show_plan.py", "--config", "yaml/tiny_cpu.yaml", "--set",
                        "parallel.pp=2", "--set", "parallel.micro_batch_size=2", "--set",
                        "train.recompute_layers_per_stage=[2,0]", "--mindformers"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "== memory: per-stage recompute, swap ==" in r.stdout
    assert "recompute_config:\n  recompute: [2, 0]\n" in r.stdout and "offset: [1, -1]" in r.stdout
    r = subprocess.run([sys.executable, "tools/show_plan.py", "--config", "yaml/tiny_cpu.yaml", "--set",
                        "parallel.pp=2", "--set", "parallel.micro_batch_size=2", "--set",
                        "train.recompute_layers_per_stage=[2,2]"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 2 and "virtual stage 1 recomputes 2 layers but holds only 1" in r.stderr


def test_mindspore_2_9_api_as_documented():
    """docs/swap.md: what the installed MindSpore offers for swapping (and what it no longer has)."""
    import inspect

    from mindspore import nn
    from mindspore.ops import Primitive
    assert "backward_prefetch" in inspect.signature(nn.Cell.offload).parameters
    assert "backward_prefetch" in inspect.signature(Primitive._offload).parameters
    assert "device" in inspect.signature(Parameter.__init__).parameters
    assert not hasattr(ms, "set_offload_context")              # MindSpore 2.1-2.6 only
    with pytest.raises(ValueError, match="memory_offload"):
        ms.set_context(memory_offload="ON")
