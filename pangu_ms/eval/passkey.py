"""Passkey retrieval (Mohtashami & Jaggi 2023 style needle-in-a-haystack) for causal LMs of this repository.

A prompt of exactly ``length`` tokens is::

    <filler ...> The pass key is #48213. Remember it. #48213 is the pass key. <filler ...>
    What is the pass key? The pass key is #48213

(the ``#`` marker gives the key one unambiguous preceding token: with the tiny recipe's 512-token BPE a bare
" 48213" starts with the same space token that follows every full stop of the filler)

where the filler is a fixed sentence cycle (``FILLER``), the needle starts at token ``needle_pos`` =
round(depth * (filler tokens)) (depth 0 = right at the start, 1 = just before the question), and the key is a
random 4-5 digit number. The model is scored on the key (the answer tokens, the leading space included):
**correct iff greedy decoding after "The pass key is" reproduces the answer tokens exactly**. This is computed
teacher-forced in one forward pass (argmax at every answer position equals the answer token <=> greedy
decoding emits the answer), so one compiled graph per (batch, length) serves all depths and trials.

Pieces are tokenized separately and concatenated as token ids, so the key's position is exact; the filler is cut
at a token boundary (byte-level BPE tokens of the filler are words, so the cut is a word boundary).

``passkey_documents`` writes training documents of the same form as text (``write_passkey_corpus`` -> a
``.jsonl`` usable in ``data.corpus``), which is how the tiny CPU demo makes retrieval learnable for a ~1M
parameter model trained on Shakespeare: its pretraining / extension data mix in such documents.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is #{key}. Remember it. #{key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
ANSWER = " #{key}"
REMINDER = "Remember #{key}. "
CHARS_PER_TOKEN = 1.9          # of FILLER under the tiny recipe's 512-token BPE (measured); used for doc sizing


@dataclass
class PasskeySample:
    ids: list            # prompt + answer, exactly ``length`` tokens
    key: str
    needle_pos: int      # token index where the needle sentence starts
    key_pos: int         # token index of the first key token inside the needle
    needle_len: int
    answer_start: int    # index of the first answer token (= length - len(answer))
    answer_len: int
    depth: float


def _random_key(rng) -> str:
    return str(int(rng.integers(1000, 100000)))          # 4 or 5 digits


def make_passkey_sample(tokenizer, length: int, depth: float, key: str | None = None, seed: int = 0,
                        filler: str = FILLER) -> PasskeySample:
    """Token ids of one passkey prompt + answer of exactly ``length`` tokens (see the module docstring)."""
    rng = np.random.default_rng(seed)
    key = key or _random_key(rng)
    needle = tokenizer.encode(NEEDLE.format(key=key))
    question = tokenizer.encode(QUESTION)
    answer = tokenizer.encode(ANSWER.format(key=key))
    n_fill = length - len(needle) - len(question) - len(answer)
    if n_fill < 0:
        raise ValueError(f"passkey: length {length} is shorter than needle + question + answer "
                         f"({length - n_fill} tokens)")
    unit = tokenizer.encode(filler)
    stream = (unit * (n_fill // max(len(unit), 1) + 2))[: n_fill]
    n_before = int(round(min(max(depth, 0.0), 1.0) * n_fill))
    ids = stream[:n_before] + needle + stream[n_before:] + question + answer
    key_tok = tokenizer.encode("#" + key)
    off = _find(needle, key_tok)
    assert len(ids) == length
    return PasskeySample(ids=[int(i) for i in ids], key=key, needle_pos=n_before,
                         key_pos=n_before + max(off, 0), needle_len=len(needle),
                         answer_start=length - len(answer), answer_len=len(answer), depth=float(depth))


def _find(seq, sub) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i: i + len(sub)] == sub:
            return i
    return -1


# -------------------------------------------------------------------------------------- training documents
def passkey_documents(n: int, min_tokens: int, max_tokens: int, seed: int = 0, filler: str = FILLER,
                      max_reminders: int = 4, far_fraction: float = 0.0, far_zone: float = 0.25) -> list[str]:
    """``n`` text documents of the passkey form with about ``min_tokens``..``max_tokens`` tokens each (sized
    with ``CHARS_PER_TOKEN``), random keys; deterministic in ``seed``.

    Needle depth: uniform over the filler, except in a ``far_fraction`` of the documents, whose needle lies in the
    first ``far_zone`` of the filler (far needles: with a uniform depth, needle-to-question distances near the
    document length are rare, and those are what a prompt with the needle at its start asks for).

    Training curriculum: besides the needle, a document repeats the key 0..``max_reminders`` more times
    (``REMINDER``) at random word boundaries of the filler, so that copying "the digits after the last #" is
    supervised densely and at variable distances (a fixed-offset positional head cannot solve it; an induction
    head can). Evaluation prompts (``make_passkey_sample``) contain the needle only.
    """
    if not 0.0 <= far_fraction <= 1.0 or not 0.0 < far_zone <= 1.0:
        raise ValueError(f"passkey_documents: far_fraction={far_fraction} must be in [0, 1] and "
                         f"far_zone={far_zone} in (0, 1]")
    rng = np.random.default_rng(seed)
    fixed = len(NEEDLE.format(key="12345")) + len(QUESTION) + len(ANSWER.format(key="12345")) + 2
    docs = []
    for _ in range(n):
        key = _random_key(rng)
        n_rem = int(rng.integers(0, max_reminders + 1))
        total = int(rng.integers(min_tokens, max_tokens + 1) * CHARS_PER_TOKEN)
        n_chars = max(total - fixed - n_rem * len(REMINDER.format(key=key)), 0)
        reps = filler * (n_chars // len(filler) + 2)
        start = int(rng.integers(0, len(filler)))
        start = reps.find(" ", start) + 1 if start else 0
        text = reps[start: start + n_chars]
        text = text[: text.rfind(" ") + 1] if " " in text else ""          # cut at a word boundary
        cuts = sorted(_word_cut(text, rng) for _ in range(n_rem + 1))       # the needle goes at the first
        if far_fraction > 0 and rng.random() < far_fraction:
            cuts[0] = min(cuts[0], _word_cut(text[: int(far_zone * len(text))], rng))
        pieces, prev = [], 0
        for j, c in enumerate(cuts):
            pieces.append(text[prev:c])
            pieces.append(NEEDLE.format(key=key) if j == 0 else REMINDER.format(key=key))
            prev = c
        pieces.append(text[prev:])
        docs.append("".join(pieces) + QUESTION + ANSWER.format(key=key) + ".\n")
    return docs


def _word_cut(text: str, rng) -> int:
    """A random cut position of ``text`` at a word boundary (0 or just after a space)."""
    if not text:
        return 0
    c = int(rng.integers(0, len(text) + 1))
    j = text.find(" ", c) if c else -1
    return j + 1 if j >= 0 else (0 if c == 0 else len(text))


def write_passkey_corpus(path: str, n: int, min_tokens: int, max_tokens: int, seed: int = 0,
                         max_reminders: int = 4, far_fraction: float = 0.0) -> str:
    """Write ``passkey_documents`` as a ``.jsonl`` corpus (field ``text``) usable in ``data.corpus``;
    ``max_reminders=0``: the needle is the key's only occurrence before the question."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for d in passkey_documents(n, min_tokens, max_tokens, seed, max_reminders=max_reminders,
                                   far_fraction=far_fraction):
            f.write(json.dumps({"text": d}) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ evaluation
def _logits_fn(net, graph: bool = True):
    import mindspore as ms

    def fn(ids):
        return net(ids)[0]
    return ms.jit(fn) if graph else fn


def evaluate_passkey(net, tokenizer, lengths, depths, trials: int = 10, seed: int = 0, graph: bool = True,
                     log=None) -> dict:
    """Accuracy (exact greedy match of the key) per (length, depth) and the mean log-probability of the answer.

    Returns ``{"lengths", "depths", "trials", "accuracy": [[acc per depth] per length], "logprob": [[...]],
    "mean_accuracy": {length: acc}}``.
    """
    from mindspore import Tensor
    fn = _logits_fn(net, graph)
    acc = np.zeros((len(lengths), len(depths)))
    lp = np.zeros((len(lengths), len(depths)))
    for li, length in enumerate(lengths):
        for di, depth in enumerate(depths):
            samples = [make_passkey_sample(tokenizer, length, depth, seed=hash((seed, length, di, t)) % (2 ** 31))
                       for t in range(trials)]
            ids = np.asarray([s.ids for s in samples], np.int32)
            logits = fn(Tensor(ids)).asnumpy().reshape(trials, length, -1).astype(np.float64)
            ok, lps = [], []
            for b, s in enumerate(samples):
                pos = np.arange(s.answer_start - 1, length - 1)        # positions predicting the answer tokens
                tgt = ids[b, s.answer_start:]
                lg = logits[b, pos]
                ok.append(bool(np.all(lg.argmax(-1) == tgt)))
                logz = lg.max(-1) + np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1))
                lps.append(float((lg[np.arange(len(tgt)), tgt] - logz).sum()))
            acc[li, di] = float(np.mean(ok))
            lp[li, di] = float(np.mean(lps))
            if log:
                log(f"[passkey] length {length} depth {depth:.2f}: accuracy {acc[li, di]:.2f}, "
                    f"answer log-prob {lp[li, di]:.2f}")
    return {"lengths": [int(x) for x in lengths], "depths": [float(d) for d in depths], "trials": trials,
            "accuracy": acc.tolist(), "logprob": lp.tolist(),
            "mean_accuracy": {int(L): float(acc[i].mean()) for i, L in enumerate(lengths)}}


def format_table(res: dict, title: str = "") -> str:
    """Markdown table: rows = lengths, columns = depths, cells = accuracy, plus the row mean."""
    depths = res["depths"]
    head = "| length | " + " | ".join(f"depth {d:.2f}" for d in depths) + " | mean |"
    sep = "|---:|" + "---:|" * (len(depths) + 1)
    rows = [f"| {L} | " + " | ".join(f"{a:.2f}" for a in accs) + f" | {np.mean(accs):.2f} |"
            for L, accs in zip(res["lengths"], res["accuracy"])]
    return "\n".join(([title] if title else []) + [head, sep] + rows)


def plot_heatmap(res: dict, path: str, title: str = "passkey retrieval accuracy") -> str:
    """PNG heat-map (lengths x depths) of the accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    acc = np.asarray(res["accuracy"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(res["depths"]), 1.0 + 0.6 * len(res["lengths"])))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(res["depths"])), [f"{d:.2f}" for d in res["depths"]])
    ax.set_yticks(range(len(res["lengths"])), [str(L) for L in res["lengths"]])
    ax.set_xlabel("needle depth")
    ax.set_ylabel("context length (tokens)")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heldout_loss(net, data_path: str, seq_len: int, vocab_size: int, corpus: str | None = None,
                 batch_size: int = 4, max_batches: int = 8, graph: bool = True) -> float:
    """Mean next-token LM loss of the model ``net`` on the validation split of prepared data packed at ``seq_len``
    (``corpus``: one corpus of the mixture, default all)."""
    import mindspore as ms
    from mindspore import Tensor

    from ..data import eval_batches, open_prepared
    splits = open_prepared(data_path, "valid", seq_len=seq_len, vocab_size=vocab_size)
    if corpus:
        splits = {corpus: splits[corpus]}

    from ..model.loss import CrossEntropy
    cross_entropy = CrossEntropy()

    def fn(x, y):
        return cross_entropy(net(x)[0], y.reshape(-1))        # the model's LM logits -> next-token CE
    f = ms.jit(fn) if graph else fn
    losses = []
    per = max(1, max_batches // len(splits))
    for split in splits.values():
        for b in eval_batches(split, batch_size, 0, 1, max_batches=per):
            losses.append(float(f(Tensor(b[:, :-1]), Tensor(b[:, 1:])).asnumpy()))
    return float(np.mean(losses)) if losses else math.nan
