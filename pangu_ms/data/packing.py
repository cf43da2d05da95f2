"""Packing tokenized documents into fixed rows, the document-level split, and unigram entropy.

Packing (:func:`pack_documents`)
    Each document's tokens are followed by the end-of-document token ``eod`` and all documents are
    concatenated in the given order into one stream ``d0 EOD d1 EOD ... dn EOD``.  The stream is cut into
    consecutive, non-overlapping rows of ``seq_len + 1`` tokens (a row gives ``seq_len`` inputs and
    ``seq_len`` next-token targets).  The trailing ``len(stream) % (seq_len + 1)`` tokens that do not fill a
    row are dropped (their count is reported).  Documents may span rows.

Boundaries (``segment_ids``, same shape as the rows)
    ``segment_ids[r, p]`` is the number of documents that *start* at positions ``1..p`` of row ``r`` -- i.e.
    0 for the leading (possibly continued) document and +1 at the first token after every EOD inside the
    row.  An EOD token belongs to the document it ends.  A model that resets attention / positions per
    document attends only within equal segment ids and restarts positions where the id changes.

    Example (hand-checked in the tests): documents ``[5,6,7] [8] [9,10,11,12]``, ``eod=2``, ``seq_len=3``:
    stream ``5 6 7 2 8 2 9 10 11 12 2`` -> rows ``[5,6,7,2]`` (segments ``[0,0,0,0]``) and ``[8,2,9,10]``
    (segments ``[0,0,1,1]``); ``11 12 2`` (3 tokens) are dropped.

Split (:func:`split_documents`)
    At document level: ``n_valid = round(valid_fraction * n_docs)`` (at least 1 when the fraction is > 0 and
    there are >= 2 documents), chosen by a permutation from ``numpy.random.default_rng(seed)``; both
    splits keep the original document order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from pangu_ms.data.errors import DataError


@dataclass
class PackedRows:
    """Result of packing: ``input_ids`` and ``segment_ids`` are int32 ``[n_rows, seq_len + 1]``."""

    input_ids: np.ndarray
    segment_ids: np.ndarray
    n_documents: int
    n_stream_tokens: int       # tokens in the stream including one EOD per document
    n_dropped_tokens: int      # tail tokens that did not fill a row

    @property
    def n_rows(self) -> int:
        return int(self.input_ids.shape[0])


def pack_documents(token_docs: Sequence[Sequence[int]], eod_id: int, seq_len: int) -> PackedRows:
    """Concatenate documents with an EOD after each and cut into rows of ``seq_len + 1`` tokens."""
    if seq_len < 2:
        raise DataError(f"--seq-len must be >= 2 (got {seq_len})")
    row_len = seq_len + 1
    lengths = np.fromiter((len(d) + 1 for d in token_docs), dtype=np.int64, count=len(token_docs))
    total = int(lengths.sum())
    stream = np.empty(total, dtype=np.int32)
    starts = np.zeros(total, dtype=bool)
    offset = 0
    for doc, n in zip(token_docs, lengths):
        stream[offset:offset + n - 1] = doc
        stream[offset + n - 1] = eod_id
        starts[offset] = True
        offset += int(n)
    n_rows = total // row_len
    used = n_rows * row_len
    input_ids = stream[:used].reshape(n_rows, row_len)
    start_flags = starts[:used].reshape(n_rows, row_len)
    segment_ids = np.zeros((n_rows, row_len), dtype=np.int32)
    if n_rows:
        segment_ids[:, 1:] = np.cumsum(start_flags[:, 1:], axis=1, dtype=np.int32)
    return PackedRows(np.ascontiguousarray(input_ids), segment_ids, len(token_docs), total, total - used)


def document_positions(segment_ids: np.ndarray) -> np.ndarray:
    """Position of every token within its document (0 at a row's start and at every segment change), int32,
    same shape as ``segment_ids`` [..., L]: the reset position ids of packed rows. Segment ids are
    non-decreasing along a row (``pack_documents``), so a document is one contiguous run."""
    seg = np.asarray(segment_ids)
    idx = np.broadcast_to(np.arange(seg.shape[-1]), seg.shape)
    start = np.zeros(seg.shape, dtype=bool)
    start[..., 0] = True
    start[..., 1:] = seg[..., 1:] != seg[..., :-1]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=-1)
    return (idx - first).astype(np.int32)


def split_documents(n_docs: int, valid_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic document-level split -> (train indices, valid indices), each sorted ascending."""
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"--valid-fraction must be in [0, 1) (got {valid_fraction})")
    n_valid = int(round(valid_fraction * n_docs))
    if valid_fraction > 0 and n_docs >= 2:
        n_valid = min(max(n_valid, 1), n_docs - 1)
    perm = np.random.default_rng(seed).permutation(n_docs)
    valid = np.sort(perm[:n_valid])
    train = np.sort(perm[n_valid:])
    return train, valid


def token_counts(rows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Histogram of token ids in ``rows`` (int64, length ``vocab_size``)."""
    return np.bincount(np.asarray(rows, dtype=np.int64).ravel(), minlength=vocab_size).astype(np.int64)


def entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def mixture_entropy_nats(count_list: List[np.ndarray], weights: Sequence[float]) -> float:
    """Entropy of the weighted mixture of unigram distributions ``sum_c w_c p_c / sum_c w_c``."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mix = sum(wc * c / max(c.sum(), 1) for wc, c in zip(w, count_list))
    return entropy_nats(mix)
