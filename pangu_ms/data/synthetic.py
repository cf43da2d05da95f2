"""Synthetic token batches (no files): a Zipf-distributed first-order Markov chain, a pure function of
(seed, step, rank) like the prepared-data sampler, so training on it is resumable and DP-sharded the same way.

Each token is drawn from a Zipf(1.1) distribution over the vocabulary, shifted by the previous token
(t_i = (t_{i-1} * 31 + z_i) mod V with probability 0.7, else z_i), which gives the model something learnable.
"""
from __future__ import annotations

import numpy as np


class SyntheticSampler:
    def __init__(self, vocab_size: int, seq_len: int, global_batch_size: int, dp_rank: int = 0, dp_size: int = 1,
                 seed: int = 0, micro_batch_size: int | None = None):
        self.v, self.s, self.g = vocab_size, seq_len, global_batch_size
        self.dp_rank, self.dp_size, self.seed = dp_rank, dp_size, seed
        per_rank = global_batch_size // dp_size
        self.micro_batch_size = micro_batch_size or per_rank
        self.accumulation_steps = per_rank // self.micro_batch_size
        ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
        p = ranks ** -1.1
        self.p = p / p.sum()

    def _rows(self, key, n):
        rng = np.random.default_rng(key)
        z = rng.choice(self.v, size=(n, self.s + 1), p=self.p)
        keep = rng.random((n, self.s + 1)) < 0.7
        out = z.copy()
        for i in range(1, self.s + 1):
            out[:, i] = np.where(keep[:, i], (out[:, i - 1] * 31 + z[:, i]) % self.v, z[:, i])
        return out.astype(np.int32)

    def global_batch(self, step: int) -> np.ndarray:
        return self._rows([self.seed, 0x5359, step], self.g)

    def batch(self, step: int, micro: int = 0) -> np.ndarray:
        per_rank = self.g // self.dp_size
        start = self.dp_rank * per_rank + micro * self.micro_batch_size
        return self.global_batch(step)[start:start + self.micro_batch_size]

    def valid_batches(self, batch_size: int, n_batches: int):
        for b in range(n_batches):
            rows = self._rows([self.seed, 0x5641, b], batch_size * self.dp_size)
            yield rows[self.dp_rank * batch_size:(self.dp_rank + 1) * batch_size]
