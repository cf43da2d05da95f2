"""Resharding in one process: the model + AdamW state of an EP=2 checkpoint (two ranks' expert parts, saved in
turn) loads into the one-process model (EP 1), and a one-process checkpoint loads into each EP=2 rank's slice;
weights and moments equal the reference (rows of the full tensors) bit for bit. The same loader under msrun:
tests/distributed/test_msrun_train.py."""
import numpy as np
from mindspore import Tensor

from pangu_ms.model import build_model
from pangu_ms.moe.dispatcher import build_dispatcher
from pangu_ms.parallel.grads import expert_param_names
from pangu_ms.train import checkpoint as ck
from pangu_ms.train.checkpoint import CheckpointManager, checkpoint_paths, load_checkpoint
from pangu_ms.train.optim import build_optimizer
from pangu_ms.train.step import TrainStep
from pangu_ms.model import CausalLMLoss


class _Slice:
    """The MoE hooks of one EP rank, without collectives (only the expert slice matters here)."""
    aux_reducer = None

    def __init__(self, first, count):
        self.local_experts = (first, count)

    def dispatcher(self, cfg):
        return build_dispatcher(cfg)


def _step_cell(cfg, hooks=None):
    net = build_model(cfg, hooks=hooks)
    return TrainStep(CausalLMLoss(net, 0.3), build_optimizer(net.trainable_params(), cfg.train), 1.0), net


def _values(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def _randomise(cell, seed):
    rng = np.random.default_rng(seed)
    for p in cell.get_parameters():
        p.set_data(Tensor(rng.standard_normal(p.shape).astype(p.asnumpy().dtype)))


def test_ep2_checkpoint_loads_in_one_process_and_back(tmp_path, small_cfg):
    cfg = small_cfg()
    total = cfg.moe.num_experts
    full, full_net = _step_cell(cfg)
    _randomise(full, 0)                               # weights and AdamW moments all distinct
    ref = _values(full)
    local = ck.local_parameter_names(full, expert_param_names(full_net))
    assert any(n.startswith("adam_m.") for n in local) and any(n.startswith("adam_v.") for n in local)
    ranks = []
    for r in range(2):
        cell, net = _step_cell(cfg, _Slice(r * total // 2, total // 2))
        for p in cell.get_parameters():                 # this rank's rows of the reference
            v = ref[p.name]
            p.set_data(Tensor(v[r * total // 2:(r + 1) * total // 2] if p.name in local else v))
        ranks.append(cell)
    managers = [CheckpointManager(str(tmp_path / "ep2"), r, 2, local, log=lambda _: None,
                                  experts=(r * total // 2, total // 2, total)) for r in range(2)]
    managers[1].save(ranks[1], 3)
    managers[0].save(ranks[0], 3)
    d = checkpoint_paths(str(tmp_path / "ep2"), 3).directory
    manifest = ck.read_manifest(d)
    assert manifest["experts"]["ranges"] == {"experts_rank0.safetensors": [0, 2],
                                             "experts_rank1.safetensors": [2, 2]}
    # EP 2 -> EP 1 (the manager's resume, as the trainer calls it)
    one, _ = _step_cell(cfg)
    got = CheckpointManager(str(tmp_path / "ep2"), log=lambda _: None).resume(one)
    assert got["step"] == 3
    for name, value in _values(one).items():
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
    # EP 1 -> EP 2: a one-process checkpoint into each rank's slice, the whole training state (the loader that
    # resume calls on every rank; rank agreement needs real ranks) and the weights only (stage.init_from)
    ck.save_checkpoint(full, str(tmp_path / "ep1"), 5)
    d1 = checkpoint_paths(str(tmp_path / "ep1"), 5).directory
    for r in range(2):
        lo, hi = r * total // 2, (r + 1) * total // 2
        cell, net = _step_cell(cfg, _Slice(lo, hi - lo))
        load_checkpoint(cell, d1, r, experts=(lo, hi - lo), expert_names=local)
        for name, value in _values(cell).items():
            np.testing.assert_array_equal(value, ref[name][lo:hi] if name in local else ref[name], err_msg=name)
        fresh = build_model(cfg, hooks=_Slice(lo, hi - lo), seed=9)
        load_checkpoint(fresh, d, experts=(lo, hi - lo), expert_names=local)       # from the EP 2 parts too
        for p in fresh.get_parameters():
            want = ref[p.name][lo:hi] if p.name in local else ref[p.name]
            np.testing.assert_array_equal(p.asnumpy(), want, err_msg=p.name)
