"""Which block of a tensor a rank holds, and the fused gate/up row order for TP splits."""
from __future__ import annotations

from .specs import MESHES, ShardPlan, TensorSpec


def local_slice(plan: ShardPlan, spec: TensorSpec, rank: int) -> tuple:
    """The index range ``(start, stop)`` per tensor dim held by global ``rank`` under ``spec``.

    Uses MindSpore's Layout semantics only: the stage's device matrix is row-major over the local rank (last
    axis fastest) and a dim sharded by several axes is split major-first.
    """
    names = MESHES[spec.mesh]
    sizes = [plan.axis_sizes[a] for a in names]
    local = rank % plan.dims.stage_size
    coord = {}
    for a, n in zip(reversed(names), reversed(sizes)):
        coord[a] = local % n
        local //= n
    out = []
    for dim, axes in zip(spec.shape, spec.dims):
        idx, k = 0, 1
        for a in axes:
            idx = idx * plan.axis_sizes[a] + coord[a]
            k *= plan.axis_sizes[a]
        step = dim // k
        out.append((idx * step, (idx + 1) * step))
    return tuple(out)


def fused_shard_permutation(total: int, shards: int, halves: int = 2) -> list[int]:
    """Row order that makes a fused ``[gate; up]`` dim TP-splittable: new row i comes from old row perm[i].

    After permuting, the contiguous slice k of size total/shards is ``[gate_k; up_k]``.
    """
    if total % (halves * shards):
        raise ValueError(f"{total} rows cannot be split into {halves} halves x {shards} shards")
    h = total // halves
    blk = h // shards
    return [half * h + k * blk + r for k in range(shards) for half in range(halves) for r in range(blk)]
