"""Count the kernels of a compiled MindSpore graph from its IR dump (checks and re-derives kernels.py).

MindSpore writes the backend's final graph of a compiled Cell as ``hwopt_end_mindrt_unify_mindir_graph_*.ir``
when ``MS_DEV_SAVE_GRAPHS=1`` (``MS_DEV_SAVE_GRAPHS_PATH`` = the directory). Every CNode of that graph whose
operator is a primitive is one kernel launch, except

* graph plumbing that launches nothing: MakeTuple, TupleGetItem, UpdateState, Load, Depend, Partial, Switch,
  Return and the calls of sub-graphs;
* "nop" shape operators that the CPU backend elides (Reshape, ExpandDims, Squeeze, Flatten).

Each kernel carries its scope (``# Fullname with scope: (...)``): ``Gradients/...`` is the backward, ``Default/net-
...`` the forward of the network, everything else under ``Default`` the optimizer, clipping and step glue.
``count_ir`` returns the three counts and the per-operator totals; ``tools/count_kernels.py`` compiles the
project's training step for a config and prints them next to kernels.py's structural count.
"""
from __future__ import annotations

import collections
import glob
import os
import re

NON_KERNELS = {"MakeTuple", "TupleGetItem", "UpdateState", "Load", "Depend", "Partial", "Switch", "Return",
               "MakeTupleV2", "TensorToScalar"}
NOP_KERNELS = {"Reshape", "ExpandDims", "Squeeze", "Flatten"}

_NODE = re.compile(r"^\s+%\S+ = (?:PrimFunc_)?([A-Z][A-Za-z0-9]*)\(")
_SCOPE = re.compile(r"# Fullname with scope: \((.*)\)")


def count_ir(text: str) -> dict:
    """Kernel counts of one IR text: {'forward', 'backward', 'other', 'total', 'by_op': {op: n}}."""
    out = {"forward": 0, "backward": 0, "other": 0}
    by_op: collections.Counter = collections.Counter()
    pending = None
    for line in text.split("\n"):
        m = _NODE.match(line)
        if m:
            op = m.group(1)
            pending = None if (op in NON_KERNELS or op in NOP_KERNELS) else op
            continue
        m = _SCOPE.search(line)
        if m and pending:
            scope = m.group(1)
            if scope.startswith("Gradients/"):
                out["backward"] += 1
            elif scope.startswith("Default/net"):
                out["forward"] += 1
            else:
                out["other"] += 1
            by_op[pending] += 1
            pending = None
    out["total"] = out["forward"] + out["backward"] + out["other"]
    out["by_op"] = dict(by_op.most_common())
    return out


def count_dump_dir(path: str, graph_name: str = "TrainStep") -> dict:
    """Sum the counts of the final graphs in an IR dump directory: the graph whose name contains
    ``graph_name`` plus the sub-graphs it calls (e.g. the LR schedule's branches; each branch's kernels are
    counted once, which over-counts a two-way branch by the smaller branch)."""
    files = sorted(glob.glob(os.path.join(path, "hwopt_end_mindrt_unify_mindir_graph_*.ir")))
    if not files:
        raise FileNotFoundError(f"no final-graph IR (hwopt_end_mindrt_unify_mindir_graph_*.ir) in {path}; "
                                "was the step compiled with MS_DEV_SAVE_GRAPHS=1?")
    main = [f for f in files if graph_name in os.path.basename(f)]
    if not main:
        raise FileNotFoundError(f"no final graph named *{graph_name}* in {path}")
    total = {"forward": 0, "backward": 0, "other": 0, "total": 0}
    by_op: collections.Counter = collections.Counter()
    # every final graph of the dump: the main one and the sub-graphs it calls (the dump holds one compile)
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            c = count_ir(fh.read())
        for k in ("forward", "backward", "other", "total"):
            total[k] += c[k]
        by_op.update(c["by_op"])
    total["by_op"] = dict(by_op.most_common())
    return total
