"""The plan's data types: tensor specs, op strategies, parameter layouts and the plan itself."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from math import prod

from ..dims import ParallelDims
from ..stages import StageAssignment

MESHES = {"dense": ("dp", "cp", "tp"), "expert": ("edp", "ep", "etp")}
BYTES_PER_OPT_PARAM = 12  # fp32 master/param + two fp32 Adam moments (what optimizer_level=level1 shards)


@dataclass
class TensorSpec:
    """One tensor's global shape and how each of its dims is split.

    ``dims[i]`` is a tuple of mesh axis names (major first) sharding dimension i; ``()`` = not split.
    """

    name: str
    shape: tuple
    dims: tuple
    mesh: str = "dense"
    fused_halves: int = 1
    note: str = ""

    def factors(self, axis_sizes: dict) -> tuple:
        return tuple(prod(axis_sizes[a] for a in d) for d in self.dims)

    def axes(self) -> list:
        return [a for d in self.dims for a in d]

    def layout_args(self) -> tuple:
        """Arguments of ``Layout(device_matrix, alias)(*args)`` for this tensor."""
        return tuple("None" if not d else (d[0] if len(d) == 1 else tuple(d)) for d in self.dims)


@dataclass
class OpPlan:
    """Strategy of one logical op, instantiated per layer by the cell pattern.

    Attributes:
        name: logical op (``attention.q_b_proj``).
        cell: cell path pattern (``layers.{i}.attention.q_b_proj``), ``{i}`` for decoder layers; relative to the
            model (``root="model"``) or to the loss Cell wrapping it (``root="loss"``).
        prim: MindSpore primitive the strategy is for; ``attr`` the attribute of the cell holding it, or a name in
            the Cell's ``plan_attrs``, whose ``shard(attr, in_strategy)`` maps it onto its named primitives.
        kind: column / row / replicated / vocab / expert / norm / attention / loss.
        inputs: TensorSpecs of the primitive's inputs, in order.
        layers: which decoder layers it exists in: ``all``, ``dense``, ``moe``, ``none`` (model-level op), and
            whether the MTP layer has it (``mtp``).
        seed: part of the seed set for ``sharding_propagation`` (auto-parallel mode).
        comm: collective implied by the strategy (informational).
    """

    name: str
    cell: str
    prim: str
    attr: str
    kind: str
    inputs: list
    layers: str = "all"
    mtp: bool = True
    seed: bool = False
    comm: str = ""
    root: str = "model"

    def mesh(self) -> str:
        return self.inputs[0].mesh


@dataclass
class ParamPlan:
    """Layout of one parameter pattern plus its optimizer-state sharding."""

    pattern: str
    spec: TensorSpec
    layers: str = "all"
    mtp: bool = True
    replicas: int = 1
    opt_shard: int = 1
    opt_note: str = ""


@dataclass
class ShardPlan:
    dims: ParallelDims
    axis_sizes: dict
    params: list
    ops: list
    stages: StageAssignment
    context: dict
    notes: list = field(default_factory=list)
    tokens_per_microbatch: int = 0
    num_micro_batches: int = 1
    hierarchical: bool = False
    memory: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ lookups
    def param(self, pattern: str) -> ParamPlan:
        for p in self.params:
            if p.pattern == pattern:
                return p
        raise KeyError(pattern)

    def op(self, name: str) -> OpPlan:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    def match_param(self, name: str) -> ParamPlan | None:
        """The plan entry of a concrete parameter name (``layers.7.attention.o_proj.weight``)."""
        for p in self.params:
            if _pattern_regex(p.pattern).fullmatch(name):
                return p
        return None

    def strategy(self, op: OpPlan) -> tuple:
        """``in_strategy`` of ``op`` as integer tuples (what ``Primitive.shard`` takes)."""
        return tuple(t.factors(self.axis_sizes) for t in op.inputs)

    def layout(self, op_or_spec) -> dict:
        """Device matrix, alias names and per-input Layout arguments (what ``Layout`` takes)."""
        mesh = op_or_spec.mesh() if isinstance(op_or_spec, OpPlan) else op_or_spec.mesh
        names = MESHES[mesh]
        out = {"device_matrix": tuple(self.axis_sizes[a] for a in names), "alias_name": names}
        if isinstance(op_or_spec, OpPlan):
            out["inputs"] = tuple(t.layout_args() for t in op_or_spec.inputs)
        else:
            out["tensor"] = op_or_spec.layout_args()
        return out

    def as_dict(self) -> dict:
        return {
            "layout": self.dims.summary(),
            "axis_sizes": dict(self.axis_sizes),
            "tokens_per_microbatch": self.tokens_per_microbatch,
            "num_micro_batches": self.num_micro_batches,
            "memory": dict(self.memory),
            "context": copy.deepcopy(self.context),
            "stages": self.stages.as_dict(),
            "params": [{"pattern": p.pattern, "shape": list(p.spec.shape), "mesh": p.spec.mesh,
                        "strategy": list(p.spec.factors(self.axis_sizes)), "layout": list(p.spec.layout_args()),
                        "layers": p.layers, "mtp": p.mtp, "replicas": p.replicas, "opt_shard": p.opt_shard,
                        "opt_note": p.opt_note, "fused_halves": p.spec.fused_halves} for p in self.params],
            "ops": [{"name": o.name, "cell": o.cell, "prim": o.prim, "attr": o.attr, "kind": o.kind,
                     "layers": o.layers, "mtp": o.mtp, "seed": o.seed, "mesh": o.mesh(), "root": o.root,
                     "in_strategy": [list(s) for s in self.strategy(o)],
                     "layout": [list(a) if isinstance(a, tuple) else a for a in
                                (t.layout_args() for t in o.inputs)],
                     "inputs": [{"name": t.name, "shape": list(t.shape)} for t in o.inputs],
                     "comm": o.comm} for o in self.ops],
            "notes": list(self.notes),
        }


def _pattern_regex(pattern: str):
    esc = re.escape(pattern).replace(r"\{i\}", r"\d+").replace(r"\{j\}", r"\d+")
    return re.compile(esc)
