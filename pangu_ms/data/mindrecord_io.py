"""MindRecord files of packed rows: writing and reading.

Schema (one record per packed row):

``input_ids``   int32 ``[seq_len + 1]`` (declared ``[-1]``) -- token ids
``segment_ids`` int32 ``[seq_len + 1]`` (declared ``[-1]``) -- document boundaries, see ``packing.py``
``row_index``   int64 -- position of the row in the split (also the MindRecord index field)

Files are written with ``mindspore.mindrecord.FileWriter``: one split is ``<name>.mindrecord`` (plus its
``.db`` index), or ``<name>.mindrecord0 .. <name>.mindrecord{k-1}`` for ``num_shards = k > 1`` (MindSpore's
naming).  Rows are written in ``row_index`` order; the output is byte-identical for identical input.
Header / page sizes are set small (256 KiB / 1 MiB) because the default 16 MiB + 32 MiB pages pad small
files to ~48 MiB.

Note: variable-length array fields must never be empty -- ``mindspore.dataset.MindDataset`` returns garbage
for a zero-length array field (checked with MindSpore 2.9) -- hence fixed-length ``segment_ids`` instead of
a list of document starts.

The files are also readable by MindFormers ``CausalLanguageModelDataset`` /
``mindspore.dataset.MindDataset(columns_list=["input_ids"])``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from pangu_ms.data.errors import DataError

SCHEMA = {
    "input_ids": {"type": "int32", "shape": [-1]},
    "segment_ids": {"type": "int32", "shape": [-1]},
    "row_index": {"type": "int64"},
}
SCHEMA_DESC = "pangu_ms packed rows"
HEADER_SIZE = 1 << 18
PAGE_SIZE = 1 << 20
WRITE_CHUNK = 4096


def shard_paths(path: os.PathLike, num_shards: int) -> List[Path]:
    """The data file names FileWriter produces for ``path`` and ``num_shards``."""
    path = Path(path)
    if num_shards == 1:
        return [path]
    return [path.with_name(f"{path.name}{i}") for i in range(num_shards)]


def write_rows(path: os.PathLike, input_ids: np.ndarray, segment_ids: np.ndarray, num_shards: int = 1,
               progress=None) -> List[Path]:
    """Write rows to MindRecord shard(s) at ``path``; returns the data file paths (without ``.db``).

    ``progress`` is an optional ``tqdm`` bar advanced by the number of rows written.
    """
    from mindspore.mindrecord import FileWriter

    if input_ids.shape != segment_ids.shape or input_ids.ndim != 2:
        raise ValueError(f"input_ids {input_ids.shape} and segment_ids {segment_ids.shape} must be equal 2-D shapes")
    if input_ids.shape[0] == 0:
        raise DataError(f"no rows to write to {path}")
    if not 1 <= num_shards <= input_ids.shape[0]:
        raise DataError(f"--num-shards must be between 1 and the number of rows ({input_ids.shape[0]}); got {num_shards}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in shard_paths(path, num_shards):
        for p in (old, old.with_name(old.name + ".db")):
            if p.exists():
                p.unlink()
    writer = FileWriter(str(path), shard_num=num_shards, overwrite=True)
    writer.set_header_size(HEADER_SIZE)
    writer.set_page_size(PAGE_SIZE)
    writer.add_schema(SCHEMA, SCHEMA_DESC)
    writer.add_index(["row_index"])
    ids = np.ascontiguousarray(input_ids, dtype=np.int32)
    seg = np.ascontiguousarray(segment_ids, dtype=np.int32)
    for start in range(0, ids.shape[0], WRITE_CHUNK):
        stop = min(start + WRITE_CHUNK, ids.shape[0])
        writer.write_raw_data([{"input_ids": ids[i], "segment_ids": seg[i], "row_index": i}
                               for i in range(start, stop)])
        if progress is not None:
            progress.update(stop - start)
    writer.commit()
    return shard_paths(path, num_shards)


def read_rows(path: os.PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read all rows of a (possibly sharded) MindRecord split -> (input_ids, segment_ids), int32 2-D.

    ``path`` is any one data file of the split; MindSpore finds its sibling shards.  Rows are returned in
    ``row_index`` order regardless of shard layout.
    """
    from mindspore.mindrecord import FileReader

    path = Path(path)
    if not path.is_file():
        raise DataError(f"MindRecord file not found: {path}")
    try:
        reader = FileReader(str(path), columns=["input_ids", "segment_ids", "row_index"])
    except Exception as exc:
        raise DataError(f"cannot read MindRecord file {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    try:
        ids, seg, index = [], [], []
        for record in reader.get_next():
            ids.append(record["input_ids"])
            seg.append(record["segment_ids"])
            index.append(int(record["row_index"]))
    finally:
        reader.close()
    if not ids:
        raise DataError(f"MindRecord file {path} holds no rows")
    order = np.argsort(np.asarray(index, dtype=np.int64), kind="stable")
    input_ids = np.stack(ids).astype(np.int32, copy=False)[order]
    segment_ids = np.stack(seg).astype(np.int32, copy=False)[order]
    return np.ascontiguousarray(input_ids), np.ascontiguousarray(segment_ids)
