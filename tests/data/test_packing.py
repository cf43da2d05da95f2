"""Packing, boundaries, document split and entropy against hand-computed references."""
import math

import numpy as np
import pytest

from pangu_ms.data.errors import DataError
from pangu_ms.data.packing import (entropy_nats, mixture_entropy_nats, pack_documents, split_documents,
                                   token_counts)


def test_pack_hand_computed():
    # stream: 5 6 7 EOD 8 EOD 9 10 11 12 EOD  (11 tokens), rows of 4 -> 2 rows, 3 tokens dropped
    packed = pack_documents([[5, 6, 7], [8], [9, 10, 11, 12]], eod_id=2, seq_len=3)
    np.testing.assert_array_equal(packed.input_ids, [[5, 6, 7, 2], [8, 2, 9, 10]])
    np.testing.assert_array_equal(packed.segment_ids, [[0, 0, 0, 0], [0, 0, 1, 1]])
    assert packed.input_ids.dtype == np.int32 and packed.segment_ids.dtype == np.int32
    assert (packed.n_rows, packed.n_documents, packed.n_stream_tokens, packed.n_dropped_tokens) == (2, 3, 11, 3)


def test_pack_many_documents_in_one_row_and_exact_fit():
    # stream: 4 EOD 5 EOD 6 7 EOD 8 EOD  (9 tokens) = 3 rows of 3, nothing dropped
    packed = pack_documents([[4], [5], [6, 7], [8]], eod_id=1, seq_len=2)
    np.testing.assert_array_equal(packed.input_ids, [[4, 1, 5], [1, 6, 7], [1, 8, 1]])
    # row 1 starts mid-document (the EOD of doc [5]); doc [6, 7] starts at position 1
    np.testing.assert_array_equal(packed.segment_ids, [[0, 0, 1], [0, 1, 1], [0, 1, 1]])
    assert packed.n_dropped_tokens == 0


def test_pack_rejects_short_seq_len():
    with pytest.raises(DataError, match="seq-len must be >= 2"):
        pack_documents([[1, 2, 3]], eod_id=0, seq_len=1)


def test_split_is_disjoint_complete_and_deterministic():
    train, valid = split_documents(100, 0.1, seed=5)
    assert len(valid) == 10 and len(train) == 90
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(range(100))
    t2, v2 = split_documents(100, 0.1, seed=5)
    np.testing.assert_array_equal(valid, v2)
    _, v3 = split_documents(100, 0.1, seed=6)
    assert set(v3) != set(valid)
    # at least one validation document when a fraction is asked for; none without
    assert len(split_documents(5, 0.01, seed=0)[1]) == 1
    assert len(split_documents(5, 0.0, seed=0)[1]) == 0
    with pytest.raises(DataError, match="valid-fraction"):
        split_documents(5, 1.0, seed=0)


def test_entropy_hand_computed():
    counts = token_counts(np.array([[1, 1, 2, 3]]), vocab_size=5)
    np.testing.assert_array_equal(counts, [0, 2, 1, 1, 0])
    assert entropy_nats(counts) == pytest.approx(1.5 * math.log(2))
    # mixture of two point masses with weights 3:1 -> entropy of (0.75, 0.25)
    a, b = np.array([4, 0]), np.array([0, 10])
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mixture_entropy_nats([a, b], [3, 1]) == pytest.approx(expected)
