"""Pipeline stage assignment with virtual pipeline chunks (VPP), MTP on the last stage.

Model order is ``embedding, layers.0 .. layers.{L-1}, [final_norm, lm_head], mtp.0 .. mtp.{D-1}``. The L decoder
layers followed by the D MTP modules (``N = L + D`` items) are cut into ``C = pp * vpp`` consecutive *virtual
chunks*; chunk ``c`` runs on physical stage ``c % pp`` as its virtual chunk ``c // pp`` (Megatron / MindFormers
interleaving: stage s holds chunks s, s + pp, ...). Chunk 0 (stage 0) also holds the embedding; the last chunk
(stage pp-1) holds final_norm + lm_head and the MTP block, which re-uses the embedding and LM head.

How many items each chunk gets is :func:`pangu_ms.parallel.split.pipeline_split` (``parallel.pipeline_split``:
balanced / time_balanced / memory_aware / explicit), the function the simulator uses too. ``balanced`` gives
the lighter chunks to the ends, last first (the last chunk also computes the LM head, twice with MTP: a
7680 x 153600 projection costs more than one MoE layer's active experts). For the 718B recipe
(61 + 1 = 62 items, pp 16 x vpp 2 = 32 chunks) that gives chunk 0 = layer 0, chunks 1..30 = two layers each
(layers 1..60), chunk 31 = the MTP module; i.e. stage 0 runs 3 decoder layers (+ embedding), stages 1..14 run 4,
stage 15 runs 2 decoder layers + final norm + LM head + MTP.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .split import ItemCosts, chunk_sizes, pipeline_split, split_items


@dataclass
class StageAssignment:
    """Result of :func:`assign_stages`.

    Attributes:
        pp / vpp: physical stages and virtual chunks per stage.
        split: how the chunk sizes were chosen (split.PipelineSplit.method).
        chunks: for each virtual chunk c (model order), the item names it runs (``layers.i`` / ``mtp.j``).
        stage_of: item name -> physical stage (also ``embedding``, ``final_norm``, ``lm_head``).
        chunk_of: item name -> virtual chunk index c (stage = c % pp, virtual index = c // pp).
    """

    pp: int
    vpp: int
    split: str = "balanced"
    chunks: list = field(default_factory=list)
    stage_of: dict = field(default_factory=dict)
    chunk_of: dict = field(default_factory=dict)

    def stage_items(self, stage: int) -> list[list[str]]:
        """Items of physical ``stage``, one list per virtual chunk (virtual index order)."""
        return [self.chunks[c] for c in range(stage, self.pp * self.vpp, self.pp)]

    def as_dict(self) -> dict:
        return {
            "pp": self.pp, "vpp": self.vpp, "split": self.split,
            "layers_per_virtual_stage": [len(c) for c in self.chunks],
            "chunks": [{"chunk": c, "stage": c % self.pp, "virtual": c // self.pp, "items": items}
                       for c, items in enumerate(self.chunks)],
            "stage_of": dict(self.stage_of),
        }

    def table(self) -> str:
        lines = []
        for s in range(self.pp):
            parts = []
            for v, items in enumerate(self.stage_items(s)):
                extra = []
                if s == 0 and v == 0:
                    extra.append("embedding")
                if s * 1 + v * self.pp == self.pp * self.vpp - 1:
                    extra.append("final_norm+lm_head")
                parts.append(f"v{v}: {_compact(items)}" + (f" (+{', '.join(extra)})" if extra else ""))
            lines.append(f"stage {s:>3}: " + " | ".join(parts))
        return "\n".join(lines)


def _compact(items: list[str]) -> str:
    layers = [int(i.split(".")[1]) for i in items if i.startswith("layers.")]
    other = [i for i in items if not i.startswith("layers.")]
    txt = []
    if layers:
        txt.append(f"layers {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}")
    txt += other
    return ", ".join(txt) if txt else "-"


def assign_stages(num_layers: int, mtp_depth: int, pp: int, vpp: int = 1,
                  sizes: list[int] | None = None, split: str = "balanced") -> StageAssignment:
    """Assign decoder layers and MTP modules to virtual chunks / physical stages (see module docstring).

    ``sizes`` overrides the items per chunk (must sum to num_layers + mtp_depth, every entry >= 1, the last
    >= mtp_depth). Raises ValueError on an impossible request.
    """
    if pp <= 0 or vpp <= 0:
        raise ValueError(f"pp and vpp must be > 0, got pp={pp}, vpp={vpp}")
    n_chunks = pp * vpp
    items = split_items(num_layers, mtp_depth)
    if sizes is None:
        sizes = chunk_sizes(len(items), n_chunks)
    sizes = list(sizes)
    if len(sizes) != n_chunks or sum(sizes) != len(items) or min(sizes) < 1:
        raise ValueError(f"chunk sizes {sizes} must be {n_chunks} entries >= 1 summing to {len(items)}")
    if mtp_depth and sizes[-1] < mtp_depth:
        raise ValueError(f"the last virtual stage has {sizes[-1]} slots, fewer than mtp_depth={mtp_depth}")
    out = StageAssignment(pp=pp, vpp=vpp, split=split)
    k = 0
    for c, n in enumerate(sizes):
        chunk = items[k:k + n]
        k += n
        out.chunks.append(chunk)
        for name in chunk:
            out.stage_of[name] = c % pp
            out.chunk_of[name] = c
    out.stage_of["embedding"] = 0
    out.chunk_of["embedding"] = 0
    for name in ("final_norm", "lm_head"):
        out.stage_of[name] = pp - 1
        out.chunk_of[name] = n_chunks - 1
    return out


def assign_from_config(cfg, costs: ItemCosts | None = None) -> StageAssignment:
    """The stages of ``cfg``: the split of ``parallel.pipeline_split`` (``costs``: per-item costs for the
    cost-driven methods, computed by the simulator at the tools layer)."""
    p, m = cfg.parallel, cfg.model
    split = pipeline_split(cfg, costs)
    return assign_stages(m.num_layers, m.mtp_depth, p.pp, p.vpp, sizes=list(split.counts), split=split.method)
