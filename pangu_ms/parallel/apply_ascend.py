"""Apply a :class:`~pangu_ms.parallel.plan.ShardPlan` to a built model on Ascend.

**Ascend-only, untested here.** MindSpore 2.9 refuses semi_auto_parallel / auto_parallel, ``.shard()`` strategies
and ``pipeline_stage`` on the CPU backend at graph compile ("Invalid backend: CPU", see
shared/docs/mindspore-on-cpu.md §2-3), and this project's machines are CPU-only, so none of the calls below has
been executed. :func:`apply_plan` raises :class:`AscendOnlyError` on any other device target before touching the
context. What *is* tested on CPU is the plan itself (tests/parallel/test_plan.py) and :func:`resolve_targets`,
the pure-Python lookup of which cell / primitive each strategy goes to.

Contract with the model Cells (pangu_ms/model, pangu_ms/moe): every op of the plan names a cell path pattern
(``layers.{i}.attention.q_b_proj``, ``mtp.{j}.layer.<same>``) and the attribute of that cell holding the
primitive (``matmul``, ``norm``, ``bmm_gate_up``, ...). A Cell may instead define
``shard_plan(op_name, in_strategy, layout)`` to apply the strategy itself (e.g. when the op is a fused kernel);
that method is preferred when present.
"""
from __future__ import annotations

from .plan import ShardPlan


class AscendOnlyError(RuntimeError):
    """Raised when the plan is applied on a device target other than Ascend."""


def _expand(plan: ShardPlan, pattern: str, num_layers: int, mtp_depth: int, layers: str, in_mtp: bool,
            num_dense: int) -> list[str]:
    if "{i}" in pattern:
        if layers == "dense":
            idx = range(num_dense)
        elif layers == "moe":
            idx = range(num_dense, num_layers)
        else:
            idx = range(num_layers)
        out = [pattern.replace("{i}", str(i)) for i in idx]
        if in_mtp:
            out += [pattern.replace("layers.{i}.", f"mtp.{j}.layer.") for j in range(mtp_depth)]
        return out
    if "{j}" in pattern:
        return [pattern.replace("{j}", str(j)) for j in range(mtp_depth)]
    return [pattern]


def resolve_targets(plan: ShardPlan, cells: dict, cfg) -> tuple[list, list]:
    """Map every op of the plan to ``(cell_path, cell, attr, op)`` over ``cells`` (``dict(net.cells_and_names())``).

    Returns (targets, missing cell paths). Pure Python: runs on CPU.
    """
    m = cfg.model
    targets, missing = [], []
    for op in plan.ops:
        for path in _expand(plan, op.cell, m.num_layers, m.mtp_depth, op.layers, op.mtp, m.num_dense_layers):
            cell = cells.get(path)
            if cell is None:
                missing.append(path)
                continue
            targets.append((path, cell, op.attr, op))
    return targets, missing


def apply_plan(network, plan: ShardPlan, cfg, mode: str = "semi_auto", strict: bool = True):
    """Set the auto-parallel context, shard the primitives and assign pipeline stages. Ascend-only, untested here.

    Args:
        network: the model Cell (parameter names as in the contract, see docs/parallel.md).
        plan: from :func:`pangu_ms.parallel.plan.build_plan`.
        cfg: the Config the plan was built from.
        mode: ``semi_auto`` (every op gets its explicit strategy) or ``auto`` (auto_parallel +
            sharding_propagation; only the ``seed`` ops - EP experts, embedding, LM head, loss - get strategies,
            the rest is propagated from them).
        strict: raise when a planned cell or primitive attribute is missing from the network.

    Returns the network wrapped in ``mindspore.parallel.nn.Pipeline`` when pp > 1, else the network.
    """
    import mindspore as ms

    target = ms.get_context("device_target")
    if target != "Ascend":
        raise AscendOnlyError(
            f"apply_plan is Ascend-only (device_target={target!r}): MindSpore {ms.__version__} does not compile "
            f"semi_auto/auto parallel, shard() or pipeline stages on CPU. On CPU use the explicit-collective path "
            f"(pangu_ms.parallel.dims groups) and inspect the plan with tools/show_plan.py.")
    if mode not in ("semi_auto", "auto"):
        raise ValueError(f"mode must be 'semi_auto' or 'auto', got {mode!r}")
    from mindspore.parallel import Layout

    ms.set_auto_parallel_context(**plan.context[mode])

    cells = dict(network.cells_and_names())
    targets, missing = resolve_targets(plan, cells, cfg)
    problems = [f"missing cell {p}" for p in missing]
    layouts = {}
    for path, cell, attr, op in targets:
        if mode == "auto" and not op.seed:
            continue
        strategy = plan.strategy(op)
        lay = plan.layout(op)
        if hasattr(cell, "shard_plan"):
            cell.shard_plan(op.name, strategy, lay)
            continue
        prim = getattr(cell, attr, None)
        if prim is None or not hasattr(prim, "shard"):
            problems.append(f"{path}.{attr}: no primitive with .shard() for op {op.name}")
            continue
        if any(isinstance(a, tuple) for args in lay["inputs"] for a in args):
            key = (lay["device_matrix"], lay["alias_name"])
            if key not in layouts:
                layouts[key] = Layout(*key)
            prim.shard(tuple(layouts[key](*args) for args in lay["inputs"]))
        else:
            prim.shard(strategy)
    if strict and problems:
        raise RuntimeError("apply_plan: " + "; ".join(problems[:10]) +
                           (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))

    p = cfg.parallel
    if p.pp > 1:
        st = plan.stages
        for name, stage in st.stage_of.items():
            cell = cells.get(name)
            if cell is not None:
                cell.pipeline_stage = stage
            elif strict:
                raise RuntimeError(f"apply_plan: no cell '{name}' to put on pipeline stage {stage}")
        # the MTP block re-uses the embedding / LM head on the last stage (embedding group, see dims.py)
        from mindspore.parallel.nn import Pipeline
        return Pipeline(network, plan.context["pipeline"]["micro_size"])
    return network
