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

    def dispatcher(self, cfg, fused_cpu_kernels=False):
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


class _PlacedSlice(_Slice):
    """An EP rank's hooks whose dispatchers carry a placement table (what ``moe.expert_placement`` adds to the
    flat EP dispatcher), without collectives."""

    def dispatcher(self, cfg, fused_cpu_kernels=False):
        from mindspore import Parameter
        d = build_dispatcher(cfg)
        d.placement = Parameter(Tensor(np.arange(cfg.num_experts, dtype=np.int32)), name="placement",
                                requires_grad=False)
        return d


def _placement_of(cell, net):
    from pangu_ms.parallel.placement_executor import ExpertPlacement
    return ExpertPlacement(net, cell, (0, 1), 0, 2, gather=lambda flat: None).placement_of()


def test_checkpoint_under_an_expert_placement_loads_under_any_layout(tmp_path, small_cfg):
    """EP 2 with a non-identity placement (every MoE layer its own table): the parts hold physical slots, the
    manifest names each expert tensor's table. It loads as logical experts into one process and into EP 2
    without placement, with its tables into EP 4 with placement, and the HF exporter's reader sees logical
    experts; a one-process checkpoint loads into EP 2 with placement under the identity table."""
    from pangu_ms.interop.sources import CheckpointSource
    from pangu_ms.parallel.placement_table import experts_at_slots
    cfg = small_cfg()
    total = cfg.moe.num_experts
    full, full_net = _step_cell(cfg)
    _randomise(full, 1)
    ref = _values(full)
    local = ck.local_parameter_names(full, expert_param_names(full_net))
    tables = {}                                           # placement Parameter name -> table
    perms = [[2, 0, 3, 1], [1, 3, 0, 2], [3, 2, 1, 0]]

    def layout(count, placed):
        cells = []
        for r in range(total // count):
            cell, net = _step_cell(cfg, (_PlacedSlice if placed else _Slice)(r * count, count))
            cells.append((cell, net))
        return cells

    ranks = layout(2, True)
    of = _placement_of(*ranks[0])
    assert set(of) == local and len(set(of.values())) == len(perms)          # 2 main-stack MoE layers + MTP
    for k, name in enumerate(sorted(set(of.values()))):
        tables[name] = np.array(perms[k], np.int32)
    for r, (cell, _) in enumerate(ranks):
        for p in cell.get_parameters():
            if p.name in tables:
                p.set_data(Tensor(tables[p.name]))
            elif p.name in local:                            # slot s holds logical expert inv[s]
                inv = experts_at_slots(tables[of[p.name]])
                p.set_data(Tensor(ref[p.name][inv[2 * r:2 * r + 2]]))
            else:
                p.set_data(Tensor(ref[p.name]))
    run = str(tmp_path / "placed")
    for r in (1, 0):
        CheckpointManager(run, r, 2, local, log=lambda _: None, experts=(2 * r, 2, total),
                          placement_of=of).save(ranks[r][0], 4)
    d = checkpoint_paths(run, 4).directory
    assert ck.read_manifest(d)["experts"]["placement"] == of
    # -> one process: logical experts
    one, _ = _step_cell(cfg)
    CheckpointManager(run, log=lambda _: None).resume(one)
    for name, value in _values(one).items():
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
    # -> EP 2 without placement: logical experts 2r, 2r+1
    for r, (cell, _) in enumerate(layout(2, False)):
        load_checkpoint(cell, d, r, experts=(2 * r, 2), expert_names=local)
        for name, value in _values(cell).items():
            np.testing.assert_array_equal(value, ref[name][2 * r:2 * r + 2] if name in local else ref[name], name)
    # -> EP 4 with placement: the saved tables, rank r holds slot r = logical expert inv[r]
    for r, (cell, net) in enumerate(layout(1, True)):
        load_checkpoint(cell, d, r, experts=(r, 1), expert_names=local, placement_of=_placement_of(cell, net))
        for name, value in _values(cell).items():
            if name in tables:
                assert value.tolist() == tables[name].tolist(), name
            elif name in local:
                inv = experts_at_slots(tables[of[name]])
                np.testing.assert_array_equal(value, ref[name][inv[r:r + 1]], err_msg=name)
            else:
                np.testing.assert_array_equal(value, ref[name], err_msg=name)
    # the converter's reader: logical experts, whole and in row ranges
    source = CheckpointSource(d)
    for name in local:
        np.testing.assert_array_equal(source.read(name), ref[name], err_msg=name)
        np.testing.assert_array_equal(source.read(name, 1, 3), ref[name][1:3], err_msg=name)
    # one-process checkpoint -> EP 2 with placement: identity tables, logical slices
    ck.save_checkpoint(full, str(tmp_path / "one"), 2)
    d1 = checkpoint_paths(str(tmp_path / "one"), 2).directory
    for r, (cell, net) in enumerate(layout(2, True)):
        for name in tables:                                 # a table that must be overwritten
            dict((p.name, p) for p in cell.get_parameters())[name].set_data(Tensor(np.array(perms[0], np.int32)))
        load_checkpoint(cell, d1, r, experts=(2 * r, 2), expert_names=local, placement_of=_placement_of(cell, net))
        for name, value in _values(cell).items():
            want = list(range(total)) if name in tables else \
                ref[name][2 * r:2 * r + 2] if name in local else ref[name]
            np.testing.assert_array_equal(value, want, err_msg=name)
