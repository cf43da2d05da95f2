"""BatchSampler: DP sharding, resume exactness, epochs, mixtures, phases, eval batches, MindSpore wrapper."""
import numpy as np
import pytest

from pangu_ms.data.dataset import (BatchSampler, PackedSplit, eval_batches, load_batch_sampler,
                                   make_generator_dataset, open_prepared)
from pangu_ms.data.errors import DataError

ROW = 5


def split_of(name, n_rows, offset=0):
    """Rows whose first token is a unique row id (offset + r), so rows can be identified in batches."""
    ids = np.zeros((n_rows, ROW), dtype=np.int32)
    ids[:, 0] = offset + np.arange(n_rows)
    ids[:, 1:] = 7
    return PackedSplit(name, ids, np.zeros_like(ids))


def row_ids(batch):
    return [int(x) for x in batch[:, 0]]


def test_dp_ranks_disjoint_and_complete_with_accumulation():
    data = split_of("a", 103)
    G, dp, mb = 12, 3, 2                   # 4 rows per rank = 2 micro-batches of 2
    samplers = [BatchSampler(data, G, rank, dp, seed=11, micro_batch_size=mb) for rank in range(dp)]
    assert samplers[0].accumulation_steps == 2
    for step in range(20):
        got = []
        for s in samplers:
            parts = [s.batch(step, j) for j in range(s.accumulation_steps)]
            assert all(p.shape == (mb, ROW) and p.dtype == np.int32 for p in parts)
            np.testing.assert_array_equal(np.concatenate(parts), s.rank_batch(step))
            got.extend(row_ids(np.concatenate(parts)))
        assert len(set(got)) == G                                   # disjoint across ranks and micro-batches
        assert got == row_ids(samplers[0].global_batch(step))       # together exactly the global batch


def test_global_batch_independent_of_dp_layout():
    data = split_of("a", 64)
    single = BatchSampler(data, 8, seed=4)
    for step in (0, 5, 17):
        parts = [BatchSampler(data, 8, r, 4, seed=4, micro_batch_size=1).rank_batch(step) for r in range(4)]
        np.testing.assert_array_equal(np.concatenate(parts), single.global_batch(step))


def test_resume_is_exact_without_reading_earlier_steps():
    data = split_of("a", 50)
    full = BatchSampler(data, 6, 1, 2, seed=9)
    history = [full.batch(step) for step in range(40)]                 # read in order, crossing epochs
    fresh = BatchSampler(data, 6, 1, 2, seed=9)                        # a "restarted" process
    for step in (39, 0, 23, 8):                                        # any order, no earlier reads
        np.testing.assert_array_equal(fresh.batch(step), history[step])
    assert fresh.state(23) == {"step": 23, "seed": 9, "global_batch_size": 6, "epochs": {"a": 2}}


def test_epochs_cover_rows_once_and_reshuffle():
    data = split_of("a", 40)
    s = BatchSampler(data, 8, seed=1)                                  # 5 steps per epoch, nothing left over
    epoch0 = [r for step in range(5) for r in row_ids(s.global_batch(step))]
    epoch1 = [r for step in range(5, 10) for r in row_ids(s.global_batch(step))]
    assert sorted(epoch0) == list(range(40)) and sorted(epoch1) == list(range(40))
    assert epoch0 != epoch1                                            # reshuffled with (seed, epoch)
    other_seed = BatchSampler(data, 8, seed=2)
    assert row_ids(other_seed.global_batch(0)) != row_ids(s.global_batch(0))


def test_mixture_weights_respected():
    a, b = split_of("a", 400), split_of("b", 300, offset=1000)
    s = BatchSampler({"a": a, "b": b}, 16, seed=3, weights={"a": 3.0, "b": 1.0})
    n_b = []
    for step in range(200):
        ids = row_ids(s.global_batch(step))
        assert len(set(ids)) == 16                                     # no duplicate rows in a global batch
        n_b.append(sum(i >= 1000 for i in ids))
    assert set(n_b) <= {4}                                             # systematic sampling: 16 * 1/4 exactly
    s2 = BatchSampler({"a": a, "b": b}, 10, seed=3, weights={"a": 0.7, "b": 0.3})
    counts = [sum(i >= 1000 for i in row_ids(s2.global_batch(step))) for step in range(300)]
    assert set(counts) <= {3} and np.mean(counts) == pytest.approx(3.0)
    s3 = BatchSampler({"a": a, "b": b}, 10, seed=3, weights={"a": 0.75, "b": 0.25})
    counts = [sum(i >= 1000 for i in row_ids(s3.global_batch(step))) for step in range(400)]
    assert set(counts) <= {2, 3} and np.mean(counts) == pytest.approx(2.5, abs=0.15)


def test_phases_switch_mixture():
    a, b = split_of("a", 100), split_of("b", 100, offset=1000)
    s = BatchSampler({"a": a, "b": b}, 8, seed=0, phases=[(0, {"a": 1.0}), (10, {"b": 1.0})])
    assert all(i < 1000 for step in range(10) for i in row_ids(s.global_batch(step)))
    assert all(i >= 1000 for step in range(10, 20) for i in row_ids(s.global_batch(step)))


def test_layout_errors():
    data = split_of("a", 10)
    with pytest.raises(DataError, match="has 10 rows, fewer than global_batch_size 16"):
        BatchSampler(data, 16)
    with pytest.raises(DataError, match="not divisible by dp_size 3"):
        BatchSampler(data, 8, 0, 3)
    with pytest.raises(DataError, match="not divisible by micro_batch_size 3"):
        BatchSampler(data, 8, 0, 2, micro_batch_size=3)
    with pytest.raises(DataError, match="unknown corpus"):
        BatchSampler({"a": data}, 4, weights={"zzz": 1.0})


def test_eval_batches_sharded_in_order():
    data = split_of("v", 23)
    r0 = [row_ids(b) for b in eval_batches(data, 3, 0, 2)]
    r1 = [row_ids(b) for b in eval_batches(data, 3, 1, 2)]
    assert r0 == [[0, 1, 2], [6, 7, 8], [12, 13, 14]] and r1 == [[3, 4, 5], [9, 10, 11], [15, 16, 17]]
    with pytest.raises(DataError, match="fewer than one eval batch"):
        list(eval_batches(data, 12, 0, 2))


def test_prepared_dataset_reader(prepared):
    out, meta = prepared
    s = load_batch_sampler(out, seq_len=8, global_batch_size=4, dp_rank=0, dp_size=2, seed=5, micro_batch_size=1)
    assert set(s.names) == set(meta["corpora"]) and s.row_len == 9
    ids, seg = s.batch(3, 1, with_segments=True)
    assert ids.shape == seg.shape == (1, 9) and ids.dtype == np.int32 and int(ids.max()) < meta["vocab_size"]
    valid = open_prepared(out, "valid")
    assert sum(v.n_rows for v in valid.values()) == meta["rows"]["valid"]
    with pytest.raises(DataError, match="has seq_len 8, but 16 was asked for"):
        open_prepared(out, seq_len=16)
    with pytest.raises(DataError, match="vocab size 300, larger than the model's vocab_size 256"):
        open_prepared(out, vocab_size=256)


def test_generator_dataset_matches_sampler():
    data = split_of("a", 40)
    s = BatchSampler(data, 8, 1, 2, seed=2, micro_batch_size=2)
    ds = make_generator_dataset(s, start_step=5, num_steps=3)
    got = [item["input_ids"] for item in ds.create_dict_iterator(output_numpy=True, num_epochs=1)]
    want = [s.batch(step, micro) for step in range(5, 8) for micro in range(2)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
