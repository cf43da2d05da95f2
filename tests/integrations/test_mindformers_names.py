"""The MindFormers wrapper trains through the loss Cell but keeps the bare model's parameter names under
``pangu.`` (no ``model.`` level from the loss Cell)."""
import os

from pangu_ms.config import load_config
from pangu_ms.model import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wrapper_parameter_names_are_the_model_names():
    from pangu_ms.integrations.mindformers import PanguMoEConfig, PanguMoEForCausalLM
    recipe = os.path.join(ROOT, "yaml/tiny_cpu.yaml")
    wrapped = PanguMoEForCausalLM(PanguMoEConfig(recipe=recipe))
    bare = build_model(load_config(recipe))
    assert [p.name for p in wrapped.get_parameters()] == ["pangu." + p.name for p in bare.get_parameters()]
