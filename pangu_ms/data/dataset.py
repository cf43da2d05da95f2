"""Deterministic, resumable, data-parallel batches from prepared (packed MindRecord) datasets.

Reading
    :func:`open_prepared` reads ``meta.json`` of a directory written by ``tools/preprocess_data.py`` and
    loads the requested split of each corpus from MindRecord (``mindspore.mindrecord.FileReader``) into
    memory as one int32 numpy array ``[n_rows, seq_len + 1]`` (plus the ``segment_ids`` of the same shape).
    The corpora are small (Shakespeare at seq_len 64: 40k rows, ~21 MB), so rows are **cached in memory**,
    process-wide, keyed by file path, size and mtime; no streaming reader is involved.

Batches are a pure function of ``(seed, step, micro, rank)``
    There is no iterator state: :meth:`BatchSampler.batch` for optimizer step ``i`` returns the same array
    whether or not steps ``0 .. i-1`` were ever read, so a resumed run only needs the step number.

    * **Global batch.**  Step ``i`` has ``global_batch_size = G`` row slots ``k = 0 .. G-1``.  The global batch
      depends only on ``(seed, step)`` -- not on ``dp_size`` or the micro-batch size -- so runs with
      different parallel layouts see the same data per step.
    * **Per source (corpus).**  Source ``c`` with ``N_c`` rows has ``steps_per_epoch = N_c // G`` (``N_c >= G`` is
      required).  For step ``i``: epoch ``e = i // steps_per_epoch``, slot ``b = i % steps_per_epoch``;
      the *virtual batch* is ``perm[b*G : (b+1)*G]`` where ``perm = numpy.random.default_rng([seed,
      crc32(name), e]).permutation(N_c)``.  So each epoch is reshuffled with ``(seed, epoch)``, every row is
      used at most once per epoch, and the ``N_c % G`` rows left over differ from epoch to epoch.
    * **Mixture.**  With one source, slot ``k`` takes row ``virtual_batch[k]``.  With several, step ``i``'s
      weights ``w`` (from ``weights`` or the active ``phases`` entry) assign a source to every slot by
      systematic sampling -- source ``c`` gets ``floor(G w_c)`` or ``ceil(G w_c)`` slots -- and a random
      permutation of the slots, both from ``default_rng([seed, MIX_TAG, i])``; slot ``k`` assigned to ``c``
      takes ``virtual_batch_c(i)[k]``.  Rows of one global batch are therefore always distinct.  A source
      consumes its virtual batches at the rate of its weight (each of its epochs then covers about a
      fraction ``G w_c / G`` of its rows before reshuffling); its position never depends on earlier phases.
    * **Data parallel / accumulation.**  ``G = dp_size * accumulation_steps * micro_batch_size``.  Rank ``r``
      owns slots ``[r * G/dp_size, (r+1) * G/dp_size)``; micro-batch ``j`` of rank ``r`` is slots
      ``r*G/dp_size + j*micro_batch_size ...``.  The ranks' rows are disjoint and together exactly the
      global batch.

Validation
    :func:`eval_batches` walks a split once, in stored order, without shuffling, each global eval batch
    split across ranks like training; the incomplete last global batch is dropped.

MindSpore
    :func:`make_generator_dataset` wraps a sampler in ``mindspore.dataset.GeneratorDataset`` (random access,
    ``shuffle=False``), yielding one micro-batch per item from a given start step: resuming is
    ``make_generator_dataset(sampler, start_step=resumed_step)``.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pangu_ms.data.errors import DataError
from pangu_ms.data.mindrecord_io import read_rows

FORMAT = "pangu_ms.packed/1"
MIX_TAG = 0x6D6978           # "mix": stream id of the per-step mixture assignment
_ROW_CACHE: Dict[Tuple[str, int, int], Tuple[np.ndarray, np.ndarray]] = {}


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
@dataclass
class PackedSplit:
    """All rows of one split of one corpus, in memory: ``input_ids`` / ``segment_ids`` int32 ``[N, L+1]``."""

    name: str
    input_ids: np.ndarray
    segment_ids: Optional[np.ndarray] = None
    eod_id: Optional[int] = None

    def __post_init__(self) -> None:
        self.input_ids = np.ascontiguousarray(self.input_ids, dtype=np.int32)
        if self.input_ids.ndim != 2 or self.input_ids.shape[1] < 3:
            raise DataError(f"dataset '{self.name}': rows must be 2-D with >= 3 tokens, got {self.input_ids.shape}")
        if self.segment_ids is not None:
            self.segment_ids = np.ascontiguousarray(self.segment_ids, dtype=np.int32)

    @property
    def n_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def row_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def seq_len(self) -> int:
        return self.row_len - 1

    @classmethod
    def from_mindrecord(cls, path: os.PathLike, name: Optional[str] = None, eod_id: Optional[int] = None
                        ) -> "PackedSplit":
        """Load (and cache in memory) a MindRecord split; ``path`` is any data file of it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"MindRecord file not found: {path}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _ROW_CACHE:
            _ROW_CACHE[key] = read_rows(path)
        ids, seg = _ROW_CACHE[key]
        return cls(name or path.parent.name, ids, seg, eod_id)


def read_meta(data_dir: os.PathLike) -> dict:
    """``meta.json`` of a prepared dataset directory (DataError if missing or of another format)."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"no meta.json in {data_dir}: not a prepared dataset (run tools/preprocess_data.py)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"corrupt {path}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"corrupt {path}: not UTF-8 text") from None
    if not isinstance(meta, dict):
        raise DataError(f"corrupt {path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: unknown format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def open_prepared(data_dir: os.PathLike, split: str = "train", corpora: Optional[Sequence[str]] = None,
                  seq_len: Optional[int] = None, vocab_size: Optional[int] = None) -> Dict[str, PackedSplit]:
    """Load ``split`` of the corpora in a prepared directory -> ``{corpus name: PackedSplit}``.

    ``seq_len`` / ``vocab_size`` (the model's) are checked against ``meta.json``: the data must have been
    packed with exactly this ``seq_len`` and use no id >= the model's ``vocab_size``.
    """
    meta = read_meta(data_dir)
    if seq_len is not None and int(meta["seq_len"]) != int(seq_len):
        raise DataError(f"prepared data {data_dir} has seq_len {meta['seq_len']}, but {seq_len} was asked for; "
                        f"re-run tools/preprocess_data.py --seq-len {seq_len}")
    if vocab_size is not None and int(meta["vocab_size"]) > int(vocab_size):
        raise DataError(f"prepared data {data_dir} uses a tokenizer with vocab size {meta['vocab_size']}, larger "
                        f"than the model's vocab_size {vocab_size}")
    names = list(meta["corpora"]) if corpora is None else list(corpora)
    out: Dict[str, PackedSplit] = {}
    for name in names:
        if name not in meta["corpora"]:
            raise DataError(f"corpus '{name}' is not in prepared data {data_dir} "
                            f"(has: {', '.join(meta['corpora'])})")
        info = meta["corpora"][name]["splits"].get(split)
        if info is None:
            raise DataError(f"corpus '{name}' in {data_dir} has no '{split}' split")
        out[name] = PackedSplit.from_mindrecord(Path(data_dir) / info["files"][0], name,
                                                meta["tokenizer"].get("eod_id"))
        if out[name].n_rows != info["rows"]:
            raise DataError(f"{Path(data_dir) / info['files'][0]}: {out[name].n_rows} rows, meta.json says {info['rows']}")
        if vocab_size is not None:
            check_token_ids(out[name], int(vocab_size), Path(data_dir) / info["files"][0])
    return out


def check_token_ids(split: PackedSplit, vocab_size: int, where: os.PathLike) -> None:
    """Every token id of ``split`` must be in [0, vocab_size): the ids themselves are checked, not meta.json's claim
    (an id out of range would otherwise fail inside the embedding Gather, after the graph compile)."""
    ids = split.input_ids
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = int(np.count_nonzero((ids < 0) | (ids >= vocab_size)))
        raise DataError(f"{where}: token ids span [{low}, {high}], outside [0, model.vocab_size={vocab_size}) "
                        f"({bad} of {ids.size} tokens); re-prepare the data or raise model.vocab_size")


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
Weights = Mapping[str, float]


def _normalise(weights: Weights, names: Sequence[str]) -> np.ndarray:
    unknown = set(weights) - set(names)
    if unknown:
        raise DataError(f"mixture weight for unknown corpus {sorted(unknown)} (have: {', '.join(names)})")
    w = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise DataError(f"mixture weights must be >= 0 with a positive sum (got {dict(weights)})")
    return w / w.sum()


@dataclass
class BatchSampler:
    """Stateless batches for training; see the module docstring for the exact definition.

    ``sources``: one :class:`PackedSplit` or ``{name: PackedSplit}`` (all with the same row length).
    ``weights``: mixture weights by name (default: equal).  ``phases``: ``[(start_step, weights), ...]``
    -- from ``start_step`` on (global step numbering) those weights apply; overrides ``weights``.
    ``micro_batch_size`` defaults to ``global_batch_size // dp_size`` (no accumulation).
    """

    sources: Union[PackedSplit, Mapping[str, PackedSplit]]
    global_batch_size: int
    dp_rank: int = 0
    dp_size: int = 1
    seed: int = 0
    micro_batch_size: Optional[int] = None
    weights: Optional[Weights] = None
    phases: Optional[Sequence[Tuple[int, Weights]]] = None
    _perm_cache: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.sources, PackedSplit):
            self.sources = {self.sources.name: self.sources}
        self.names: List[str] = list(self.sources)
        self._splits: List[PackedSplit] = [self.sources[n] for n in self.names]
        if not self._splits:
            raise DataError("no dataset given to the batch sampler")
        row_lens = {s.row_len for s in self._splits}
        if len(row_lens) != 1:
            raise DataError(f"datasets have different row lengths {sorted(row_lens)}; prepare them with one --seq-len")
        self.row_len = row_lens.pop()
        G = self.global_batch_size
        if G < 1 or self.dp_size < 1 or not 0 <= self.dp_rank < self.dp_size:
            raise DataError(f"bad batch layout: global_batch_size {G}, dp_rank {self.dp_rank}, dp_size {self.dp_size}")
        if G % self.dp_size:
            raise DataError(f"global_batch_size {G} is not divisible by dp_size {self.dp_size}")
        self.rows_per_rank = G // self.dp_size
        if self.micro_batch_size is None:
            self.micro_batch_size = self.rows_per_rank
        if self.micro_batch_size < 1 or self.rows_per_rank % self.micro_batch_size:
            raise DataError(f"per-rank batch {self.rows_per_rank} (= global_batch_size {G} / dp_size "
                            f"{self.dp_size}) is not divisible by micro_batch_size {self.micro_batch_size}")
        self.accumulation_steps = self.rows_per_rank // self.micro_batch_size
        self._keys = [zlib.crc32(n.encode("utf-8")) for n in self.names]
        phases = list(self.phases) if self.phases else [(0, self.weights or {n: 1.0 for n in self.names})]
        phases.sort(key=lambda p: p[0])
        if phases[0][0] > 0:
            raise DataError(f"the first data phase must start at step 0 (got {phases[0][0]})")
        self._phase_starts = [int(p[0]) for p in phases]
        self._phase_weights = [_normalise(p[1], self.names) for p in phases]
        used = np.any(np.stack(self._phase_weights) > 0, axis=0)
        for split, is_used in zip(self._splits, used):
            if is_used and split.n_rows < G:
                raise DataError(f"dataset '{split.name}' has {split.n_rows} rows, fewer than global_batch_size {G}")
        self._steps_per_epoch = [max(s.n_rows // G, 1) for s in self._splits]

    # -- pure functions of (seed, step) -----------------------------------------------------------
    def weights_at(self, step: int) -> np.ndarray:
        """Normalised mixture weights (in ``self.names`` order) in force at ``step``."""
        idx = int(np.searchsorted(self._phase_starts, step, side="right")) - 1
        return self._phase_weights[idx]

    def epoch_of(self, step: int, source: Union[int, str] = 0) -> int:
        c = self.names.index(source) if isinstance(source, str) else source
        return step // self._steps_per_epoch[c]

    def _permutation(self, c: int, epoch: int) -> np.ndarray:
        key = (c, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) >= 4 * len(self._splits):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, self._keys[c], epoch])
            perm = self._perm_cache[key] = rng.permutation(self._splits[c].n_rows)
        return perm

    def _virtual_batch(self, c: int, step: int) -> np.ndarray:
        spe = self._steps_per_epoch[c]
        epoch, slot = divmod(step, spe)
        G = self.global_batch_size
        return self._permutation(c, epoch)[slot * G:(slot + 1) * G]

    def slot_assignment(self, step: int) -> np.ndarray:
        """Source index of each of the ``G`` slots of the global batch at ``step``."""
        G = self.global_batch_size
        if len(self._splits) == 1:
            return np.zeros(G, dtype=np.int64)
        w = self.weights_at(step)
        rng = np.random.default_rng([self.seed, MIX_TAG, step])
        u = (np.arange(G) + rng.random()) / G
        src = np.minimum(np.searchsorted(np.cumsum(w), u, side="right"), len(w) - 1)
        out = np.empty(G, dtype=np.int64)
        out[rng.permutation(G)] = src
        return out

    def global_indices(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(source index, row index)`` of every slot of the global batch at ``step``, each ``[G]``."""
        if step < 0:
            raise ValueError(f"step must be >= 0 (got {step})")
        src = self.slot_assignment(step)
        rows = np.empty(self.global_batch_size, dtype=np.int64)
        for c in np.unique(src):
            slots = np.nonzero(src == c)[0]
            rows[slots] = self._virtual_batch(int(c), step)[slots]
        return src, rows

    def _gather(self, src: np.ndarray, rows: np.ndarray, segments: bool) -> np.ndarray:
        out = np.empty((len(rows), self.row_len), dtype=np.int32)
        for c in np.unique(src):
            mask = src == c
            split = self._splits[int(c)]
            table = split.segment_ids if segments else split.input_ids
            if table is None:
                raise DataError(f"dataset '{split.name}' has no segment_ids")
            out[mask] = table[rows[mask]]
        return out

    def _slots(self, micro: Optional[int]) -> slice:
        base = self.dp_rank * self.rows_per_rank
        if micro is None:
            return slice(base, base + self.rows_per_rank)
        if not 0 <= micro < self.accumulation_steps:
            raise ValueError(f"micro must be in [0, {self.accumulation_steps}) (got {micro})")
        start = base + micro * self.micro_batch_size
        return slice(start, start + self.micro_batch_size)

    def batch(self, step: int, micro: int = 0, with_segments: bool = False):
        """This rank's micro-batch ``micro`` of optimizer step ``step``: int32 ``[micro_batch_size, L+1]``.

        With ``with_segments=True`` returns ``(input_ids, segment_ids)``.
        """
        src, rows = self.global_indices(step)
        sl = self._slots(micro)
        ids = self._gather(src[sl], rows[sl], False)
        return (ids, self._gather(src[sl], rows[sl], True)) if with_segments else ids

    def rank_batch(self, step: int) -> np.ndarray:
        """All of this rank's rows of step ``step`` (all micro-batches): ``[global_batch/dp_size, L+1]``."""
        src, rows = self.global_indices(step)
        sl = self._slots(None)
        return self._gather(src[sl], rows[sl], False)

    def global_batch(self, step: int) -> np.ndarray:
        """The whole global batch of ``step`` (all ranks): ``[global_batch_size, L+1]``."""
        src, rows = self.global_indices(step)
        return self._gather(src, rows, False)

    def state(self, step: int) -> dict:
        """What a checkpoint should record to resume the data stream (the step is sufficient)."""
        return {"step": int(step), "seed": self.seed, "global_batch_size": self.global_batch_size,
                "epochs": {n: self.epoch_of(step, i) for i, n in enumerate(self.names)}}


def load_batch_sampler(data_dir: os.PathLike, seq_len: int, global_batch_size: int, dp_rank: int = 0,
                       dp_size: int = 1, seed: int = 0, micro_batch_size: Optional[int] = None,
                       weights: Optional[Weights] = None, phases: Optional[Sequence[Tuple[int, Weights]]] = None,
                       split: str = "train", vocab_size: Optional[int] = None) -> BatchSampler:
    """One call for the training loop: open a prepared directory and build its :class:`BatchSampler`.

    Without ``weights``/``phases`` the mixture weights stored in ``meta.json`` are used.  Only corpora with
    a positive weight in some phase are loaded.
    """
    meta = read_meta(data_dir)
    if weights is None and not phases:
        weights = meta["mixture"]["weights"]
    wanted = set()
    for w in ([weights] if weights else []) + [p[1] for p in (phases or [])]:
        wanted.update(n for n, v in w.items() if v > 0)
    unknown = wanted - set(meta["corpora"])
    if unknown:
        raise DataError(f"mixture names unknown corpus {sorted(unknown)}; {data_dir} has: {', '.join(meta['corpora'])}")
    names = [n for n in meta["corpora"] if n in wanted]
    sources = open_prepared(data_dir, split, names, seq_len=seq_len, vocab_size=vocab_size)

    def keep(w: Weights) -> Dict[str, float]:
        return {n: v for n, v in w.items() if n in sources}

    return BatchSampler(sources, global_batch_size, dp_rank, dp_size, seed, micro_batch_size,
                        keep(weights) if weights else None,
                        [(s, keep(w)) for s, w in phases] if phases else None)


def eval_batches(split: PackedSplit, batch_size: int, dp_rank: int = 0, dp_size: int = 1,
                 max_batches: Optional[int] = None, with_segments: bool = False) -> Iterator:
    """This rank's validation batches ``[batch_size, L+1]``: the split in stored order, once.

    Global eval batch ``t`` is rows ``[t*B*dp_size, (t+1)*B*dp_size)``; rank ``r`` takes its ``r``-th block of
    ``B`` rows.  The incomplete last global batch is dropped so all ranks see the same number of batches.
    """
    per_step = batch_size * dp_size
    n_batches = split.n_rows // per_step
    if n_batches == 0:
        raise DataError(f"validation split '{split.name}' has {split.n_rows} rows, fewer than one eval batch "
                        f"of {per_step} (batch_size {batch_size} x dp_size {dp_size})")
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for t in range(n_batches):
        start = t * per_step + dp_rank * batch_size
        ids = split.input_ids[start:start + batch_size]
        if with_segments:
            yield ids, split.segment_ids[start:start + batch_size]
        else:
            yield ids


class _StepSource:
    """Random-access source for GeneratorDataset: item ``n`` = micro-batch ``n % A`` of step ``start + n // A``."""

    def __init__(self, sampler: BatchSampler, start_step: int, num_steps: int, with_segments: bool):
        self.sampler, self.start_step, self.num_steps = sampler, start_step, num_steps
        self.with_segments = with_segments

    def __len__(self) -> int:
        return self.num_steps * self.sampler.accumulation_steps

    def __getitem__(self, n: int):
        step, micro = divmod(int(n), self.sampler.accumulation_steps)
        out = self.sampler.batch(self.start_step + step, micro, with_segments=self.with_segments)
        return out if self.with_segments else (out,)


def make_generator_dataset(sampler: BatchSampler, start_step: int = 0, num_steps: int = 1,
                           with_segments: bool = False):
    """``mindspore.dataset.GeneratorDataset`` of already-batched micro-batches, in (step, micro) order.

    Columns: ``input_ids`` (and ``segment_ids``), int32 ``[micro_batch_size, L+1]``; ``shuffle=False``,
    single worker, so it is exactly ``sampler.batch`` for steps ``start_step .. start_step+num_steps-1``.
    """
    import mindspore.dataset as ds

    columns = ["input_ids", "segment_ids"] if with_segments else ["input_ids"]
    return ds.GeneratorDataset(_StepSource(sampler, start_step, num_steps, with_segments), column_names=columns,
                               shuffle=False, num_parallel_workers=1)
