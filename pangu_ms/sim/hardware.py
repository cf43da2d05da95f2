"""Hardware profiles: peak FLOPs, memory, links and measured efficiency curves, read from YAML.

A profile YAML (``yaml/hardware/<name>.yaml``) has these keys (SI units: FLOP/s, bytes, bytes/s, seconds)::

    name, description
    peak_flops: {bf16: .., fp8: .., fp32: ..}     dense peak per device and dtype
    mfu_peak_dtype: bf16                          the peak MFU is quoted against
    hbm_bytes, usable_hbm_bytes, hbm_bandwidth
    reserved_bytes                                framework / workspace / fragmentation reserve per device
    devices_per_node
    intra_node: {bandwidth, latency, efficiency, topology}
                                                  per-device unidirectional bandwidth inside a node; topology
                                                  ``switch`` (NVSwitch: full bandwidth between any pair) or
                                                  ``mesh`` (HCCS full mesh: a group of n of the node's D devices
                                                  uses n-1 of its D-1 links, bandwidth * (n-1)/(D-1))
    inter_node: {bandwidth, latency, efficiency}  per-device unidirectional bandwidth between nodes (NIC);
                                                  efficiency = [[message_bytes, fraction_of_bandwidth], ...]
    host_bandwidth                                device <-> host (swap) per device
    gemm_efficiency: [[flops_per_call, fraction_of_peak], ...]
    attention_efficiency: fraction of peak of the fused (flash) attention kernel, fwd+bwd average
    elementwise_efficiency: fraction of hbm_bandwidth reached by memory-bound kernels
    broadcast_efficiency: fraction of hbm_bandwidth reached by element-wise kernels that broadcast an operand or
        reduce an axis; used only for the unfused reference (CPU) implementation, where ``calibrate`` measures it
        (MindSpore's CPU kernels: ~0.2); defaults to elementwise_efficiency
    op_overhead: fixed seconds per launched kernel (launch / scheduling)
    fp8_gemm_efficiency_scale: FP8 GEMMs reach this fraction of the BF16 curve's efficiency (relative to the FP8
        peak); 1.0 = the same curve. Sourced per profile
    comm_compute_slowdown: fractional slowdown of compute kernels while a communication kernel runs beside them
        (EP all-to-all overlap, sim/overlap.py); 0 = none. Sourced per profile
    step_overhead: fixed seconds per training-step call (graph launch, inputs, host sync); measured on CPU by
        ``calibrate``, 0 (negligible against multi-second steps) in the accelerator profiles
    host_shared: the "devices" are processes sharing one host's cores (the CPU profile: msrun ranks on this
        machine); ``devices_per_node`` is then the ranks one host runs, one per core. The compute rates (peaks,
        memory bandwidth) are measured by a single process using every core, so a rank of a job with r ranks
        on the host gets 1/r of them (:meth:`HardwareProfile.per_rank`); the per-kernel overhead is host
        dispatch on the rank's own core and stays. false (default): dedicated accelerators

Efficiency curves are interpolated linearly in log10(size) and clamped at both ends.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import yaml

from ..config.loader import ConfigError, parse_yaml_file

HARDWARE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "yaml", "hardware")


@dataclass(frozen=True)
class Curve:
    """Piecewise-linear efficiency curve in log10(x); clamped outside the measured range."""

    xs: tuple
    ys: tuple
    _lx: tuple = field(default=(), repr=False)

    @classmethod
    def from_points(cls, points, what: str) -> "Curve":
        pts = sorted((float(a), float(b)) for a, b in points)
        if not pts or any(x <= 0 or not 0 < y <= 1.0 for x, y in pts):
            raise ConfigError(f"{what}: need [[size > 0, efficiency in (0, 1]], ...], got {points!r}")
        xs, ys = zip(*pts)
        return cls(xs, ys, tuple(math.log10(x) for x in xs))

    def __call__(self, x: float) -> float:
        if x <= self.xs[0]:
            return self.ys[0]
        if x >= self.xs[-1]:
            return self.ys[-1]
        lx = math.log10(x)
        lo = self._lx
        for i in range(1, len(lo)):
            if lx <= lo[i]:
                t = (lx - lo[i - 1]) / (lo[i] - lo[i - 1])
                return self.ys[i - 1] + t * (self.ys[i] - self.ys[i - 1])
        return self.ys[-1]

    def points(self) -> list:
        return [[x, y] for x, y in zip(self.xs, self.ys)]


@dataclass(frozen=True)
class Link:
    """A class of link. ``effective_bandwidth(msg)`` = bandwidth * efficiency(msg)."""

    bandwidth: float       # bytes/s per device, one direction
    latency: float         # seconds per message step
    efficiency: Curve
    topology: str = "switch"

    def effective_bandwidth(self, message_bytes: float) -> float:
        return self.bandwidth * self.efficiency(max(message_bytes, 1.0))


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    peak_flops: dict
    mfu_peak_dtype: str
    hbm_bytes: float
    usable_hbm_bytes: float
    hbm_bandwidth: float
    reserved_bytes: float
    devices_per_node: int
    intra_node: Link
    inter_node: Link
    host_bandwidth: float
    gemm_efficiency: Curve
    attention_efficiency: float
    elementwise_efficiency: float
    op_overhead: float = 0.0
    step_overhead: float = 0.0
    description: str = ""
    broadcast_efficiency: float = 0.0      # 0: same as elementwise_efficiency
    comm_compute_slowdown: float = 0.0     # compute slowdown beside a communication kernel (overlap.py)
    fp8_gemm_efficiency_scale: float = 1.0  # FP8 GEMM efficiency relative to the BF16 curve
    host_shared: bool = False              # devices = processes sharing one host's cores (CPU profile)

    def peak(self, dtype: str) -> float:
        if dtype not in self.peak_flops:
            raise ConfigError(f"hardware {self.name}: no peak_flops.{dtype} in the profile")
        return float(self.peak_flops[dtype])

    def per_rank(self, ranks_on_host: int) -> "HardwareProfile":
        """The profile one rank sees when ``ranks_on_host`` ranks share the host (``host_shared``): peaks, memory
        bandwidth and memory divided by that count, everything else unchanged; self for dedicated devices."""
        if not self.host_shared or ranks_on_host <= 1:
            return self
        r = float(ranks_on_host)
        return dataclasses.replace(self, peak_flops={k: v / r for k, v in self.peak_flops.items()},
                                   hbm_bandwidth=self.hbm_bandwidth / r, hbm_bytes=self.hbm_bytes / r,
                                   usable_hbm_bytes=self.usable_hbm_bytes / r)

    @property
    def mfu_peak(self) -> float:
        """The peak MFU is quoted against (printed with every MFU)."""
        return self.peak(self.mfu_peak_dtype)

    def link(self, spans_nodes: bool) -> Link:
        return self.inter_node if spans_nodes else self.intra_node

    def as_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description,
            "peak_flops": dict(self.peak_flops), "mfu_peak_dtype": self.mfu_peak_dtype,
            "hbm_bytes": self.hbm_bytes, "usable_hbm_bytes": self.usable_hbm_bytes,
            "hbm_bandwidth": self.hbm_bandwidth, "reserved_bytes": self.reserved_bytes,
            "devices_per_node": self.devices_per_node,
            "intra_node": {"bandwidth": self.intra_node.bandwidth, "latency": self.intra_node.latency,
                           "efficiency": self.intra_node.efficiency.points(),
                           "topology": self.intra_node.topology},
            "inter_node": {"bandwidth": self.inter_node.bandwidth, "latency": self.inter_node.latency,
                           "efficiency": self.inter_node.efficiency.points()},
            "host_bandwidth": self.host_bandwidth,
            "gemm_efficiency": self.gemm_efficiency.points(),
            "attention_efficiency": self.attention_efficiency,
            "elementwise_efficiency": self.elementwise_efficiency,
            "broadcast_efficiency": self.broadcast_efficiency or self.elementwise_efficiency,
            "op_overhead": self.op_overhead,
            "step_overhead": self.step_overhead,
            "comm_compute_slowdown": self.comm_compute_slowdown,
            "fp8_gemm_efficiency_scale": self.fp8_gemm_efficiency_scale,
            "host_shared": self.host_shared,
        }


_REQUIRED = ("peak_flops", "hbm_bytes", "hbm_bandwidth", "devices_per_node", "intra_node", "inter_node",
             "gemm_efficiency")


def _link(d: dict, what: str) -> Link:
    for k in ("bandwidth", "efficiency"):
        if k not in d:
            raise ConfigError(f"{what}: missing key '{k}'")
    topo = str(d.get("topology", "switch"))
    if topo not in ("switch", "mesh"):
        raise ConfigError(f"{what}.topology: '{topo}' is not one of switch, mesh")
    return Link(float(d["bandwidth"]), float(d.get("latency", 0.0)), Curve.from_points(d["efficiency"], what),
                topo)


def _flag(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{what}: expected true or false, got {v!r}")
    return v


def profile_from_dict(d: dict, name: str = "custom") -> HardwareProfile:
    """Build a profile from a mapping (as read from YAML); missing required keys raise ConfigError."""
    for k in _REQUIRED:
        if k not in d:
            raise ConfigError(f"hardware {name}: missing key '{k}'")
    try:
        hbm = float(d["hbm_bytes"])
        return HardwareProfile(
            name=str(d.get("name", name)),
            description=str(d.get("description", "")),
            peak_flops={str(k): float(v) for k, v in d["peak_flops"].items()},
            mfu_peak_dtype=str(d.get("mfu_peak_dtype", "bf16")),
            hbm_bytes=hbm,
            usable_hbm_bytes=float(d.get("usable_hbm_bytes", hbm)),
            hbm_bandwidth=float(d["hbm_bandwidth"]),
            reserved_bytes=float(d.get("reserved_bytes", 0.0)),
            devices_per_node=int(d["devices_per_node"]),
            intra_node=_link(d["intra_node"], f"hardware {name}: intra_node"),
            inter_node=_link(d["inter_node"], f"hardware {name}: inter_node"),
            host_bandwidth=float(d.get("host_bandwidth", 1.0e10)),
            gemm_efficiency=Curve.from_points(d["gemm_efficiency"], f"hardware {name}: gemm_efficiency"),
            attention_efficiency=float(d.get("attention_efficiency", 0.5)),
            elementwise_efficiency=float(d.get("elementwise_efficiency", 0.7)),
            broadcast_efficiency=float(d.get("broadcast_efficiency", d.get("elementwise_efficiency", 0.7))),
            op_overhead=float(d.get("op_overhead", 0.0)),
            step_overhead=float(d.get("step_overhead", 0.0)),
            comm_compute_slowdown=float(d.get("comm_compute_slowdown", 0.0)),
            fp8_gemm_efficiency_scale=float(d.get("fp8_gemm_efficiency_scale", 1.0)),
            host_shared=_flag(d.get("host_shared", False), f"hardware {name}: host_shared"),
        )
    except (TypeError, ValueError, KeyError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"hardware {name}: bad value ({e})") from None


def available_profiles() -> list:
    return sorted(f[:-5] for f in os.listdir(HARDWARE_DIR) if f.endswith(".yaml"))


def load_hardware(name_or_path: str) -> HardwareProfile:
    """Load ``yaml/hardware/<name>.yaml`` or an explicit YAML path."""
    path = name_or_path
    if not (path.endswith((".yaml", ".yml")) or os.sep in path):
        path = os.path.join(HARDWARE_DIR, f"{name_or_path}.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"sim.hardware: unknown profile '{name_or_path}' (known: "
                          f"{', '.join(available_profiles())}, or a path to a profile YAML)")
    data = parse_yaml_file(path) or {}          # ConfigError naming the file if not UTF-8 / YAML / a mapping
    return profile_from_dict(data, os.path.splitext(os.path.basename(path))[0])


def save_hardware(profile: HardwareProfile, path: str, header: str = "") -> None:
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write("".join(f"# {line}\n" for line in header.splitlines()))
        yaml.safe_dump(profile.as_dict(), f, sort_keys=False)
