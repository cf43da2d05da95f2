"""Co-design search over model shapes x parallel layouts for a fixed cluster.

Shapes: every combination of ``layers x hidden x experts x top_k`` from the search space; the expert width
``expert_ffn_hidden`` is solved so that the total parameter count (stats.py ``total_params_without_mtp``)
hits the budget, rounded to a multiple of ``ffn_multiple`` (shapes whose rounded count misses the budget by
more than ``tolerance`` or whose expert width falls below ``min_ffn`` are dropped). Attention dims, dense layers,
vocabulary and MTP come from the base recipe.

Activated-parameter target (optional, ``active_budget`` > 0, CLI ``--active-budget``): at a fixed total the solved
expert width leaves the activated parameters per token (stats.py ``active_params``: without MTP and the input
embedding) free; with 128 MLA heads, fixed LoRA ranks and a fixed dense FFN they range from 36B to 42B over
54-70 layers x hidden 6144-8192 at 718B, because a fixed expert-parameter budget fixes the routed-expert FLOPs
per token (k * 3 h f with E * 3 h f ~ budget / layers) while attention and dense-FFN weights grow with h. A
lower-activated shape does less work per token, so tokens/s and (more weakly) MFU favour it, although it is a
smaller model per token. MoE models are specified and compared by both numbers (Pangu Ultra MoE 718B / 39B
activated, DeepSeek-V3 671B / 37B): the total sets the memory footprint and capacity, the activated count the
compute per token in training and inference. With a target, shapes whose activated parameters miss it by more
than ``active_tolerance`` (default: the total's ``tolerance``) are dropped, so the ranking compares hardware
efficiency at matched compute per token.

Layouts: every combination of ``tp x pp x vpp x ep x etp x micro_batch x tp_extend_ep x recompute`` (etp None =
derived from tp and tp_extend_ep, config/expert_grid.py; contradicting pairs are invalid layouts); dp is derived
from the cluster size; the pipeline split is the base recipe's ``parallel.pipeline_split``. Invalid layouts
(validate_config + layout_problems, the checks training runs) are counted and skipped; layouts over
the HBM budget are kept in the results with ``fits = False`` but excluded from the ranking.

Ranking: feasible candidates by ``rank_by`` = ``mfu`` (default; hardware efficiency) or ``tokens_per_s``
(throughput, the metric of the Pangu paper's 61- vs 66-layer comparison; only meaningful between shapes of
similar activated parameters, see above); a shape's rank is the rank of its best feasible layout by the same key.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field

from ..config.expert_grid import expert_sizes
from ..config.loader import ConfigError
from ..config.schema import Config
from ..model.stats import compute_stats
from .estimate import run_with_recompute
from .hardware import HardwareProfile
from .layout import resolve_layout


@dataclass
class SearchSpace:
    layers: list = field(default_factory=lambda: [None])      # None = keep the base value
    hidden: list = field(default_factory=lambda: [None])
    experts: list = field(default_factory=lambda: [None])
    top_k: list = field(default_factory=lambda: [None])
    tp: list = field(default_factory=lambda: [1, 2, 4, 8])
    pp: list = field(default_factory=lambda: [4, 8, 16])
    vpp: list = field(default_factory=lambda: [1, 2])
    ep: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    micro_batch: list = field(default_factory=lambda: [1, 2])
    tp_extend_ep: list = field(default_factory=lambda: [True, False])
    etp: list = field(default_factory=lambda: [None])        # None = derived (tp, or 1 with tp_extend_ep)
    recompute: list = field(default_factory=lambda: ["none", "moe_fine", "full"])
    budget: float = 0.0            # total parameters (without MTP); 0 = keep the base expert width
    tolerance: float = 0.05
    active_budget: float = 0.0     # activated parameters per token (stats.py active_params); 0 = no target
    active_tolerance: float | None = None   # None = the same relative band as ``tolerance``
    rank_by: str = "mfu"           # mfu | tokens_per_s
    ffn_multiple: int = 256
    min_ffn: int = 256


def _replace(cfg: Config, model=None, moe=None, parallel=None, sim=None) -> Config:
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, **model) if model else cfg.model,
        moe=dataclasses.replace(cfg.moe, **moe) if moe else cfg.moe,
        parallel=dataclasses.replace(cfg.parallel, **parallel) if parallel else cfg.parallel,
        sim=dataclasses.replace(cfg.sim, **sim) if sim else cfg.sim)


def solve_expert_ffn(cfg: Config, budget: float, multiple: int) -> int:
    """Expert width that brings total_params_without_mtp closest to ``budget`` (parameters are linear in it)."""
    p1 = compute_stats(_replace(cfg, moe={"expert_ffn_hidden": multiple}), 1).total_params_without_mtp
    p2 = compute_stats(_replace(cfg, moe={"expert_ffn_hidden": 2 * multiple}), 1).total_params_without_mtp
    slope = (p2 - p1) / multiple
    if slope <= 0:
        return cfg.moe.expert_ffn_hidden
    f = multiple + (budget - p1) / slope
    return max(0, int(round(f / multiple)) * multiple)


def shapes(base: Config, space: SearchSpace) -> list:
    """List of (shape dict, Config) for every shape within the budget."""
    out = []
    for L, h, E, k in itertools.product(space.layers, space.hidden, space.experts, space.top_k):
        model, moe = {}, {}
        if L is not None:
            model["num_layers"] = L
        if h is not None:
            model["hidden_size"] = h
        if E is not None:
            moe["num_experts"] = E
        if k is not None:
            moe["top_k"] = k
        cfg = _replace(base, model=model, moe=moe)
        if cfg.moe.enabled and cfg.moe.top_k > cfg.moe.num_experts:
            continue
        if space.budget and cfg.moe.enabled:
            f = solve_expert_ffn(cfg, space.budget, space.ffn_multiple)
            if f < space.min_ffn:
                continue
            cfg = _replace(cfg, moe={"expert_ffn_hidden": f})
            total = compute_stats(cfg, 1).total_params_without_mtp
            if abs(total / space.budget - 1.0) > space.tolerance:
                continue
        st = compute_stats(cfg, 1)
        a_tol = space.tolerance if space.active_tolerance is None else space.active_tolerance
        if space.active_budget and abs(st.active_params / space.active_budget - 1.0) > a_tol:
            continue
        shape = {"layers": cfg.model.num_layers, "hidden": cfg.model.hidden_size,
                 "experts": cfg.moe.num_experts, "top_k": cfg.moe.top_k if cfg.moe.enabled else 0,
                 "expert_ffn": cfg.moe.expert_ffn_hidden if cfg.moe.enabled else 0,
                 "total_params_b": st.total_params_without_mtp / 1e9, "active_params_b": st.active_params / 1e9}
        out.append((shape, cfg))
    return out


def layouts(space: SearchSpace) -> list:
    """Layout dicts; an explicit etp equal to the derived one is the same layout and is listed once."""
    return [dict(tp=tp, pp=pp, vpp=v, ep=ep, etp=et, micro_batch_size=mb, tp_extend_ep=x, recompute=rc)
            for tp, pp, v, ep, et, mb, x, rc in itertools.product(space.tp, space.pp, space.vpp, space.ep, space.etp,
                                                                   space.micro_batch, space.tp_extend_ep,
                                                                   space.recompute)
            if et is None or None not in space.etp or expert_sizes(tp, ep, et, x) != expert_sizes(tp, ep, None, x)]


def candidate_config(cfg: Config, lay: dict) -> Config:
    """The recipe of one candidate: ``cfg`` (a shape) with the layout ``lay`` (a :func:`layouts` entry)."""
    return _replace(cfg, parallel={k: v for k, v in lay.items() if k != "recompute"},
                    sim={"recompute": lay["recompute"]})


def estimate_candidate(cfg: Config, lay: dict, hw: HardwareProfile, devices: int):
    """The Estimate of one candidate; raises ConfigError (LayoutError) when the layout is impossible (the
    checks training runs, sim/layout.py)."""
    c, layout = resolve_layout(candidate_config(cfg, lay), devices, hw.devices_per_node)
    return run_with_recompute(c, layout, hw)


def evaluate(cfg: Config, lay: dict, hw: HardwareProfile, devices: int) -> dict | None:
    """Estimate one candidate; None when the layout is impossible."""
    try:
        est = estimate_candidate(cfg, lay, hw, devices)
    except (ConfigError, ValueError):
        return None
    b = est.breakdown_s
    return {"recompute": est.layout["recompute"], "etp_size": est.layout["etp"], "mfu": est.mfu,
            "tokens_per_s": est.tokens_per_s, "step_time_s": est.step_time_s,
            "memory_gb": est.memory_per_device_gb, "fits": est.fits, "dp": est.layout["dp"],
            "stage_split": est.details["stage_split"],
            "layers_per_virtual_stage": " ".join(map(str, est.details["layers_per_virtual_stage"])),
            "bubble_s": b["pipeline_bubble"], "compute_s": b["compute_fwd_bwd"], "recompute_s": b["recompute"],
            "ep_exposed_s": b["ep_alltoall_exposed"], "tp_exposed_s": b["tp_comm_exposed"],
            "dp_exposed_s": b["dp_reduce_exposed"], "pp_p2p_s": b["pp_p2p"],
            "other_s": b["swap_exposed"] + b["optimizer_step"] + b["optimizer_swap"]}


# ------------------------------------------------------------------ parallel driver
_W: dict = {}


def _init(shape_cfgs, hw, devices):
    _W.update(shapes=shape_cfgs, hw=hw, devices=devices)


def _work(item):
    si, lay = item
    shape, cfg = _W["shapes"][si]
    r = evaluate(cfg, lay, _W["hw"], _W["devices"])
    if r is None:
        return None
    row = dict(shape)
    row.update({k: v for k, v in lay.items()})
    row.update(r)
    return row


def run_search(base: Config, space: SearchSpace, hw: HardwareProfile, devices: int, workers: int = 2,
               progress: bool = True, limit: int = 0) -> dict:
    """Evaluate shapes x layouts; returns {"rows", "evaluated", "invalid", "seconds", "per_minute", "shapes"}."""
    if base.parallel.pipeline_split == "explicit":
        raise ConfigError("parallel.pipeline_split: 'explicit' fixes the layers per virtual stage, but a search "
                          "varies layers and pp; use balanced, time_balanced or memory_aware")
    shape_cfgs = shapes(base, space)
    if not shape_cfgs:
        raise ConfigError("search: no shape satisfies the parameter budget(s); widen --tolerance / "
                          "--active-tolerance or the ranges")
    lays = layouts(space)
    items = [(si, lay) for si in range(len(shape_cfgs)) for lay in lays]
    if limit:
        items = items[:limit]
    t0 = time.perf_counter()
    rows, invalid = [], 0
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(items), unit="cand", smoothing=0.1)
        except ImportError:
            bar = None
    chunk = 64
    pool = None
    if workers > 1 and len(items) > 4 * chunk:
        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
        pool = ctx.Pool(workers, initializer=_init, initargs=(shape_cfgs, hw, devices))
        results = pool.imap_unordered(_work, items, chunksize=chunk)
    else:
        _init(shape_cfgs, hw, devices)
        results = map(_work, items)
    try:
        for r in results:
            if r is None:
                invalid += 1
            else:
                rows.append(r)
            if bar:
                bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if bar:
        bar.close()
    dt = time.perf_counter() - t0
    key = _rank_key(space.rank_by)
    rows.sort(key=lambda r: (not r["fits"], -r[key]))
    return {"rows": rows, "evaluated": len(items), "invalid": invalid, "seconds": dt,
            "per_minute": len(items) / dt * 60.0 if dt > 0 else float("inf"),
            "shapes": [s for s, _ in shape_cfgs]}


SHAPE_KEYS = ("layers", "hidden", "experts", "top_k", "expert_ffn")


def estimate_row(base: Config, space: SearchSpace, hw: HardwareProfile, devices: int, row: dict):
    """Re-run the candidate of a result ``row`` (its shape and layout) and return its Estimate, e.g. to write
    the best candidate's training recipe (sim/recipe.py)."""
    key = tuple(row[k] for k in SHAPE_KEYS)
    cfg = next(c for s, c in shapes(base, space) if tuple(s[k] for k in SHAPE_KEYS) == key)
    lay = {k: row[k] for k in layouts(space)[0]}
    return estimate_candidate(cfg, lay, hw, devices)


RANK_KEYS = ("mfu", "tokens_per_s")


def _rank_key(rank_by: str) -> str:
    if rank_by not in RANK_KEYS:
        raise ConfigError(f"search: rank_by '{rank_by}' is not one of {', '.join(RANK_KEYS)}")
    return rank_by


def shape_ranking(rows: list, rank_by: str = "mfu") -> list:
    """Best feasible candidate per shape by ``rank_by`` (mfu | tokens_per_s), shapes ranked by it."""
    k = _rank_key(rank_by)
    best: dict = {}
    for r in rows:
        if not r["fits"]:
            continue
        key = tuple(r[c] for c in SHAPE_KEYS)
        if key not in best or r[k] > best[key][k]:
            best[key] = r
    return sorted(best.values(), key=lambda r: -r[k])


COLUMNS = ("layers", "hidden", "experts", "top_k", "expert_ffn", "total_params_b", "active_params_b", "tp", "pp",
           "vpp", "ep", "etp_size", "dp", "micro_batch_size", "tp_extend_ep", "recompute", "mfu", "tokens_per_s",
           "step_time_s", "memory_gb", "fits", "tie")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows: list, top: int = 20, columns=COLUMNS) -> str:
    lines = ["| rank | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for i, r in enumerate(rows[:top], 1):
        lines.append(f"| {i} | " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_csv(rows: list, path: str) -> None:
    if not rows:
        open(path, "w").close()
        return
    keys = list(rows[0].keys())
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
