"""Apply a :class:`~pangu_ms.parallel.plan.ShardPlan` to the instantiated model: on Ascend for real, on CPU as a
dry run.

Every op of the plan names a Cell path (``layers.{i}.attention.q_b_proj``, ``mtp.{j}.layer.<same>``; relative to
the model, or to the loss Cell for ``root="loss"`` ops) and either a primitive attribute of that Cell
(``matmul``, ``gather``, ``bmm_gate_up``, ``fused``) or a name in the Cell's ``plan_attrs``, in which case the
Cell's ``shard(attr, in_strategy)`` maps the logical strategy onto its own named primitives (RMSNorm, the
attention core, the routed experts) and returns ``{primitive attr: strategy}``.

``apply_plan(..., dry_run=True)`` / :func:`check_plan` run on CPU in the stand-alone context: they resolve every
target in ``cells_and_names()``, call ``Primitive.shard()`` with each strategy (stand-alone MindSpore stores the
strategy and ignores it when compiling), then run one PyNative forward on the stage-global micro-batch
(``micro_batch_size * dp`` sequences) recording each sharded primitive's input shapes, and check every
strategy's rank and divisibility against them (stand-alone ``shard()`` checks neither). A training step with
the strategies attached still compiles and runs on CPU (tests/parallel/test_apply_plan.py,
``tools/show_plan.py --dry-run``). What stays untested: compiling under ``semi_auto_parallel`` /
``auto_parallel`` and pipeline stages, which MindSpore 2.9 refuses on CPU (shared/docs/mindspore-on-cpu.md §2-3).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .plan import ShardPlan


class AscendOnlyError(RuntimeError):
    """Raised when the plan is applied for real on a device target other than Ascend."""


class PlanError(RuntimeError):
    """A plan target or strategy does not fit the instantiated model (every problem in the message)."""


@dataclass
class PlanReport:
    sharded: list = field(default_factory=list)      # (cell path, primitive attr, op name, strategy)
    checked: int = 0                                  # sharded primitives whose input shapes were checked
    unexecuted: list = field(default_factory=list)    # sharded primitives this config's forward never calls
    problems: list = field(default_factory=list)


def _expand(pattern: str, cfg, layers: str, in_mtp: bool) -> list[str]:
    m = cfg.model
    if "{i}" in pattern:
        idx = {"dense": range(m.num_dense_layers), "moe": range(m.num_dense_layers, m.num_layers)}.get(
            layers, range(m.num_layers))
        out = [pattern.replace("{i}", str(i)) for i in idx]
        if in_mtp:
            out += [pattern.replace("layers.{i}.", f"mtp.{j}.layer.") for j in range(m.mtp_depth)]
        return out
    if "{j}" in pattern:
        return [pattern.replace("{j}", str(j)) for j in range(m.mtp_depth)]
    return [pattern]


def split_network(network):
    """(model, loss Cell or None): a loss Cell holds the model as its attribute ``model``."""
    from mindspore import nn
    inner = getattr(network, "model", None)
    if isinstance(inner, nn.Cell):
        return inner, network
    return network, None


def resolve_targets(plan: ShardPlan, cells: dict, cfg, loss_cells: dict | None = None) -> tuple[list, list]:
    """Map every op of the plan to ``(cell_path, cell, attr, op)`` over ``cells`` (``dict(model.cells_and_names())``)
    and, for loss ops, ``loss_cells`` (the loss Cell's; ``None``: no loss Cell, loss ops skipped).

    Returns (targets, missing cell paths); pure Python.
    """
    targets, missing = [], []
    for op in plan.ops:
        pool = loss_cells if op.root == "loss" else cells
        if pool is None:
            continue
        for path in _expand(op.cell, cfg, op.layers, op.mtp):
            cell = pool.get(path)
            if cell is None:
                missing.append(path if op.root == "model" else f"<loss>.{path}")
                continue
            targets.append((path, cell, op.attr, op))
    return targets, missing


def _primitive(cell, dotted: str):
    """The primitive at ``dotted`` ('attr' or 'subcell.attr') under ``cell``."""
    for part in dotted.split("."):
        cell = getattr(cell, part)
    return cell


def _shard_target(plan, path, cell, attr, op, layouts):
    """Shard one target; returns ([(primitive attr, primitive, strategy)], problem or None)."""
    from mindspore.ops import Primitive
    strategy = plan.strategy(op)
    if attr in getattr(cell, "plan_attrs", ()):
        applied = cell.shard(attr, strategy)          # {primitive attr, or 'subcell.attr': strategy}
        return [(name, _primitive(cell, name), s) for name, s in applied.items()], None
    prim = getattr(cell, attr, None)
    if not isinstance(prim, Primitive):
        return [], f"{path}: no primitive '{attr}' for op {op.name} (cell {type(cell).__name__})"
    lay = plan.layout(op)
    if any(isinstance(a, tuple) for args in lay["inputs"] for a in args):
        from mindspore.parallel import Layout
        key = (lay["device_matrix"], lay["alias_name"])
        layouts.setdefault(key, Layout(*key))
        prim.shard(tuple(layouts[key](*args) for args in lay["inputs"]))
    else:
        prim.shard(strategy)
    return [(attr, prim, strategy)], None


def shard_network(network, plan: ShardPlan, cfg, mode: str = "semi_auto") -> tuple[list, list]:
    """Resolve and shard every target; returns (sharded [(path, attr, primitive, strategy, op name)], problems)."""
    model, loss = split_network(network)
    cells = dict(model.cells_and_names())
    loss_cells = dict(loss.cells_and_names()) if loss is not None else None
    targets, missing = resolve_targets(plan, cells, cfg, loss_cells)
    problems = [f"missing cell '{p}' (named by the plan; not in the instantiated model)" for p in missing]
    sharded, layouts = [], {}
    for path, cell, attr, op in targets:
        if mode == "auto" and not op.seed:
            continue
        applied, problem = _shard_target(plan, path, cell, attr, op, layouts)
        if problem:
            problems.append(problem)
        for name, prim, strategy in applied:          # a sub-cell's primitive is reported under that sub-cell
            sub, _, last = name.rpartition(".")
            sharded.append((f"{path}.{sub}" if sub else path, last, prim, strategy, op.name))
    for name in plan.stages.stage_of:
        if name not in cells and not (name == "lm_head" and cfg.model.tie_embeddings):   # tied: no lm_head
            problems.append(f"missing cell '{name}' for pipeline stage {plan.stages.stage_of[name]}")
    return sharded, problems


class _ShapeRecorder:
    """Stands in for a primitive during the checking forward: records the shapes of its tensor inputs."""

    def __init__(self, prim, calls: set):
        self.prim, self.calls = prim, calls

    def __call__(self, *args):
        from mindspore import Tensor
        self.calls.add(tuple(tuple(a.shape) for a in args if isinstance(a, Tensor)))
        return self.prim(*args)


def _owner(network, path: str):
    model, loss = split_network(network)
    cells = dict(model.cells_and_names())
    if path in cells:
        return cells[path]
    return dict(loss.cells_and_names())[path]


def _record_input_shapes(network, cfg, sharded) -> dict:
    """One PyNative forward on the stage-global micro-batch; {(path, attr): {input shape tuples}}."""
    import mindspore as ms
    import numpy as np
    calls, owners = {}, {}
    for path, attr, prim, _, _ in sharded:
        cell = owners.setdefault(path, _owner(network, path))
        calls[(path, attr)] = set()
        cell.__dict__[attr] = _ShapeRecorder(prim, calls[(path, attr)])
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        batch = cfg.parallel.micro_batch_size * cfg.parallel.dp
        ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (batch, cfg.train.seq_length + 1))
        network(ms.Tensor(ids[:, :-1], ms.int32), ms.Tensor(ids[:, 1:], ms.int32))
    finally:
        ms.set_context(mode=mode)
        for path, attr, prim, _, _ in sharded:
            owners[path].__dict__[attr] = prim
    return calls


def _strategy_problems(where: str, strategy: tuple, shapes: tuple) -> list[str]:
    if len(strategy) != len(shapes):
        return [f"{where}: strategy {strategy} has {len(strategy)} inputs, the primitive takes {len(shapes)} "
                f"tensors {list(shapes)}"]
    out = []
    for i, (s, shape) in enumerate(zip(strategy, shapes)):
        if len(s) != len(shape):
            out.append(f"{where}: input {i} has rank {len(shape)} {shape}, its strategy {s} rank {len(s)}")
            continue
        for dim, (n, k) in enumerate(zip(shape, s)):
            if n % k:
                out.append(f"{where}: input {i} dim {dim} ({n} of {shape}) is not divisible by its shard factor {k}")
    return out


def check_plan(network, plan: ShardPlan, cfg, mode: str = "semi_auto") -> PlanReport:
    """Dry run on CPU: shard every target in stand-alone mode and check each strategy against the primitive's
    actual input shapes from one forward pass. Returns the report (``problems`` empty = the plan fits)."""
    sharded, problems = shard_network(network, plan, cfg, mode)
    report = PlanReport(sharded=[(p, a, o, s) for p, a, _, s, o in sharded], problems=problems)
    if problems:
        return report
    calls = _record_input_shapes(network, cfg, sharded)
    for path, attr, _, strategy, op_name in sharded:
        seen = calls[(path, attr)]
        if not seen:
            report.unexecuted.append(f"{path}.{attr}")
            continue
        report.checked += 1
        for shapes in sorted(seen):
            report.problems += _strategy_problems(f"{path}.{attr} (op {op_name})", strategy, shapes)
    return report


def _raise(problems):
    raise PlanError("apply_plan: " + "; ".join(problems[:10]) +
                    (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))


def apply_plan(network, plan: ShardPlan, cfg, mode: str = "semi_auto", strict: bool = True, dry_run: bool = False):
    """Shard the primitives, and on Ascend set the auto-parallel context and the pipeline stages.

    Args:
        network: the model, or the loss Cell holding it as ``model`` (needed for the loss op).
        plan: from :func:`pangu_ms.parallel.plan.build_plan` for ``cfg``.
        mode: ``semi_auto`` (every op its explicit strategy) or ``auto`` (auto_parallel + sharding_propagation;
            only the ``seed`` ops get strategies, the rest is propagated).
        strict: raise :class:`PlanError` when a target or strategy does not fit the model.
        dry_run: CPU check in the stand-alone context (:func:`check_plan`); sets no parallel context and no
            pipeline stages. Without it the call is Ascend-only (compilation under semi_auto / auto parallel
            is untested in this repository).

    Returns the network (wrapped in ``mindspore.parallel.nn.Pipeline`` when pp > 1 and not ``dry_run``).
    """
    import mindspore as ms
    if mode not in ("semi_auto", "auto"):
        raise ValueError(f"mode must be 'semi_auto' or 'auto', got {mode!r}")
    if dry_run:
        report = check_plan(network, plan, cfg, mode)
        if strict and report.problems:
            _raise(report.problems)
        return network
    target = ms.get_context("device_target")
    if target != "Ascend":
        raise AscendOnlyError(
            f"apply_plan is Ascend-only (device_target={target!r}): MindSpore {ms.__version__} does not compile "
            f"semi_auto/auto parallel or pipeline stages on CPU; use apply_plan(..., dry_run=True) to check the "
            f"plan against the model here.")
    ms.set_auto_parallel_context(**plan.context[mode])
    _, problems = shard_network(network, plan, cfg, mode)
    if strict and problems:
        _raise(problems)
    if cfg.parallel.pp > 1:
        model, _ = split_network(network)
        cells = dict(model.cells_and_names())
        for name, stage in plan.stages.stage_of.items():
            if name in cells:
                cells[name].pipeline_stage = stage
        # the MTP block re-uses the embedding / LM head on the last stage (embedding group, see dims.py)
        from mindspore.parallel.nn import Pipeline
        return Pipeline(network, plan.context["pipeline"]["micro_size"])
    return network
