"""Reward functions on edge cases, the weighted multi-capability combination, hard-example queue, sampler."""
import numpy as np
import pytest

from pangu_ms.rl.mining import HardExampleQueue
from pangu_ms.rl.rewards import REWARDS, Completion, MultiCapabilityReward, canonical_int, register_reward
from pangu_ms.rl.rollout import sample_next
from pangu_ms.rl.tasks import all_problems, split_problems


def C(text, stopped=True, n=3):
    return Completion(text, stopped, n, 5)


@pytest.mark.parametrize("text,answer,correct,fmt", [
    ("19", 19, 1, 1), (" 19 ", 19, 1, 1), ("019", 19, 1, 1), ("-0", 0, 1, 1), ("-12", -12, 1, 1),
    ("", 19, 0, 0), ("   ", 0, 0, 0), ("19.0", 19, 0, 0), ("1 9", 19, 0, 0), ("19a", 19, 0, 0), ("+19", 19, 0, 0),
    ("twenty", 20, 0, 0), ("--3", -3, 0, 0), ("20", 19, 0, 1), ("<|eos|>", 0, 0, 0), ("١٩", 19, 0, 0),
    ("9" * 5000, int("9" * 500), 0, 1), ("1" + "0" * 3000, 10 ** 3000, 1, 1), ("7" * 100000, 7, 0, 1),
])
def test_correct_and_format_edge_cases(text, answer, correct, fmt):
    prob = {"answer": answer, "capability": "add"}
    assert REWARDS["correct"](C(text), prob) == correct
    assert REWARDS["format"](C(text), prob) == fmt


def test_answer_types_and_truncation():
    assert REWARDS["correct"](C("7"), {"answer": "7"}) == 1
    assert REWARDS["correct"](C("7"), {"answer": 7.0}) == 1
    assert REWARDS["correct"](C("7"), {"answer": 7.5}) == 0
    assert REWARDS["correct"](C("7"), {"answer": None}) == 0
    assert REWARDS["correct"](C("1"), {"answer": True}) == 0
    assert REWARDS["correct"](C("7"), {}) == 0
    # cut at max_new_tokens (no stop token): may be correct, but not well-formatted
    assert REWARDS["format"](C("7", stopped=False), {"answer": 7}) == 0
    assert REWARDS["correct"](C("7", stopped=False), {"answer": 7}) == 1
    assert canonical_int(None) is None and canonical_int("0000") == "0"
    assert REWARDS["correct"](C("1" + "0" * 5000), {"answer": 10 ** 5000}) == 0   # beyond int->str limit: no raise
    assert REWARDS["correct"](C("1"), {"answer": float("inf")}) == 0


def test_multi_capability_weights():
    r = MultiCapabilityReward({"correct": 1.0, "format": 0.2, "sub.correct": 2.0})
    tot, parts = r(C("5"), {"answer": 5, "capability": "add"})
    assert parts == {"correct": 1.0, "format": 1.0} and tot == pytest.approx(1.2)
    tot, _ = r(C("5"), {"answer": 5, "capability": "sub"})
    assert tot == pytest.approx(2.2)
    tot, _ = r(C("6", stopped=False), {"answer": 5, "capability": "sub"})
    assert tot == 0
    with pytest.raises(ValueError, match="unknown reward"):
        MultiCapabilityReward({"nonexistent": 1.0})

    @register_reward("test_always_one")          # room for model-based rewards: any callable registers
    def _one(c, p):
        return 1.0
    tot, parts = MultiCapabilityReward({"test_always_one": 0.5})(C(""), {})
    assert tot == 0.5 and parts == {"test_always_one": 1.0}


def test_hard_example_queue():
    q = HardExampleQueue(threshold=0.5, max_requeue=2, capacity=3)
    q.update("a", 0.0)
    q.update("b", 1.0)
    q.update("c", 0.25)
    assert len(q) == 2 and q.take(1) == ["a"]
    q.update("a", 0.0)                      # failed again: second (last) requeue
    assert q.take(5) == ["c", "a"]
    q.update("a", 0.0)                      # max_requeue reached: dropped
    q.update("c", 0.9)                      # solved
    assert len(q) == 0 and q.solved == 1
    for k in "wxyz":
        q.update(k, 0.0)
    assert len(q) == 3                      # capacity
    q2 = HardExampleQueue()
    q2.load_state(q.state())
    assert q2.take(9) == ["w", "x", "y"]


def test_sample_next_greedy_temperature_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    ids, _ = sample_next(logits[:2], 0.0, 1.0, np.random.default_rng(0))
    assert list(ids) == [0, 0]
    ids, lp = sample_next(logits, 1.0, 0.7, np.random.default_rng(0))
    assert set(ids) == {0, 1}                            # nucleus: 0.5 + 0.3 >= 0.7
    assert abs((ids == 0).mean() - 0.5 / 0.8) < 0.03
    np.testing.assert_allclose(lp[ids == 1], np.log(0.3 / 0.8))
    ids, _ = sample_next(logits, 1.0, 1.0, np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(ids, minlength=4) / len(ids), [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_task_generator_split():
    probs = all_problems(100, 10)
    assert len(probs) == 1000 + 955 and all(str(eval(p["prompt"][:-1])) == str(p["answer"]) for p in probs)
    train, held = split_problems(probs, 0.1, seed=0)
    assert len(held) == 196 and not {p["id"] for p in train} & {p["id"] for p in held}
    again, held2 = split_problems(probs, 0.1, seed=0)
    assert [p["id"] for p in held] == [p["id"] for p in held2]
    assert [p["id"] for p in split_problems(probs, 0.1, seed=1)[1]] != [p["id"] for p in held]
