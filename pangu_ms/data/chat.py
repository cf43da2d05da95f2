"""Chat template and SFT rows: jsonl ``{"prompt", "response"}`` -> packed token rows + loss mask.

Template (plain-text markers, so any byte-level tokenizer works; only bos/eos are special ids):

    <|bos|> "Q:" prompt "\\nA:"  |  response <|eos|>
    `-------- prompt part ------'   `-- response part (loss) --'

The prompt part and the response part are encoded separately (the same split the RL rollouts use: the policy
continues the encoded prompt), so the loss mask is exact at token level: 1 on the response tokens and the eos
token, 0 on bos, the prompt and padding. ``render_prompt`` / ``encode_prompt`` are shared with the RL stage.

Packing: examples are laid end to end into rows of ``seq_len + 1`` tokens; an example never straddles two rows
(the rest of a row is ``pad`` with mask 0; an example longer than a row is truncated). As in pretraining, the
causal attention of a packed row is not reset between examples (each starts with bos). With ``labels =
row[1:]`` the label mask is ``mask[1:]``.
"""
from __future__ import annotations

import numpy as np

PROMPT_PREFIX = "Q:"
PROMPT_SUFFIX = "\nA:"


def render_prompt(prompt: str) -> str:
    return f"{PROMPT_PREFIX}{prompt}{PROMPT_SUFFIX}"


def _bos(tok) -> list[int]:
    return [tok.bos_id] if tok.bos_id is not None else []


def encode_prompt(tok, prompt: str) -> list[int]:
    return _bos(tok) + list(tok.encode(render_prompt(prompt)))


def encode_example(tok, prompt: str, response: str):
    """(ids, mask): mask 1 on the response tokens and the final eos."""
    p = encode_prompt(tok, prompt)
    r = list(tok.encode(response)) + [tok.eod_id]
    return p + r, [0] * len(p) + [1] * len(r)


def pack_examples(examples, seq_len: int, pad_id: int = 0, pack: bool = True):
    """examples: iterable of (ids, mask) -> (rows int32 [N, seq_len + 1], token mask int32 [N, seq_len + 1])."""
    width = seq_len + 1
    rows, masks = [], []
    cur, cur_m = [], []

    def flush():
        if cur:
            rows.append(cur + [pad_id] * (width - len(cur)))
            masks.append(cur_m + [0] * (width - len(cur_m)))

    for ids, m in examples:
        ids, m = list(ids)[:width], list(m)[:width]
        if not pack or len(cur) + len(ids) > width:
            flush()
            cur, cur_m = [], []
        cur, cur_m = cur + ids, cur_m + m
    flush()
    if not rows:
        return np.zeros((0, width), np.int32), np.zeros((0, width), np.int32)
    return np.asarray(rows, np.int32), np.asarray(masks, np.int32)


def build_sft_rows(tok, records, seq_len: int, pack: bool = True):
    """jsonl records -> packed (rows, token mask); records need ``prompt`` and ``response``."""
    examples = [encode_example(tok, str(r["prompt"]), str(r["response"])) for r in records]
    pad = tok.pad_id if tok.pad_id is not None else tok.eod_id
    return pack_examples(examples, seq_len, pad, pack)


class SFTSampler:
    """Deterministic, resumable batches of packed SFT rows: step i, micro j -> (ids [mbs, S+1], mask [mbs, S]).

    Rows are visited in a fresh ``default_rng(seed + epoch)`` permutation per epoch; the batch of a step depends
    only on (seed, step, micro), so a resumed run sees the same data as an uninterrupted one.
    """

    def __init__(self, rows, mask, global_batch: int, micro_batch: int, seed: int):
        if len(rows) == 0:
            raise ValueError("SFT data produced no rows")
        self.rows, self.mask = rows, mask
        self.global_batch, self.micro_batch_size = global_batch, micro_batch
        self.accumulation_steps = max(1, global_batch // micro_batch)
        self.seed = seed
        self._perm = {}

    def _perm_of(self, epoch: int):
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng(self.seed + epoch).permutation(len(self.rows))}
        return self._perm[epoch]

    def batch(self, step: int, micro: int):
        n = len(self.rows)
        start = step * self.global_batch + micro * self.micro_batch_size
        idx = []
        for k in range(start, start + self.micro_batch_size):
            idx.append(self._perm_of(k // n)[k % n])
        idx = np.asarray(idx)
        return self.rows[idx], self.mask[idx][:, 1:]
