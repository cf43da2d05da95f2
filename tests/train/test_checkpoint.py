"""Checkpoints: atomic save + keep-last-N, torn saves ignored, clear errors for a different model shape."""
import os

import numpy as np
import pytest

from pangu_ms.model import build_model
from pangu_ms.train.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                                       save_checkpoint)


def test_save_load_roundtrip_and_keep_last(tmp_path, small_cfg):
    a = build_model(small_cfg(), seed=1)
    b = build_model(small_cfg(), seed=2)
    root = str(tmp_path / "ck")
    for step in (3, 7, 11):
        save_checkpoint(a, root, step, keep_last=2)
    assert [os.path.basename(p) for p in list_checkpoints(root)] == ["step_00000007", "step_00000011"]
    state = load_checkpoint(b, latest_checkpoint(root))
    assert state["step"] == 11
    for p, q in zip(a.get_parameters(), b.get_parameters()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())


def test_torn_save_is_never_loaded(tmp_path, small_cfg):
    net = build_model(small_cfg())
    root = tmp_path / "ck"
    save_checkpoint(net, str(root), 5)
    # a save killed mid-way: a temporary dir, and a renamed dir without its state.json (never produced by
    # save_checkpoint, but a disk copy could leave one)
    (root / "step_00000009.tmp-4242").mkdir()
    (root / "step_00000009.tmp-4242" / "model.safetensors").write_bytes(b"\x00garbage")
    (root / "step_00000010").mkdir()
    (root / "step_00000010" / "model.safetensors").write_bytes(b"\x00garbage")
    assert latest_checkpoint(str(root)).endswith("step_00000005")
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_checkpoint(net, str(root / "step_00000010"))
    save_checkpoint(net, str(root), 6)               # the next save clears stale temporaries
    assert not (root / "step_00000009.tmp-4242").exists()


def test_different_model_shape_is_named(tmp_path, small_cfg):
    save_checkpoint(build_model(small_cfg()), str(tmp_path), 1)
    other = build_model(small_cfg(**{"model.hidden_size": 40}))
    with pytest.raises(CheckpointError, match="parameter 'embedding.weight' has shape \\[64, 32\\] in the "
                                              "checkpoint but \\[64, 40\\]"):
        load_checkpoint(other, latest_checkpoint(str(tmp_path)))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(other, str(tmp_path / "nope"))
