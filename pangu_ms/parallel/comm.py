"""Collectives of the explicit expert/data-parallel path behind one interface, per process group.

Interface (every Cell works on dim 0 and keeps the trailing dims; ``n`` = group size, ``r`` = this rank's index
in the group, members ordered by global rank):

    AllToAll(group)(x [n*c, ...])      -> [n*c, ...]   chunk j of x goes to member j; the result holds the chunks
                                                       addressed to this rank, ordered by source member
    AllGather(group)(x [m, ...])       -> [n*m, ...]   members' x concatenated in member order
    ReduceScatter(group)(x [n*m, ...]) -> [m, ...]     chunk r of the sum over members
    GroupSum(group)(x)                 -> x summed over the members (AllReduce)

Gradients (the adjoints, exact): AllToAll <-> AllToAll, AllGather <-> ReduceScatter, GroupSum <-> GroupSum
(``sum_members`` of the incoming gradients: every member's loss depends on the sum).

Implementations (``impl``):

* ``cpu`` (MindSpore 2.9 on CPU has no AlltoAll/ReduceScatter kernel and its GRAPH AllGather only accepts the
  world group; shared/docs/mindspore-on-cpu.md section 1). Everything is built from ``ops.AllReduce`` (works on any
  group) and, for the world group, ``ops.AllGather``, each Cell with a custom ``bprop``:
    gather(x)        = AllGather(x)                          (world group)
                     = AllReduce(onehot_r[:, None..] * x[None]) (any group: slot r holds x, the others add 0.0,
                       which is exact in floating point)
    AllToAll(x)      = gather(x).reshape(n_src, n_dst, c, ...)[:, r]         bprop: AllToAll(dout)
    ReduceScatter(x) = AllReduce(x)[r*m:(r+1)*m]                            bprop: gather(dout)
  They move O(n) times more bytes than real collectives: correct, not fast.
* ``ascend``: ``ops.AlltoAll`` / ``ops.AllGather`` / ``ops.ReduceScatter`` / ``ops.AllReduce`` with MindSpore's
  built-in gradients. **Untested here (no Ascend device)**; same shapes and semantics as ``cpu``.
* ``auto``: ``ascend`` when the device target is Ascend, else ``cpu``.

A group of one member makes every Cell the identity, without any collective.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import ReduceOp


@dataclass(frozen=True)
class CommGroup:
    """One process group as seen by one member: ``ranks`` (sorted global ranks), ``index`` (this rank's position)
    and ``name`` (MindSpore communication group name; the world group's name when it spans the world)."""

    ranks: tuple
    index: int
    name: str
    is_world: bool = False

    @property
    def size(self) -> int:
        return len(self.ranks)


def world_group_name() -> str:
    from mindspore.communication import GlobalComm
    return GlobalComm.WORLD_COMM_GROUP


def resolve_impl(impl: str = "auto") -> str:
    if impl != "auto":
        if impl not in ("cpu", "ascend"):
            raise ValueError(f"unknown collective implementation '{impl}' (cpu, ascend, auto)")
        return impl
    return "ascend" if ms.get_context("device_target") == "Ascend" else "cpu"


def _onehot(n: int, r: int) -> Tensor:
    return Tensor(np.eye(n, dtype=np.float32)[r])


class _Gather(nn.Cell):
    """CPU all-gather to a new leading axis [n, *x.shape] (no bprop of its own: used inside bprops and
    forward passes of the Cells below, which define the gradients)."""

    def __init__(self, group: CommGroup):
        super().__init__()
        self.n, self.r = group.size, group.index
        self.use_allgather = group.is_world
        if self.use_allgather:
            self.allgather = ops.AllGather(group.name)
        else:
            self.allreduce = ops.AllReduce(ReduceOp.SUM, group.name)
            self.onehot = _onehot(self.n, self.r)

    def construct(self, x):
        if self.use_allgather:
            return self.allgather(x).reshape((self.n,) + x.shape)
        oh = self.onehot.astype(x.dtype).reshape((self.n,) + (1,) * len(x.shape))
        return self.allreduce(oh * ops.expand_dims(x, 0))


class _CpuAllToAll(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.n, self.r = group.size, group.index
        self.gather = _Gather(group)

    def _a2a(self, x):
        n = self.n
        c = x.shape[0] // n
        g = self.gather(x).reshape((n, n, c) + x.shape[1:])      # [src, dst, c, ...]
        return g[:, self.r].reshape(x.shape)

    def construct(self, x):
        return self._a2a(x)

    def bprop(self, x, out, dout):
        return (self._a2a(dout),)


class _CpuAllGather(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.n, self.r = group.size, group.index
        self.gather = _Gather(group)
        self.allreduce = ops.AllReduce(ReduceOp.SUM, group.name)

    def construct(self, x):
        return self.gather(x).reshape((self.n * x.shape[0],) + x.shape[1:])

    def bprop(self, x, out, dout):
        m = x.shape[0]
        full = self.allreduce(dout)
        return (full[self.r * m:(self.r + 1) * m],)


class _CpuReduceScatter(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.n, self.r = group.size, group.index
        self.gather = _Gather(group)
        self.allreduce = ops.AllReduce(ReduceOp.SUM, group.name)

    def construct(self, x):
        m = x.shape[0] // self.n
        return self.allreduce(x)[self.r * m:(self.r + 1) * m]

    def bprop(self, x, out, dout):
        return (self.gather(dout).reshape(x.shape),)


class _GroupSum(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.allreduce = ops.AllReduce(ReduceOp.SUM, group.name)

    def construct(self, x):
        return self.allreduce(x)

    def bprop(self, x, out, dout):
        return (self.allreduce(dout),)


# ---------------------------------------------------------------------------------------------- Ascend (untested)
class _AscendAllToAll(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.op = ops.AlltoAll(split_count=group.size, split_dim=0, concat_dim=0, group=group.name)

    def construct(self, x):
        return self.op(x)


class _AscendAllGather(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.op = ops.AllGather(group.name)

    def construct(self, x):
        return self.op(x)


class _AscendReduceScatter(nn.Cell):
    def __init__(self, group: CommGroup):
        super().__init__()
        self.op = ops.ReduceScatter(ReduceOp.SUM, group.name)

    def construct(self, x):
        return self.op(x)


class _Identity(nn.Cell):
    def construct(self, x):
        return x


_CPU = {"alltoall": _CpuAllToAll, "allgather": _CpuAllGather, "reducescatter": _CpuReduceScatter,
        "sum": _GroupSum}
_ASCEND = {"alltoall": _AscendAllToAll, "allgather": _AscendAllGather, "reducescatter": _AscendReduceScatter,
           "sum": _GroupSum}


def _make(kind: str, group: CommGroup, impl: str) -> nn.Cell:
    if group.size == 1:
        return _Identity()
    return (_ASCEND if resolve_impl(impl) == "ascend" else _CPU)[kind](group)


def AllToAll(group: CommGroup, impl: str = "auto") -> nn.Cell:  # noqa: N802 (factory named like the Cell)
    """Even-split dim-0 all-to-all over ``group`` (see the module docstring)."""
    return _make("alltoall", group, impl)


def AllGather(group: CommGroup, impl: str = "auto") -> nn.Cell:  # noqa: N802
    return _make("allgather", group, impl)


def ReduceScatter(group: CommGroup, impl: str = "auto") -> nn.Cell:  # noqa: N802
    return _make("reducescatter", group, impl)


def GroupSum(group: CommGroup, impl: str = "auto") -> nn.Cell:  # noqa: N802
    return _make("sum", group, impl)


def single_group(rank: int = 0) -> CommGroup:
    """The trivial group {rank} (every Cell built on it is the identity)."""
    return CommGroup(ranks=(rank,), index=0, name="", is_world=False)


__all__ = ["CommGroup", "AllToAll", "AllGather", "ReduceScatter", "GroupSum", "resolve_impl", "single_group",
           "world_group_name"]
