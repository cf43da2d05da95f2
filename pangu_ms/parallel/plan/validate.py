"""Checks of the plan as data (products, divisibility, chaining, stages)."""
from __future__ import annotations

from math import prod

from ...config import ConfigError
from .specs import MESHES, OpPlan, ShardPlan


def plan_problems(plan: ShardPlan) -> list[str]:
    """Check the plan as data; one message per problem (empty = valid)."""
    out = []
    sizes = plan.axis_sizes
    world, stage = plan.dims.world, plan.dims.stage_size
    for name, mesh in MESHES.items():
        n = prod(sizes[a] for a in mesh)
        if n != stage:
            out.append(f"mesh {name}: device matrix {tuple(sizes[a] for a in mesh)} has {n} devices, "
                       f"a stage has {stage}")
    specs = [(f"param {p.pattern}", p.spec) for p in plan.params]
    specs += [(f"op {o.name} input {t.name}", t) for o in plan.ops for t in o.inputs]
    for where, s in specs:
        axes = s.axes()
        if len(axes) != len(set(axes)):
            out.append(f"{where}: a mesh axis shards two dimensions ({s.dims})")
        unknown = [a for a in axes if a not in MESHES[s.mesh]]
        if unknown:
            out.append(f"{where}: axes {unknown} are not in the {s.mesh} mesh {MESHES[s.mesh]}")
            continue
        f = s.factors(sizes)
        if prod(f) != prod(sizes[a] for a in axes):
            out.append(f"{where}: strategy {f} product != devices of its axes {axes}")
        if prod(f) > stage or prod(f) > world:
            out.append(f"{where}: strategy {f} uses {prod(f)} devices > stage size {stage}")
        for i, (dim, k) in enumerate(zip(s.shape, f)):
            if dim % k:
                out.append(f"{where}: dim {i} ({dim}) is not divisible by its shard factor {k} ({'*'.join(s.dims[i])})")
            elif s.fused_halves > 1 and k > 1 and i == (0 if len(s.shape) == 2 else 2) and \
                    (dim // s.fused_halves) % k:
                out.append(f"{where}: each of the {s.fused_halves} fused halves of dim {i} "
                           f"({dim // s.fused_halves}) is not divisible by {k}")
    for o in plan.ops:
        out += _op_consistency(o)
    # heads must not be cut: q/kv column splits are per head
    m_heads = [o for o in plan.ops if o.name == "attention.core"]
    for o in m_heads:
        nh = o.inputs[0].shape[1]
        k = o.inputs[0].factors(sizes)[1]
        if nh % k:
            out.append(f"op attention.core: {nh} heads not divisible by tp={k}")
    out += _stage_problems(plan)
    return out


def _op_consistency(o: OpPlan) -> list[str]:
    a, b = o.inputs[0], o.inputs[1] if len(o.inputs) > 1 else None
    if o.prim == "MatMul":  # x [T, K] @ W[N, K]^T
        if a.dims[1] != b.dims[1]:
            return [f"op {o.name}: contracted dim split differently in x {a.dims[1]} and weight {b.dims[1]}"]
        if a.shape[1] != b.shape[1]:
            return [f"op {o.name}: x width {a.shape[1]} != weight in-dim {b.shape[1]}"]
    if o.prim == "BatchMatMul":  # x [E, C, K] @ W[E, K, N]
        if a.dims[0] != b.dims[0] or a.dims[2] != b.dims[1]:
            return [f"op {o.name}: batch/contracted dims split differently ({a.dims} vs {b.dims})"]
        if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
            return [f"op {o.name}: shapes {a.shape} and {b.shape} do not chain"]
    return []


def _stage_problems(plan: ShardPlan) -> list[str]:
    st = plan.stages
    out = []
    items = [it for c in st.chunks for it in c]
    layers = [int(i.split(".")[1]) for i in items if i.startswith("layers.")]
    if layers != sorted(layers) or len(set(layers)) != len(layers):
        out.append("stages: decoder layers are not assigned exactly once in order")
    mtp = [i for i in items if i.startswith("mtp.")]
    if any(st.stage_of[i] != st.pp - 1 for i in mtp):
        out.append("stages: an MTP module is not on the last pipeline stage")
    if any(not c for c in st.chunks):
        out.append("stages: an empty virtual stage")
    return out


def validate_plan(plan: ShardPlan) -> ShardPlan:
    probs = plan_problems(plan)
    if probs:
        raise ConfigError(f"shard plan: {probs[0]}")
    return plan
