"""The one checkpoint manager of every stage and tool: paths, atomic multi-rank saves, verified resume, pruning.

Layout of a run directory (:func:`checkpoint_paths` is the only place that builds these names)::

    <run>/checkpoints/step_00000100/       the state after 100 optimizer steps (training resumes at step 101)
        model.safetensors                  every Parameter that is the same on all ranks (weights, AdamW
                                           moments, global step, buffers); written by rank 0
        experts_rank1.safetensors          under expert parallelism: the routed experts of rank 1 and their
                                           optimizer state; written by rank 1 (one file per rank)
        experts_rank1.json                 size + sha256 of that part (and the experts it holds), written by
                                           its rank after the part
        rl_state.json ...                  side files of a stage (RL's hard-example queue), written by rank 0
        manifest.json                      written LAST by rank 0, once every rank's part is on disk: step,
                                           world, parts {file: {bytes, sha256}}, model shapes, stage state,
                                           under expert parallelism ``experts``: {total, names, ranges
                                           {file: [first, count]}} (what lets another EP layout load it),
                                           under dynamic expert placement also ``placement`` {expert tensor:
                                           its layer's placement-table Parameter in model.safetensors}
    <run>/checkpoints/.trash-step_*        a checkpoint being pruned (never loaded; removed by the next save)

Every file is written as ``<name>.tmp-<pid>``, fsynced and renamed (``os.replace``) into place, so a killed
process leaves no half-written file under a final name. A checkpoint is *complete* when its manifest exists;
it is *readable* when every part the manifest names has the recorded size and sha256. Resume takes the newest
complete and readable checkpoint: rank 0 decides, reporting every newer one it skips by name (partial,
truncated, corrupt; they are never deleted silently), and all ranks load the step rank 0 chose. Pruning
(``keep_last``) renames a checkpoint to ``.trash-*`` before deleting it, so a kill mid-prune never leaves a
half-deleted ``step_*``; the next save removes trash, stray temporaries and manifest-less ``step_*``
directories, logging each. A save refuses non-finite parameters (the latest checkpoint never holds diverged
weights). The run directory must be visible to every rank (one machine, or a shared file system).

Resharding: a checkpoint loads under another expert-parallel layout (EP 2 -> 1, 1 -> 2, ...): the loading rank
names its expert slice (``experts=(first, count)``, None = all experts) and the routed-expert tensors and
everything derived from them (AdamW moments) are cut from the full tensors of a one-process checkpoint, or
assembled row range by row range from the parts whose ``ranges`` cover the slice.

Expert placement: ``ranges`` count *physical slots* (what rank r holds), which equal the logical expert ids
(the router's) only under the static layout. Under ``moe.expert_placement`` slot ``table[e]`` holds logical
expert e, the tables are Parameters of the shared part and ``experts.placement`` names the table of every expert
tensor. A loading cell with placement takes over the saved tables (any EP width: a table is a permutation of
the E slots, a rank of width W holds slots [r E/W, (r+1) E/W)) and reads its slots as they are; a cell without
(one process, EP without placement) reads logical experts, slot ``table[e]`` for expert e (:func:`saved_slots`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable

import mindspore as ms
import numpy as np

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")
_FORMAT_VERSION = 3


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class CheckpointPaths:
    directory: str      # <run>/checkpoints/step_<8 digits>
    manifest: str       # <directory>/manifest.json
    shared: str         # <directory>/model.<ext>: parameters replicated on every rank (rank 0 writes it)
    rank_part: str      # <directory>/experts_rank<r>.<ext>: this rank's expert shards + their optimizer state
    rank_info: str      # <directory>/experts_rank<r>.json: size and sha256 of rank_part


def _ext(fmt: str) -> str:
    return "safetensors" if fmt == "safetensors" else "ckpt"


def _in_directory(d: str, rank: int, fmt: str) -> CheckpointPaths:
    return CheckpointPaths(d, os.path.join(d, MANIFEST), os.path.join(d, f"model.{_ext(fmt)}"),
                           os.path.join(d, f"experts_rank{rank}.{_ext(fmt)}"),
                           os.path.join(d, f"experts_rank{rank}.json"))


def checkpoint_paths(run_dir: str, step: int, rank: int = 0, fmt: str = "safetensors") -> CheckpointPaths:
    """(run directory, completed optimizer steps, rank) -> every path of that checkpoint."""
    return _in_directory(os.path.join(os.path.abspath(run_dir), CHECKPOINTS, f"step_{step:08d}"), rank, fmt)


def shape_fingerprint(cell) -> dict:
    return {p.name: list(p.shape) for p in cell.get_parameters()}


def local_parameter_names(cell, expert_names) -> set:
    """Names of ``cell``'s parameters that belong to one rank: the routed experts and everything derived from
    them (AdamW moments ``adam_m.<expert>``, accumulation buffers ``grad_acc.<expert>``)."""
    experts = set(expert_names)
    return {p.name for p in cell.get_parameters()
            if p.name in experts or any(p.name.endswith("." + e) for e in experts)}


# ---------------------------------------------------------------------------------------------- files
def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_params_atomic(params: list, path: str, fmt: str) -> None:
    stem, ext = os.path.splitext(path)
    tmp = f"{stem}.tmp-{os.getpid()}{ext}"             # MindSpore appends the extension when it is missing
    ms.save_checkpoint([{"name": p.name, "data": p} for p in params], tmp, format=fmt)
    _fsync_file(tmp)
    os.replace(tmp, path)


def file_digest(path: str) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------- discovery
def step_directories(run_dir: str) -> list[tuple[int, str]]:
    """Every ``step_*`` directory of the run, complete or not, oldest first."""
    root = os.path.join(os.path.abspath(run_dir), CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, n)) for n in os.listdir(root) if (m := _STEP_DIR.match(n))]
    return sorted(found)


def checkpoint_problem(path: str) -> str | None:
    """Why checkpoint directory ``path`` cannot be loaded (partial, truncated, corrupt), or None when it can."""
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        return f"no {MANIFEST} (a save that did not finish)"
    try:
        m = _read_json(manifest)
        parts = m["parts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {MANIFEST}: {e}"
    for name, want in parts.items():
        f = os.path.join(path, name)
        if not os.path.isfile(f):
            return f"part {name} is missing"
        size = os.path.getsize(f)
        if size != want["bytes"]:
            return f"part {name} has {size} bytes, the manifest says {want['bytes']} (truncated)"
        if file_digest(f)["sha256"] != want["sha256"]:
            return f"part {name} does not match its sha256 (corrupt)"
    return None


def _run_dir_of(path: str) -> str:
    """A run directory, or its ``checkpoints`` directory -> the run directory."""
    path = os.path.abspath(path)
    return os.path.dirname(path) if os.path.basename(path) == CHECKPOINTS else path


def newest_checkpoint(run_dir: str, warn: Callable[[str], None] | None = None) -> str | None:
    """The newest complete and readable checkpoint of ``run_dir`` (or of a ``checkpoints`` directory); every
    newer one that cannot be loaded is reported through ``warn`` by name and left in place."""
    for _, path in reversed(step_directories(_run_dir_of(run_dir))):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if warn is not None:
            warn(f"warning: skipping checkpoint {path}: {problem}")
    return None


def checkpoint_step(path: str) -> int:
    """Completed optimizer steps of checkpoint directory ``path``."""
    return int(read_manifest(path)["step"])


def read_manifest(path: str) -> dict:
    return _read_json(os.path.join(path, MANIFEST))


def resolve_checkpoint(path: str, key: str = "stage.init_from") -> str:
    """A checkpoint directory, a ``checkpoints`` directory or a run directory -> the checkpoint to load
    (``key`` names the setting in the error)."""
    if not path:
        raise CheckpointError(f"{key}: empty (give a run directory or a checkpoint directory)")
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(f"{key}: checkpoint {path} cannot be loaded: {problem}")
        return path
    found = newest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{key}: no complete checkpoint under {path}")
    return found


# ---------------------------------------------------------------------------------------------- load
def load_checkpoint(cell, path: str, rank: int = 0, strict_shapes: bool = True, experts: tuple | None = None,
                    expert_names=(), placement_of: dict | None = None) -> dict:
    """Load checkpoint directory ``path`` (its shared part and, when present, the expert parts) into ``cell``;
    returns the manifest. ``experts = (first, count)``: the physical expert slots ``cell`` holds (expert
    parallelism; None = all of them); ``expert_names``: the names of ``cell``'s per-rank (expert) parameters;
    ``placement_of``: {expert tensor: placement-table Parameter} when ``cell`` has dynamic expert placement (it
    then takes over the saved tables, identity for a checkpoint without them). Errors name the checkpoint and the
    mismatch."""
    placement_of = dict(placement_of or {})
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = checkpoint_problem(path)
    if problem:
        raise CheckpointError(f"{path}: cannot be loaded: {problem}")
    manifest = read_manifest(path)
    saved = manifest.get("experts")
    local = set(expert_names) | set(saved["names"] if saved else ())
    mine, theirs = shape_fingerprint(cell), manifest.get("shapes", {})
    if strict_shapes:
        for name, shape in mine.items():
            if name in theirs and not _same_shape(theirs[name], shape, name in local):
                raise CheckpointError(f"{path}: parameter '{name}' has shape {theirs[name]} in the checkpoint "
                                      f"but {shape} in the model (different model shape)")
        tables = set(placement_of.values())
        missing = [n for n in mine if n not in theirs and n not in tables]
        if missing:
            raise CheckpointError(f"{path}: parameter '{missing[0]}' (and {len(missing) - 1} more) missing "
                                  f"from the checkpoint (different model?)")
    fmt = manifest["format"]
    paths = _in_directory(path, rank, fmt)
    params = ms.load_checkpoint(paths.shared, format=fmt)
    if manifest.get("expert_parts"):
        if saved is None or fmt != "safetensors":          # no recorded ranges: only the saving layout loads it
            if saved is not None and saved.get("placement") and not placement_of:
                raise CheckpointError(f"{path}: saved under a dynamic expert placement in format {fmt}; only a "
                                      f"run with moe.expert_placement=true and the saving layout loads it")
            part = paths.rank_part
            if not os.path.isfile(part):
                raise CheckpointError(f"{path}: no expert part for rank {rank} (saved with world "
                                      f"{manifest['world']})")
            params.update(ms.load_checkpoint(part, format=fmt))
        else:
            first, count = experts if experts is not None else (0, saved["total"])
            slots = np.arange(first, first + count)
            for name in saved["names"]:
                if name in mine:
                    # the cell keeps the saved placement (its table loads with the shared part): the same
                    # physical slots; without a placement the cell holds logical experts first.. in order
                    rows = slots if name in placement_of else \
                        saved_slots(saved, name, slots, lambda t: params[t].asnumpy())
                    params[name] = ms.Parameter(ms.Tensor(_gather_rows(path, saved, name, rows)), name)
    elif experts is not None:                               # one-process checkpoint -> this rank's slice
        first, count = experts
        for name in local:
            if name in params:
                params[name] = ms.Parameter(ms.Tensor(params[name].asnumpy()[first:first + count]), name)
    for table in set(placement_of.values()) - set(params):  # saved without a placement: the static layout
        params[table] = ms.Parameter(ms.Tensor(np.arange(mine[table][0], dtype=np.int32)), table)
    not_loaded = assign_parameters(cell, params)
    if strict_shapes and not_loaded:
        raise CheckpointError(f"{path}: parameters not loaded: {not_loaded[:5]}")
    return manifest


def assign_parameters(cell, params: dict) -> list:
    """Copy ``params`` ({name: Tensor}) into ``cell``'s Parameters *in place* (``ops.assign``); returns the names
    of ``cell``'s Parameters that ``params`` lacks. In place because ``Parameter.set_data`` (which
    ``load_param_into_net`` uses) after a graph has been compiled swaps the Parameter's buffer without the compiled
    graph noticing (measured, MindSpore 2.9 CPU): loading into a trained-in-this-process cell would silently keep
    the old values. Values of another dtype are cast to the Parameter's."""
    from mindspore import Tensor, ops
    not_loaded = []
    for p in cell.get_parameters():
        src = params.get(p.name)
        if src is None:
            not_loaded.append(p.name)
            continue
        value = Tensor(src.asnumpy()) if hasattr(src, "asnumpy") else Tensor(np.asarray(src))
        if value.dtype != p.dtype:
            value = value.astype(p.dtype)
        if tuple(value.shape) != tuple(p.shape):
            raise CheckpointError(f"parameter '{p.name}': shape {tuple(value.shape)} in the checkpoint, "
                                  f"{tuple(p.shape)} in the model")
        ops.assign(p, value)
    return not_loaded


def _same_shape(saved: list, shape: list, is_expert: bool) -> bool:
    """Equal shapes; for per-rank expert tensors only the dims after the expert dim (the count may differ)."""
    return list(saved)[1:] == list(shape)[1:] if is_expert else list(saved) == list(shape)


def saved_slots(saved: dict, name: str, logical, read_table) -> np.ndarray:
    """The rows of the saved (assembled) expert tensor ``name`` holding the logical experts ``logical``.

    The parts and their ``ranges`` are in *physical slot* order (rank r saved the slots it holds). Under a dynamic
    expert placement the manifest's ``experts.placement`` maps each expert tensor to its layer's placement table
    (a Parameter of the shared part, read by ``read_table(name)``): logical expert e is in slot ``table[e]``.
    Without a placement, slot = logical expert."""
    logical = np.asarray(logical, np.int64)
    table_name = (saved.get("placement") or {}).get(name)
    return logical if table_name is None else np.asarray(read_table(table_name), np.int64)[logical]


def slot_runs(rows) -> list[tuple[int, int]]:
    """Row ids -> ``(start, stop)`` runs of consecutive ids, in order."""
    runs = []
    for r in (int(x) for x in rows):
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


def _gather_rows(path: str, saved: dict, name: str, rows) -> np.ndarray:
    """Rows ``rows`` (physical slots) of expert tensor ``name``, read from the expert parts that hold them."""
    from safetensors import safe_open
    pieces = []
    for at, stop in slot_runs(rows):
        while at < stop:
            hit = next(((f, lo, n) for f, (lo, n) in sorted(saved["ranges"].items()) if lo <= at < lo + n), None)
            if hit is None:
                raise CheckpointError(f"{path}: no expert part holds expert {at} of '{name}'")
            f, lo, n = hit
            end = min(stop, lo + n)
            with safe_open(os.path.join(path, f), framework="np") as part:
                pieces.append(part.get_slice(name)[at - lo:end - lo])
            at = end
    return np.concatenate(pieces, 0)


# ---------------------------------------------------------------------------------------------- manager
def _single_sum(x: np.ndarray) -> np.ndarray:
    return x


class CheckpointManager:
    """Saves and resumes one run's checkpoints on every rank.

    ``all_sum`` sums a float array over all ranks (identity in one process); ``barrier`` waits for all ranks;
    ``local_names`` are the parameters of ``cell`` that differ per rank (expert parallelism; empty otherwise);
    ``log`` prints a line (rank 0's lines reach train.log); ``experts = (first, count, total)``: the routed
    experts this rank holds (recorded in the manifest, so that another layout can load the checkpoint);
    ``placement_of`` {expert tensor: placement-table Parameter} under dynamic expert placement (recorded in the
    manifest: the parts then hold physical slots, see :func:`saved_slots`).
    """

    def __init__(self, run_dir: str, rank: int = 0, world: int = 1, local_names=(), fmt: str = "safetensors",
                 keep_last: int = 3, all_sum: Callable = _single_sum, barrier: Callable = lambda: None,
                 log: Callable[[str], None] = print, experts: tuple | None = None,
                 placement_of: dict | None = None):
        self.run_dir = os.path.abspath(run_dir)
        self.root = os.path.join(self.run_dir, CHECKPOINTS)
        self.rank, self.world = rank, world
        self.local_names = set(local_names)
        self.fmt, self.keep_last = fmt, keep_last
        self.all_sum, self.barrier, self.log = all_sum, barrier, log
        self.experts = experts
        self.placement_of = dict(placement_of or {})

    def paths(self, step: int) -> CheckpointPaths:
        return checkpoint_paths(self.run_dir, step, self.rank, self.fmt)

    # ------------------------------------------------------------------ resume
    def resume(self, cell) -> dict | None:
        """Load the newest complete and readable checkpoint into ``cell`` on every rank (rank 0 chooses) and
        log ``resumed from <path> (next step N)``; None when there is none."""
        chosen = newest_checkpoint(self.run_dir, self.log) if self.rank == 0 else None
        mine = checkpoint_step(chosen) + 1 if chosen else 0      # + 1: "0 = no checkpoint" survives the sum
        step = int(round(float(self.all_sum(np.array([mine], np.float32))[0]))) - 1
        if step < 0:
            return None
        path = self.paths(step).directory
        saved = read_manifest(path)
        if saved["world"] != self.world and saved.get("expert_parts") and "experts" not in saved:
            raise CheckpointError(f"{path}: saved by {saved['world']} ranks with expert parallelism before expert "
                                  f"ranges were recorded; this run has {self.world}")
        manifest = load_checkpoint(cell, path, self.rank, experts=self.experts[:2] if self.experts else None,
                                   expert_names=self.local_names, placement_of=self.placement_of)
        self.log(f"resumed from {path} (next step {step + 1})")
        return manifest

    # ------------------------------------------------------------------ save
    def _check_finite(self, cell, step: int) -> None:
        bad = next((p.name for p in cell.get_parameters() if not np.isfinite(p.asnumpy()).all()), None)
        n_bad = float(self.all_sum(np.array([0.0 if bad is None else 1.0], np.float32))[0])
        if n_bad > 0:
            where = f"parameter '{bad}'" if bad else "a parameter on another rank"
            raise CheckpointError(f"not saving checkpoint step {step}: {where} is not finite (the previous "
                                  f"checkpoint stays the latest)")

    def _clean(self, keep: str) -> None:
        """Rank 0, before a save: remove trash, stray temporaries and manifest-less ``step_*`` directories."""
        if not os.path.isdir(self.root):
            return
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            partial = _STEP_DIR.match(name) and not os.path.isfile(os.path.join(path, MANIFEST))
            if name.startswith(".trash-") or ".tmp-" in name or (partial and path != keep):
                self.log(f"removing {'incomplete checkpoint' if partial else 'leftover'} {path}")
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def save(self, cell, step: int, state: dict | None = None, side_files: dict | None = None) -> str:
        """Save ``cell`` (model + optimizer) as checkpoint ``step`` (completed optimizer steps) on every rank;
        ``state`` goes into the manifest, ``side_files`` {name: JSON object} next to it. Returns the directory."""
        self._check_finite(cell, step)
        paths = self.paths(step)
        if self.rank == 0:
            os.makedirs(self.root, exist_ok=True)
            if os.path.exists(paths.manifest):            # rewriting a step (e.g. after a corrupt newest one)
                os.remove(paths.manifest)
            self._clean(keep=paths.directory)
        self.barrier()
        os.makedirs(paths.directory, exist_ok=True)
        params = list(cell.get_parameters())
        local = [p for p in params if p.name in self.local_names]
        if local:
            _save_params_atomic(local, paths.rank_part, self.fmt)
            info = file_digest(paths.rank_part)
            if self.experts:
                info["experts"] = list(self.experts)
            _write_json_atomic(paths.rank_info, info)
        if self.rank == 0:
            _save_params_atomic([p for p in params if p.name not in self.local_names], paths.shared, self.fmt)
            for name, obj in (side_files or {}).items():
                _write_json_atomic(os.path.join(paths.directory, name), obj)
        self.barrier()
        if self.rank == 0:
            self._write_manifest(cell, step, paths, bool(local), state or {}, side_files or {})
            self._prune()
        self.barrier()
        return paths.directory

    def _write_manifest(self, cell, step, paths, expert_parts, state, side_files) -> None:
        parts = {os.path.basename(paths.shared): file_digest(paths.shared)}
        for name in side_files:
            parts[name] = file_digest(os.path.join(paths.directory, name))
        experts = None
        if expert_parts:
            ranges = {}
            for r in range(self.world):
                p = checkpoint_paths(self.run_dir, step, r, self.fmt)
                if not os.path.isfile(p.rank_info):
                    raise CheckpointError(f"checkpoint {paths.directory}: rank {r} wrote no expert part")
                info = _read_json(p.rank_info)
                held = info.pop("experts", None)
                if file_digest(p.rank_part) != info:
                    raise CheckpointError(f"checkpoint {paths.directory}: part of rank {r} changed after it was "
                                          f"written")
                parts[os.path.basename(p.rank_part)] = info
                if held:
                    ranges[os.path.basename(p.rank_part)] = held[:2]
            if self.experts and len(ranges) == self.world:
                experts = {"total": self.experts[2], "names": sorted(self.local_names), "ranges": ranges}
                if self.placement_of:
                    experts["placement"] = dict(sorted(self.placement_of.items()))
        write_manifest(paths, step, self.fmt, self.world, parts, shape_fingerprint(cell), experts, state)

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        complete = [p for _, p in step_directories(self.run_dir) if os.path.isfile(os.path.join(p, MANIFEST))]
        for old in complete[:-self.keep_last]:
            trash = os.path.join(self.root, ".trash-" + os.path.basename(old))
            os.replace(old, trash)                 # one atomic step: never a half-deleted step_* directory
            shutil.rmtree(trash, ignore_errors=True)


def write_manifest(paths: CheckpointPaths, step: int, fmt: str, world: int, parts: dict, shapes: dict,
                   experts: dict | None = None, state: dict | None = None) -> None:
    """Write ``paths.manifest`` (the last file of a checkpoint: from now on it is complete); ``parts``
    {file: file_digest}, ``shapes`` {parameter: shape}, ``experts`` the expert layout of per-rank parts."""
    manifest = {"format_version": _FORMAT_VERSION, "step": step, "data_step": step, "format": fmt,
                "world": world, "expert_parts": experts is not None or any(n.startswith("experts_rank")
                                                                           for n in parts),
                "parts": parts, "shapes": shapes, **(state or {})}
    if experts is not None:
        manifest["experts"] = experts
    _write_json_atomic(paths.manifest, manifest)
    _fsync_dir(paths.directory)


def save_checkpoint(cell, run_dir: str, step: int, state: dict | None = None, fmt: str = "safetensors",
                    keep_last: int = 3) -> str:
    """One process: save ``cell`` as ``<run_dir>/checkpoints/step_<step>``; returns the directory."""
    return CheckpointManager(run_dir, fmt=fmt, keep_last=keep_last, log=lambda _: None).save(cell, step, state)
