"""Sampling from the causal LM without a KV cache: every new token re-runs the model over a fixed window of the
last ``window`` tokens (right-padded, so one compiled graph serves every length), temperature + top-k."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor


def sample_tokens(net, prompt_ids, n_tokens: int, window: int, temperature: float = 0.8, top_k: int = 20,
                  seed: int = 0, graph: bool = True) -> list[int]:
    rng = np.random.default_rng(seed)

    def logits_fn(ids):
        return net(ids)[0]
    fn = ms.jit(logits_fn) if graph else logits_fn
    ids = list(int(i) for i in prompt_ids)
    for _ in range(n_tokens):
        ctx = ids[-window:]
        buf = np.zeros((1, window), np.int32)
        buf[0, :len(ctx)] = ctx
        logits = fn(Tensor(buf)).asnumpy()[len(ctx) - 1].astype(np.float64)
        if temperature <= 0:
            ids.append(int(logits.argmax()))
            continue
        logits = logits / temperature
        if 0 < top_k < logits.size:
            cut = np.partition(logits, -top_k)[-top_k]
            logits = np.where(logits < cut, -np.inf, logits)
        p = np.exp(logits - logits.max())
        ids.append(int(rng.choice(p.size, p=p / p.sum())))
    return ids
