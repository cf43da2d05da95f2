"""Dynamic expert placement on the explicit EP path: predictor -> planner -> trigger -> executor.

:class:`ExpertPlacement` is built by the trainer when ``moe.expert_placement`` is on (and, for statistics only,
under any EP run). Every optimizer step it receives the tokens routed to each expert of each main-stack MoE layer
summed over all ranks (identical on every rank) and updates the EMA predictor
(``placement_predictor.EMALoadPredictor``). After every ``moe.placement_interval``-th step it plans each layer
(``placement_planner.decide``) and migrates the layers whose predicted per-rank load CV improves by at least
``moe.placement_threshold``.

Executor (:meth:`ExpertPlacement.migrate`): one world AllGather of a flat buffer holding, for every migrated
layer, this rank's expert slots of every tensor with one row per local expert -- the two expert weights and
everything derived from them in the training cell (both AdamW moments ``adam_m.*`` / ``adam_v.*``, gradient
accumulation buffers) -- then every rank copies the rows of the experts it holds under the new table from the
rank that held them under the old one (a member of its own EP group) and sets the dispatcher's ``placement``
table. The copies are in-place assignments (``ops.assign``): ``Parameter.set_data`` after the training step
has been compiled replaces the Parameter's buffer but not the one the compiled graph reads (measured, MindSpore
2.9 CPU), so it would silently change nothing. Values are copied bit for bit, and the dispatcher buckets pairs by physical slot, so the model computes the
same function and the optimizer continues the same trajectory (up to float summation order in the global
gradient norm). On CPU only AllGather / AllReduce / Broadcast exist, so the executor moves O(world) x the bytes
an all-to-all of just the moved experts would (what MindSpeed does on Ascend); fine for tests, not for speed.

The same (all-reduced) loads reach every rank, so every rank takes the same decisions without communication.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..moe.experts import RoutedExperts
from .placement_planner import decide, is_check_step
from .placement_predictor import EMALoadPredictor
from .placement_table import check_table, experts_at_slots, identity

STATE_FILE = "expert_placement.json"      # predictor state + migration history, a checkpoint side file


def relocate_rows(gathered, old_table, new_table, ep_ranks, ep_index: int) -> np.ndarray:
    """This rank's new local rows of one per-expert tensor.

    ``gathered`` [world, El, ...]: every rank's local rows under ``old_table``; ``ep_ranks``: the global ranks of
    this rank's EP group in EP order; ``ep_index``: this rank's position in it. Row s of the result is the expert
    held by physical slot ``ep_index * El + s`` under ``new_table``, taken from its holder under ``old_table``."""
    el = gathered.shape[1]
    held = experts_at_slots(new_table)
    old = np.asarray(old_table)
    rows = []
    for s in range(el):
        q = int(old[held[ep_index * el + s]])
        rows.append(gathered[ep_ranks[q // el], q % el])
    return np.stack(rows)


def expert_tensors(layer, by_name: dict) -> list:
    """The Parameters of the training cell (``by_name``) with one row per local expert of MoE ``layer``: the
    routed experts' weights and everything derived from them (``adam_m.*``, ``adam_v.*``, accumulators)."""
    assert isinstance(layer.experts, RoutedExperts)
    own = [p.name for p in layer.experts.get_parameters()]
    names = own + sorted(n for n in by_name if n not in own and any(n.endswith("." + o) for o in own))
    return [by_name[n] for n in names if n in by_name]


def _moe_layers(net) -> list:
    from ..moe.layer import MoELayer
    return [c for _, c in net.cells_and_names() if isinstance(c, MoELayer)]


def _world_all_gather(flat: np.ndarray, world: int) -> np.ndarray:
    out = ops.AllGather()(Tensor(flat)).asnumpy()
    return out.reshape(world, -1)


class ExpertPlacement:
    """Placement state of this rank. ``net``: the model (its ``moe_layer_ids`` order = the rows of the step's
    ``expert_load``); ``cell``: the training cell holding the optimizer state; ``ep_ranks`` / ``ep_index``: this
    rank's EP group; ``gather``: flat array -> [world, n] (a world AllGather; injectable for tests)."""

    def __init__(self, net: nn.Cell, cell: nn.Cell, ep_ranks, ep_index: int, world: int, theta: float = 0.9,
                 interval: int = 50, threshold: float = 0.08, enabled: bool = True, gather=None):
        self.moe = [net.layers[i].moe for i in net.moe_layer_ids]
        self.ep_ranks, self.ep_index, self.world = tuple(ep_ranks), ep_index, world
        self.ep_width = len(self.ep_ranks)
        self.interval, self.threshold, self.enabled = interval, threshold, enabled
        self.predictor = EMALoadPredictor(theta)
        self.gather = gather or (lambda flat: _world_all_gather(flat, world))
        by_name = {p.name: p for p in cell.get_parameters()}
        for layer in self.moe:
            if enabled and getattr(layer.dispatcher, "placement", None) is None:
                raise ValueError("expert placement needs the flat EP dispatcher built with placement=True")
        self.tensors = [expert_tensors(layer, by_name) for layer in self.moe]   # per layer: one row per expert
        # every MoE layer with a table, the MTP modules' included (their tables stay the static layout)
        self._all = [(m, expert_tensors(m, by_name)) for m in _moe_layers(net)
                     if getattr(m.dispatcher, "placement", None) is not None] if enabled else []
        self.num_experts = self.moe[0].dispatcher.num_experts if self.moe else 0
        self.history: list[dict] = []      # one entry per migrated layer
        self.read_tables()

    # ------------------------------------------------------------------ tables
    def read_tables(self) -> np.ndarray:
        """Refresh the host copy from the dispatchers' Parameters (after a checkpoint load); the static layout
        (identity) when the dispatchers have no table (EP without placement: statistics only)."""
        if not self.moe:
            self._tables = np.zeros((0, 0), np.int32)
        elif not self.enabled:
            self._tables = identity_tables(len(self.moe), self.num_experts)
        else:
            self._tables = np.stack([check_table(m.dispatcher.placement.asnumpy(), self.ep_width)
                                     for m in self.moe])
        return self._tables

    def placement_of(self) -> dict:
        """{expert tensor (weights, AdamW moments, ...): its layer's placement-table Parameter} (the checkpoint
        manifest records it); empty without placement."""
        return {p.name: m.dispatcher.placement.name for m, tensors in self._all for p in tensors}

    def tables(self) -> np.ndarray:
        return self._tables.copy()

    # ------------------------------------------------------------------ per step
    def observe(self, load) -> None:
        if self.enabled:
            self.predictor.update(load)

    def check(self, completed_steps: int) -> list:
        """After optimizer step ``completed_steps``: plan every layer, migrate those worth it; the decisions of
        every layer (empty when this is no check step)."""
        if not self.enabled or not is_check_step(completed_steps, self.interval) or self.predictor.pred is None:
            return []
        decisions = [decide(i, self.predictor.pred[i], self._tables[i], self.ep_width, self.threshold)
                     for i in range(len(self.moe))]
        new = {d.layer: d.table for d in decisions if d.migrate}
        if new:
            self.migrate(new)
            for d in decisions:
                if d.migrate:
                    self.history.append({"step": completed_steps, "layer": d.layer, "cv_before": d.cv_before,
                                         "cv_after": d.cv_after, "moved": d.moved, "table": d.table.tolist()})
        return decisions

    def migrate(self, new_tables: dict) -> None:
        """Move experts (weights + optimizer state) to ``{layer: new table}`` and switch the dispatchers."""
        layers = sorted(new_tables)
        pieces, shapes = [], []
        for i in layers:
            for p in self.tensors[i]:
                a = p.asnumpy()
                pieces.append(a.reshape(-1))
                shapes.append(a.shape)
        dtype = np.result_type(*[x.dtype for x in pieces])
        flat = np.concatenate([x.astype(dtype) for x in pieces])
        gathered = self.gather(flat)                                   # [world, n]
        off, k = 0, 0
        for i in layers:
            table = check_table(new_tables[i], self.ep_width)
            for p in self.tensors[i]:
                shape = shapes[k]
                n = int(np.prod(shape))
                rows = gathered[:, off:off + n].reshape((self.world,) + tuple(shape))
                local = relocate_rows(rows, self._tables[i], table, self.ep_ranks, self.ep_index)
                ops.assign(p, Tensor(local.astype(p.asnumpy().dtype)))
                off += n
                k += 1
            ops.assign(self.moe[i].dispatcher.placement, Tensor(table, ms.int32))
            self._tables[i] = table

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"predictor": self.predictor.state(), "history": self.history}

    def load_state(self, state: dict) -> None:
        """Predictor and history from a checkpoint's side file (the tables come with the weights)."""
        self.predictor.load_state(state["predictor"])
        self.history = list(state.get("history", []))


def identity_tables(n_layers: int, num_experts: int) -> np.ndarray:
    return np.stack([identity(num_experts) for _ in range(n_layers)]) if n_layers else np.zeros((0, 0), np.int32)


__all__ = ["ExpertPlacement", "relocate_rows", "STATE_FILE", "identity_tables"]
