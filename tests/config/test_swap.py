"""``train.swap`` and ``train.recompute_layers_per_stage`` in the recipe: accepted values, and one ConfigError naming
the key for every bad one."""
import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.config.stage_recompute import single_stage_recompute_layers, stage_recompute_layers
from pangu_ms.config.swap import parse_swap_activations
from tests.conftest import tiny_overrides


def cfg(**extra):
    return load_config(None, tiny_overrides(**extra))


def test_defaults_are_off():
    c = cfg()
    assert c.train.swap.optimizer_state is False
    assert parse_swap_activations(c.train.swap.activations) == ()
    assert c.train.recompute_layers_per_stage == []


def test_accepted_swap_settings():
    c = cfg(**{"train.swap.optimizer_state": "true", "train.swap.activations": "[experts,core_attn]",
               "train.swap.prefetch": 3, "train.swap.layers": "[2,1]"})
    assert c.train.swap.optimizer_state is True and c.train.swap.prefetch == 3
    assert parse_swap_activations(c.train.swap.activations) == ("core_attn", "experts")   # canonical order
    assert parse_swap_activations("layer") == ("layer",)


@pytest.mark.parametrize("key,value,needle", [
    ("train.swap.activations", "[core_attn,flash]", "unknown swap target 'flash'"),
    ("train.swap.activations", "[core_attn,core_attn]", "listed twice"),
    ("train.swap.activations", "[layer,experts]", "'layer' already swaps the whole decoder layer"),
    ("train.swap.activations", "7", "expected 'none' or a list of targets"),
    ("train.swap.prefetch", 0, "integer >= 1"),
    ("train.swap.optimizer_state", "yes please", "expected true/false"),
    ("train.swap.bogus", 1, "unknown key"),
])
def test_bad_swap_values_name_the_key(key, value, needle):
    with pytest.raises(ConfigError) as e:
        cfg(**{key: value})
    assert str(e.value).startswith(key), str(e.value)
    assert needle in str(e.value)


def test_swap_layers_checked():
    with pytest.raises(ConfigError, match=r"train.swap.layers: 3 is not a decoder layer index in \[0, 3\)"):
        cfg(**{"train.swap.activations": "[core_attn]", "train.swap.layers": "[0,3]"})
    with pytest.raises(ConfigError, match="train.swap.layers: .* but train.swap.activations is none"):
        cfg(**{"train.swap.layers": "[0]"})


def test_swap_target_must_exist_in_the_swapped_layers():
    # layer 0 is the only dense layer: no routed experts there, and no dense FFN in layers 1, 2
    with pytest.raises(ConfigError, match="train.swap.activations: target 'experts' has nothing to swap"):
        cfg(**{"train.swap.activations": "[experts]", "train.swap.layers": "[0]"})
    with pytest.raises(ConfigError, match="train.swap.activations: target 'mlp' has nothing to swap"):
        cfg(**{"train.swap.activations": "[mlp]", "train.swap.layers": "[1,2]"})
    cfg(**{"train.swap.activations": "[mlp]", "train.swap.layers": "[0]"})


def test_swap_and_recompute_of_the_same_module_is_an_error():
    with pytest.raises(ConfigError, match=r"train.swap.activations: \['core_attn'\] are also in train.recompute"):
        cfg(**{"train.swap.activations": "[core_attn,experts]", "train.recompute": "[core_attn]"})
    with pytest.raises(ConfigError, match="train.swap.activations: train.recompute is 'full'"):
        cfg(**{"train.swap.activations": "[layer]", "train.recompute": "full"})
    cfg(**{"train.swap.activations": "[experts]", "train.recompute": "[core_attn]"})


def test_stage_counts_parsed_and_checked_for_one_stage():
    assert cfg(**{"train.recompute_layers_per_stage": "[2]"}).train.recompute_layers_per_stage == [2]
    with pytest.raises(ConfigError, match="train.recompute_layers_per_stage: 2 entries, but parallel.pp.vpp = 1"):
        cfg(**{"train.recompute_layers_per_stage": "[1,1]"})
    with pytest.raises(ConfigError, match="train.recompute_layers_per_stage: virtual stage 0 recomputes 4 layers but "
                                          "holds only 3"):
        cfg(**{"train.recompute_layers_per_stage": "[4]"})
    with pytest.raises(ConfigError, match="train.recompute_layers_per_stage: counts must be >= 0"):
        cfg(**{"train.recompute_layers_per_stage": "[-1]"})
    with pytest.raises(ConfigError, match=r"train.recompute_layers_per_stage\[0\]: expected an integer"):
        cfg(**{"train.recompute_layers_per_stage": "[x]"})
    with pytest.raises(ConfigError, match="train.recompute_layers_per_stage: .* train.recompute is 'full'"):
        cfg(**{"train.recompute_layers_per_stage": "[1]", "train.recompute": "full"})


def test_stage_recompute_layers_hand_computed():
    # virtual stages of 3, 3, 3, 2 decoder layers: layers 0-2, 3-5, 6-8, 9-10
    assert stage_recompute_layers([2, 0, 1, 1], [3, 3, 3, 2]) == {0, 1, 6, 9}
    assert stage_recompute_layers([3, 3, 3, 2], [3, 3, 3, 2]) == set(range(11))
    assert stage_recompute_layers([0, 0], [4, 4]) == set()
    assert stage_recompute_layers([0, 1, 0, 1], [1, 2, 3, 1]) == {1, 6}
    with pytest.raises(ConfigError, match="virtual stage 1 recomputes 3 layers but holds only 2"):
        stage_recompute_layers([0, 3], [4, 2])


def test_single_stage_helper():
    assert single_stage_recompute_layers(cfg(**{"train.recompute_layers_per_stage": "[2]"})) == {0, 1}
    assert single_stage_recompute_layers(cfg()) == frozenset()
    c = cfg(**{"parallel.pp": 2, "train.recompute_layers_per_stage": "[1,1]", "parallel.micro_batch_size": 1})
    with pytest.raises(ConfigError, match="follow from the pipeline split"):
        single_stage_recompute_layers(c)


def test_recipe_round_trip(tmp_path):
    """A run directory's config.yaml (dump_config) loads back with the same swap / per-stage settings."""
    from pangu_ms.config import dump_config
    c = cfg(**{"train.swap.optimizer_state": "true", "train.swap.activations": "[core_attn]",
               "train.swap.layers": "[1]", "train.recompute_layers_per_stage": "[1]"})
    dump_config(c, str(tmp_path / "config.yaml"))
    back = load_config(str(tmp_path / "config.yaml"))
    assert back.train.swap == c.train.swap and back.train.recompute_layers_per_stage == [1]
