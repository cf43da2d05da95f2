"""Rollouts with the KV cache: G completions per prompt, temperature / top-p, max new tokens, stop token.

All sequences of a rollout batch advance in lock-step, one position per jitted decode step
(:class:`pangu_ms.model.decode.IncrementalDecoder`, MLA compressed cache): at step t every row feeds its token at
position t, which is its prompt token while t < len(prompt) and its last sampled token after; the logits then
give the token at t + 1, which is sampled for rows whose prompt is complete. Rows stop at the stop token or after
``max_new_tokens``; the loop ends when every row has stopped. The batch size and the cache length are fixed, so
one compiled graph serves every call (short batches are padded with dummy rows).

Sampling is on the host in float64: logits / temperature -> softmax -> top-p nucleus (the smallest set of most
likely tokens whose mass reaches p) -> inverse-CDF draw with the given ``numpy`` Generator; temperature 0 is
greedy. The returned log-probs are those of the sampling distribution (for logging; the trainer recomputes the
old policy's log-probs with the training graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..model.decode import IncrementalDecoder


@dataclass
class Rollout:
    prompt: list          # prompt token ids
    tokens: list          # generated ids (stop token included if generated)
    stopped: bool
    logprobs: list        # sampling log-prob of each generated token


def sample_next(logits: np.ndarray, temperature: float, top_p: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """logits [B, V] -> (token ids [B], log-probs under the sampling distribution [B])."""
    x = np.asarray(logits, np.float64)
    if temperature <= 0:
        ids = x.argmax(-1)
        return ids, np.zeros(len(ids))
    x = x / temperature
    x = x - x.max(-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sp = np.take_along_axis(p, order, -1)
        before = np.cumsum(sp, -1) - sp                      # mass of strictly more likely tokens
        keep_sorted = before < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(-1, keepdims=True)
    u = rng.random(len(p))
    cdf = np.cumsum(p, -1)
    ids = np.minimum((cdf < u[:, None]).sum(-1), p.shape[-1] - 1)
    return ids, np.log(p[np.arange(len(p)), ids])


class RolloutSampler:
    def __init__(self, net, batch: int, max_len: int, graph: bool = True):
        self.decoder = IncrementalDecoder(net, max_len)
        self.batch = batch
        self.max_len = max_len
        self.step = ms.jit(self.decoder.construct) if graph else self.decoder
        self.tokens_generated = 0

    def generate(self, prompts: list, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 stop_id: int | None = None, rng=None) -> list[Rollout]:
        """One completion per prompt (repeat a prompt G times for a group)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        out = []
        for i in range(0, len(prompts), self.batch):
            out += self._generate_batch(prompts[i: i + self.batch], max_new_tokens, temperature, top_p, stop_id,
                                        rng)
        return out

    def _generate_batch(self, prompts, max_new, temperature, top_p, stop_id, rng):
        n = len(prompts)
        rows = list(prompts) + [prompts[0]] * (self.batch - n)
        lens = np.array([len(p) for p in rows])
        if lens.min() < 1 or lens.max() + max_new > self.max_len:
            raise ValueError(f"prompt of {lens.max()} tokens + {max_new} new tokens exceeds the cache length "
                             f"{self.max_len}")
        seq = np.zeros((self.batch, self.max_len), np.int32)
        for r, p in enumerate(rows):
            seq[r, :len(p)] = p
        gen = [[] for _ in range(self.batch)]
        lps = [[] for _ in range(self.batch)]
        done = np.zeros(self.batch, bool)
        done[n:] = True
        stopped = np.zeros(self.batch, bool)
        caches = self.decoder.init_caches(self.batch)
        t = 0
        while not done.all() and t + 1 < self.max_len:
            # ms.mutable: a plain tuple argument is a compile-time constant to ms.jit (recompiles every step)
            logits, caches = self.step(Tensor(seq[:, t]), Tensor(np.array([t], np.int32)), ms.mutable(caches))
            active = (~done) & (t + 1 >= lens)
            if active.any():
                ids, lp = sample_next(logits.asnumpy(), temperature, top_p, rng)
                for r in np.nonzero(active)[0]:
                    tok = int(ids[r])
                    seq[r, t + 1] = tok
                    gen[r].append(tok)
                    lps[r].append(float(lp[r]))
                    if stop_id is not None and tok == stop_id:
                        done[r] = stopped[r] = True
                    elif len(gen[r]) >= max_new:
                        done[r] = True
            t += 1
        self.tokens_generated += sum(len(g) for g in gen[:n])
        return [Rollout(list(rows[r]), gen[r], bool(stopped[r]), lps[r]) for r in range(n)]
