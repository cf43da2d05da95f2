"""Generated arithmetic problems with exact answers: the verifiable CPU task of the post-training demo.

Problems (our own generator; no external data):
    add  ``a+b=``  with 0 <= a < ``max_a``, 0 <= b < ``max_b``
    sub  ``a-b=``  with 0 <= b <= a, a < ``max_a``, b < ``max_b`` (answers are never negative)
    mul  ``a*b=``  with 0 <= a, b < ``mul_max`` (off by default: single-digit products are a lookup table that a
         held-out split cannot test)
Every (op, a, b) appears once; per capability the set is shuffled with ``numpy.random.default_rng(seed)`` and
the first ``heldout_fraction`` is held out (never seen in pretraining, SFT or RL). The defaults (max_a 100,
max_b 10, heldout 0.1, seed 0) give 1,000 add + 955 sub = 1,955 problems, 196 held out (100 add, 96 sub). A
single-digit second operand makes the task learnable by a ~1M-parameter model in minutes: the ones digit is a
100-entry table shared by all tens digits, so held-out problems are solvable by generalisation.

Each problem is a dict ``{"id": "add:12:7", "capability": "add", "prompt": "12+7=", "answer": 19}``; the chat
template of ``pangu_ms.data.chat`` wraps the prompt, the expected response is ``str(answer)``.

The tokenizer for this task is a byte-level BPE whose pre-tokenizer splits every digit on its own
(``Digits(individual_digits=True)``), so numbers are spelled digit by digit (no 2-digit tokens to memorise).
"""
from __future__ import annotations

import json
import os

import numpy as np

CAPABILITIES = ("add", "sub", "mul")
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


def _answer(op: str, a: int, b: int) -> int:
    return a + b if op == "add" else a - b if op == "sub" else a * b


def all_problems(max_a: int = 100, max_b: int = 10, mul_max: int = 0) -> list[dict]:
    out = []
    for a in range(max_a):
        for b in range(max_b):
            out.append(("add", a, b))
            if b <= a:
                out.append(("sub", a, b))
    for a in range(mul_max):
        for b in range(mul_max):
            out.append(("mul", a, b))
    return [{"id": f"{op}:{a}:{b}", "capability": op, "prompt": f"{a}{_SYMBOL[op]}{b}=",
             "answer": _answer(op, a, b)} for op, a, b in out]


def split_problems(problems: list[dict], heldout_fraction: float = 0.1, seed: int = 0):
    """(train, heldout): per capability, a seeded shuffle; the first ``heldout_fraction`` is held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cap in sorted({p["capability"] for p in problems}):
        group = [p for p in problems if p["capability"] == cap]
        order = rng.permutation(len(group))
        n_held = int(round(heldout_fraction * len(group)))
        held += [group[i] for i in order[:n_held]]
        train += [group[i] for i in order[n_held:]]
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def train_digit_tokenizer(texts, vocab_size: int):
    """Byte-level BPE (specials <|pad|> <|bos|> <|eos|> = 0, 1, 2) with single-digit pre-tokenization."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ..data.tokenizer import SPECIAL_TOKENS, _wrap_tokenizers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return _wrap_tokenizers(tok, None, "<|eos|>")
