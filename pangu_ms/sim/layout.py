"""The layout the simulator evaluates: the training layout (:class:`pangu_ms.parallel.dims.ParallelDims`) of a
:class:`Config` on a cluster, checked by the same validation training runs.

``resolve_layout(cfg, devices, devices_per_node)`` fills ``parallel.dp = devices / (tp * pp * cp)`` when a cluster
size is given and ``parallel.ranks_per_node`` from the hardware profile, then runs ``validate_config`` and
``layout_problems`` (the checks ``tools/show_plan.py`` and ``run/train.py`` run): a layout training rejects is
rejected here with the same message, as a :class:`LayoutError` (a ``ConfigError``), and every layout it accepts
is simulated. Group geometry: see ``parallel/dims.py``.
"""
from __future__ import annotations

import dataclasses

from ..config.loader import ConfigError
from ..config.schema import Config
from ..config.validate import validate_config
from ..parallel.dims import ParallelDims, layout_problems


class LayoutError(ConfigError):
    """An impossible parallel layout; the message starts with the offending key."""


def _with_parallel(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, **kw))


def apply_devices(cfg: Config, devices: int) -> Config:
    """Return cfg with ``parallel.dp`` derived from the cluster size."""
    p = cfg.parallel
    per_replica = p.tp * p.pp * p.cp
    if devices <= 0:
        raise LayoutError(f"sim.devices: must be > 0, got {devices}")
    if devices % per_replica:
        raise LayoutError(f"sim.devices: {devices} devices are not divisible by tp*pp*cp = "
                          f"{p.tp}*{p.pp}*{p.cp} = {per_replica}")
    return _with_parallel(cfg, dp=devices // per_replica, device_num=0)


def resolve_layout(cfg: Config, devices: int | None = None, devices_per_node: int | None = None,
                   validate: bool = True) -> tuple[Config, ParallelDims]:
    """Check cfg (+ cluster size, + the profile's devices per node) and return ``(resolved cfg, ParallelDims)``.

    The resolved cfg is the recipe that runs this layout (``tools/simulate.py --emit-recipe`` writes it).
    Raises LayoutError with the first problem of ``validate_config`` / ``layout_problems``.
    """
    devices = devices or cfg.sim.devices or 0
    if devices:
        cfg = apply_devices(cfg, devices)
    if devices_per_node and devices_per_node != cfg.parallel.ranks_per_node:
        cfg = _with_parallel(cfg, ranks_per_node=devices_per_node)
    if validate:
        try:
            validate_config(cfg)
        except LayoutError:
            raise
        except ConfigError as e:
            raise LayoutError(str(e)) from None
        problems = layout_problems(cfg)
        if problems:
            raise LayoutError(problems[0])
    return cfg, ParallelDims.from_config(cfg)
