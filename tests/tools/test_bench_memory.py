"""tools/bench_memory.py entries: 'NAME@KEY=VALUE' gives one granularity its own config overrides (for the child
that measures it and for the simulator's prediction beside it)."""
import argparse

import pytest

from pangu_ms.config import ConfigError
from tools.bench_memory import entry_overrides, predict, recompute_value, short_name, split_entry

CFG = "yaml/bench_memory_cpu.yaml"


def test_entry_overrides_reach_the_child_and_the_prediction():
    entry = "norm+moe_act@long_context.attention_chunk=128@train.seq_length=512"
    assert split_entry(entry) == ("norm+moe_act", ["long_context.attention_chunk=128", "train.seq_length=512"])
    assert recompute_value(entry) == ["norm", "moe_act"]
    args = argparse.Namespace(set=["model.num_layers=2"])
    assert entry_overrides(args, entry) == ["model.num_layers=2", "long_context.attention_chunk=128",
                                            "train.seq_length=512"]
    assert entry_overrides(args, "none") == ["model.num_layers=2"]
    assert short_name("none@long_context.attention_chunk=128") == "none @attention_chunk=128"
    plain = predict(CFG, [], "none")["predicted_mb"]
    chunked = predict(CFG, [], "none@long_context.attention_chunk=128")["predicted_mb"]
    assert chunked < 0.9 * plain          # the chunked attention's smaller probabilities are predicted


def test_an_override_that_is_not_key_value_is_one_error_naming_the_entry():
    with pytest.raises(ConfigError, match="moe_fine@chunk"):
        split_entry("moe_fine@chunk")
