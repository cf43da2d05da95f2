"""The checkpoint manager without training: layout, keep-last pruning (also killed mid-way), partial / truncated
checkpoints skipped by name, per-rank expert parts, non-finite weights refused, clear shape errors."""
import os

import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.model import build_model
from pangu_ms.train import checkpoint as ck
from pangu_ms.train.checkpoint import (CheckpointError, CheckpointManager, checkpoint_paths, load_checkpoint,
                                       newest_checkpoint, save_checkpoint, step_directories)


def _params(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def _steps(run):
    return [s for s, _ in step_directories(str(run))]


def test_roundtrip_layout_and_keep_last(tmp_path, small_cfg):
    a, b = build_model(small_cfg(), seed=1), build_model(small_cfg(), seed=2)
    for step in (3, 7, 11):
        save_checkpoint(a, str(tmp_path), step, keep_last=2)
    assert _steps(tmp_path) == [7, 11] and sorted(os.listdir(tmp_path / "checkpoints")) == \
        ["step_00000007", "step_00000011"]                      # no trash, no temporaries
    paths = checkpoint_paths(str(tmp_path), 11)
    assert paths.directory == str(tmp_path / "checkpoints" / "step_00000011")
    assert sorted(os.listdir(paths.directory)) == ["manifest.json", "model.safetensors"]
    manifest = load_checkpoint(b, newest_checkpoint(str(tmp_path)))
    assert manifest["step"] == 11 and manifest["parts"]["model.safetensors"]["bytes"] == \
        os.path.getsize(paths.shared)
    for name, value in _params(a).items():
        np.testing.assert_array_equal(value, _params(b)[name], err_msg=name)
    assert newest_checkpoint(str(tmp_path / "checkpoints")) == paths.directory     # the checkpoints dir works too


def test_partial_and_truncated_newest_are_skipped_by_name(tmp_path, small_cfg):
    net = build_model(small_cfg())
    for step in (2, 4, 6):
        save_checkpoint(net, str(tmp_path), step)
    os.remove(checkpoint_paths(str(tmp_path), 6).manifest)          # killed before its manifest: partial
    shared4 = checkpoint_paths(str(tmp_path), 4).shared
    with open(shared4, "r+b") as f:                                 # newest complete one truncated
        f.truncate(os.path.getsize(shared4) // 2)
    warnings = []
    assert newest_checkpoint(str(tmp_path), warnings.append) == checkpoint_paths(str(tmp_path), 2).directory
    assert len(warnings) == 2
    assert "step_00000006" in warnings[0] and "no manifest.json" in warnings[0]
    assert "step_00000004" in warnings[1] and "model.safetensors" in warnings[1] and "truncated" in warnings[1]
    assert _steps(tmp_path) == [2, 4, 6]                            # reported, never deleted silently
    with pytest.raises(CheckpointError, match="step_00000004: cannot be loaded: part model.safetensors has"):
        load_checkpoint(net, checkpoint_paths(str(tmp_path), 4).directory)
    log = []
    CheckpointManager(str(tmp_path), keep_last=5, log=log.append).save(net, 8)
    assert _steps(tmp_path) == [2, 4, 8]                            # the partial one is cleaned, by name
    assert any("removing incomplete checkpoint" in line and "step_00000006" in line for line in log)


def test_kill_during_pruning_leaves_no_debris(tmp_path, small_cfg, monkeypatch):
    net = build_model(small_cfg())
    for step in (1, 2):
        save_checkpoint(net, str(tmp_path), step, keep_last=2)
    real_rmtree = ck.shutil.rmtree

    def killed_rmtree(path, ignore_errors=False):       # deletes one file, then the process "dies"
        victim = sorted(os.listdir(path))[0]
        os.remove(os.path.join(path, victim))
        raise KeyboardInterrupt("killed mid-prune")
    monkeypatch.setattr(ck.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(net, str(tmp_path), 3, keep_last=2)
    monkeypatch.setattr(ck.shutil, "rmtree", real_rmtree)
    # every step_* left is complete and loads; the half-deleted one is out of sight under a trash name
    assert _steps(tmp_path) == [2, 3]
    for _, path in step_directories(str(tmp_path)):
        assert ck.checkpoint_problem(path) is None, path
    save_checkpoint(net, str(tmp_path), 4, keep_last=2)              # the next save removes the trash
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_00000003", "step_00000004"]


def test_expert_parts_per_rank(tmp_path, small_cfg):
    """Two ranks of one EP checkpoint, saved in turn in one process: rank r writes only its expert part, rank 0
    the shared part and (last) the manifest naming both; each rank loads the shared part plus its own."""
    cfg = small_cfg()
    nets = [build_model(cfg, seed=1), build_model(cfg, seed=2)]
    from pangu_ms.parallel.grads import expert_param_names
    local = ck.local_parameter_names(nets[0], expert_param_names(nets[0]))
    assert local
    managers = [CheckpointManager(str(tmp_path), r, 2, local, log=lambda _: None) for r in (0, 1)]
    managers[1].save(nets[1], 5)
    assert newest_checkpoint(str(tmp_path)) is None                 # rank 0 has not finished: not complete
    managers[0].save(nets[0], 5)
    d = checkpoint_paths(str(tmp_path), 5).directory
    manifest = ck.read_manifest(d)
    assert sorted(manifest["parts"]) == ["experts_rank0.safetensors", "experts_rank1.safetensors",
                                         "model.safetensors"] and manifest["world"] == 2
    for r, net in enumerate(nets):
        fresh = build_model(cfg, seed=3)
        load_checkpoint(fresh, d, rank=r)
        mine, other, got = _params(net), _params(nets[0]), _params(fresh)
        for name in got:          # experts from this rank's part, everything else from rank 0's shared part
            np.testing.assert_array_equal(got[name], mine[name] if name in local else other[name], err_msg=name)


def test_non_finite_weights_are_never_saved(tmp_path, small_cfg):
    net = build_model(small_cfg())
    save_checkpoint(net, str(tmp_path), 1)
    w = net.embedding.weight
    bad = w.asnumpy()
    bad[0, 0] = np.nan
    w.set_data(Tensor(bad))
    with pytest.raises(CheckpointError, match="not saving checkpoint step 2: parameter 'embedding.weight' is not "
                                              "finite"):
        save_checkpoint(net, str(tmp_path), 2)
    assert newest_checkpoint(str(tmp_path)).endswith("step_00000001")


def test_different_model_shape_is_named(tmp_path, small_cfg):
    save_checkpoint(build_model(small_cfg()), str(tmp_path), 1)
    other = build_model(small_cfg(**{"model.hidden_size": 40}))
    with pytest.raises(CheckpointError, match="parameter 'embedding.weight' has shape \\[64, 32\\] in the "
                                              "checkpoint but \\[64, 40\\]"):
        load_checkpoint(other, newest_checkpoint(str(tmp_path)))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(other, str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="stage.init_from: no complete checkpoint under"):
        ck.resolve_checkpoint(str(tmp_path / "nope"))
