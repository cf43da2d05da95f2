"""Accounting of the optimizer-state swap (``train.swap.optimizer_state`` / ``sim.swap_optimizer``): bytes that leave
the device and the host-link time they cost per step.

With the swap on, the optimizer bytes of a device (``memory.model_state_bytes`` without the swap: 12 B/param in
bf16/fp8 runs -- fp32 master, Adam m, v -- 8 B/param in fp32 runs, divided by the DP group with ZeRO-1) live in
host memory. Each step they cross the host link twice (host -> device before the update, device -> host after it),
so ``host_link_s = 2 * off_device_bytes / hardware.host_bandwidth``, exposed after the backward (the update waits
for every gradient; MindSpore 2.9 has no overlap of this copy with the next forward).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .memory import model_state_bytes


@dataclass(frozen=True)
class OptimizerSwap:
    off_device_bytes: float      # optimizer bytes per device held in host memory instead
    moved_bytes: float           # bytes over the host link per step (both directions)
    host_link_s: float           # seconds per step at the hardware's host bandwidth


def swap_optimizer_enabled(cfg) -> bool:
    """The swap is on by either key: the simulator's ``sim.swap_optimizer`` or the recipe's
    ``train.swap.optimizer_state`` (what the Ascend plan applies)."""
    return bool(cfg.sim.swap_optimizer or cfg.train.swap.optimizer_state)


def optimizer_swap(cfg, layout, dense_params: float, expert_params: float, host_bandwidth: float) -> OptimizerSwap:
    """Bytes off device and host-link time per step for a device holding the given (unsharded) stage parameters
    (the arguments of ``memory.model_state_bytes``); all zero when the swap is off."""
    if not swap_optimizer_enabled(cfg):
        return OptimizerSwap(0.0, 0.0, 0.0)
    unswapped = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, swap_optimizer=False))
    off = model_state_bytes(unswapped, layout, dense_params, expert_params).optimizer
    return OptimizerSwap(off, 2.0 * off, 2.0 * off / host_bandwidth)
