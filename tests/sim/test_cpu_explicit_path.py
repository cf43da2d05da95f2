"""The simulator's model of the explicit CPU path under msrun: the fitted AllReduce link reproduces its
measurements, ranks sharing a host divide its compute, and the reference all-to-all is the gather of the static
slot buffer (hand-computed)."""
import dataclasses

import pytest

from pangu_ms.config import load_config
from pangu_ms.sim.calibrate_comm import link_from_allreduce
from pangu_ms.sim.comm import CommModel, allgather_time, allreduce_time
from pangu_ms.sim.estimate import estimate
from pangu_ms.sim.hardware import load_hardware, profile_from_dict
from pangu_ms.parallel.dims import validate_layout
from tools.validate_sim_cpu import SIM_CPU      # the CPU reference-path settings: one place



def _cpu(link=None):
    d = load_hardware("cpu_local").as_dict()
    d.update(host_shared=True, devices_per_node=2)
    if link:
        d["intra_node"] = link
    return profile_from_dict(d, "cpu_test")


def test_fitted_link_reproduces_the_measured_allreduce():
    lat, bw = 120e-6, 2.0e8
    pts = {b: 2 * (0.5 * b / bw + lat) for b in (4096, 65536, 1 << 20, 16 << 20)}
    pts[4096] *= 3.0                       # a slow small message: the efficiency curve absorbs it
    hw = _cpu(link_from_allreduce(pts, 2))
    for b, t in pts.items():
        assert allreduce_time(b, 2, hw, False) == pytest.approx(t, rel=1e-6)
    with pytest.raises(ValueError):
        link_from_allreduce(pts, 1)


def test_ranks_sharing_the_host_divide_its_compute():
    hw = _cpu()
    half = hw.per_rank(2)
    assert half.mfu_peak == pytest.approx(hw.mfu_peak / 2) and half.hbm_bandwidth == pytest.approx(hw.hbm_bandwidth / 2)
    assert half.op_overhead == hw.op_overhead and half.intra_node == hw.intra_node
    dedicated = dataclasses.replace(hw, host_shared=False)
    assert dedicated.per_rank(2) is dedicated
    cfg1 = load_config("yaml/tiny_cpu.yaml", SIM_CPU + ["model.num_layers=2"])
    one = estimate(cfg1, hw, 1).breakdown_s["compute_fwd_bwd"]
    cfg2 = load_config("yaml/tiny_cpu.yaml", SIM_CPU + ["model.num_layers=2", "parallel.dp=2", "parallel.ep=1",
                                                        "parallel.micro_batch_size=4"])
    two = estimate(cfg2, hw, 2).breakdown_s["compute_fwd_bwd"]
    two_dedicated = estimate(cfg2, dedicated, 2).breakdown_s["compute_fwd_bwd"]
    assert two > two_dedicated           # half the batch on half the host is slower than on a whole device
    assert one > two_dedicated


def test_reference_alltoall_is_the_gather_of_the_slot_buffer():
    hw = _cpu()
    cfg = load_config("yaml/tiny_cpu.yaml", SIM_CPU + ["parallel.dp=2", "parallel.ep=2", "parallel.micro_batch_size=4"])
    L = validate_layout(cfg, 2)
    lc = CommModel(cfg, L, hw).layer(True)
    tokens = 4 * cfg.train.seq_length
    buf = cfg.moe.num_experts * tokens * cfg.model.hidden_size * 4.0     # [E*C, h] fp32, C = T (dropless)
    expect = allgather_time(2 * buf, 2, hw, False)                       # EP group = the world: AllGather
    assert lc.ep_dispatch == pytest.approx(expect) and lc.ep_combine == pytest.approx(expect)
    assert lc.a2a_bytes == pytest.approx(4 * buf)


def test_the_validation_run_profile_shares_the_host_between_its_ranks():
    """tools/validate_sim_cpu.py predicts its msrun cases with the profile it calibrated: with msrun cases the two
    ranks share this host, so a DP2 rank gets half the compute of the single-process calibration."""
    from tools.validate_sim_cpu import in_run_profile
    prof = load_hardware("cpu_local").as_dict()
    prof.update(host_shared=False, devices_per_node=1)
    link = {"bandwidth": 5e8, "latency": 5e-4, "efficiency": [[1.0, 1.0]]}
    single = in_run_profile(prof, None, 1)
    shared = in_run_profile(prof, link, 2)
    assert not single.host_shared and shared.host_shared and shared.devices_per_node == 2
    assert shared.intra_node.bandwidth == link["bandwidth"] and shared.intra_node.latency == link["latency"]
    cfg = load_config("yaml/tiny_cpu.yaml", SIM_CPU + ["parallel.dp=2", "parallel.ep=1", "parallel.micro_batch_size=4"])
    half = estimate(cfg, shared, 2).breakdown_s["compute_fwd_bwd"]
    whole = estimate(cfg, dataclasses.replace(shared, host_shared=False), 2).breakdown_s["compute_fwd_bwd"]
    assert half > 1.2 * whole            # compute at half rate (the per-kernel overhead is not divided)
