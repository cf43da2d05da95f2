"""PNG plots of a search: the MFU-vs-memory Pareto front and time-breakdown bars of the top candidates."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BREAKDOWN = (("compute_s", "compute"), ("recompute_s", "recompute"), ("tp_exposed_s", "TP comm"),
             ("ep_exposed_s", "EP all-to-all"), ("pp_p2p_s", "PP p2p"), ("bubble_s", "bubble"),
             ("dp_exposed_s", "DP reduce"), ("other_s", "optimizer/swap"))


def pareto_front(rows: list) -> list:
    """Feasible candidates not dominated in (higher MFU, lower memory), sorted by memory."""
    pts = sorted((r for r in rows if r["fits"]), key=lambda r: (r["memory_gb"], -r["mfu"]))
    front, best = [], -1.0
    for r in pts:
        if r["mfu"] > best:
            front.append(r)
            best = r["mfu"]
    return front


def plot_pareto(rows: list, path: str, hbm_gb: float | None = None, peak_note: str = "") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = [r for r in rows if r["fits"]]
    bad = [r for r in rows if not r["fits"]]
    ax.scatter([r["memory_gb"] for r in bad], [100 * r["mfu"] for r in bad], s=4, c="lightgray", label="OOM")
    ax.scatter([r["memory_gb"] for r in ok], [100 * r["mfu"] for r in ok], s=4, c="tab:blue", alpha=0.5,
               label="fits")
    front = pareto_front(rows)
    ax.plot([r["memory_gb"] for r in front], [100 * r["mfu"] for r in front], "r.-", label="Pareto front")
    if hbm_gb:
        ax.axvline(hbm_gb, color="k", ls="--", lw=0.8, label="usable HBM")
    ax.set_xlabel("memory per device (GiB)")
    ax.set_ylabel(f"MFU (%) {peak_note}")
    ax.set_title("Search: MFU vs memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_breakdown(rows: list, path: str, top: int = 10) -> None:
    sel = [r for r in rows if r["fits"]][:top]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"L{r['layers']} h{r['hidden']} E{r['experts']}\ntp{r['tp']} pp{r['pp']}x{r['vpp']} ep{r['ep']}"
              f" mb{r['micro_batch_size']}" for r in sel]
    bottom = [0.0] * len(sel)
    for key, name in BREAKDOWN:
        vals = [r[key] for r in sel]
        ax.bar(range(len(sel)), vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(sel)))
    ax.set_xticklabels(labels, fontsize=6, rotation=45, ha="right")
    ax.set_ylabel("seconds per step")
    ax.set_title("Step-time breakdown of the top candidates")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
