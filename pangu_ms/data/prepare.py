"""Prepare a recipe's data on first use: when ``data.path`` does not hold a prepared directory and
``data.corpus`` is set, run the preprocessing pipeline (rank 0 only; the other ranks wait at a barrier)."""
from __future__ import annotations

import os

from .errors import DataError


def parse_corpus_spec(spec: str) -> list[tuple[str, float]]:
    """``"shakespeare:1.0,cantonese:0.2"`` -> [("shakespeare", 1.0), ("cantonese", 0.2)] (weight default 1)."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, w = item.rpartition(":") if item.rsplit(":", 1)[-1].replace(".", "", 1).isdigit() else \
            (item, "", "1")
        try:
            out.append((name, float(w)))
        except ValueError:
            raise DataError(f"data.corpus: bad weight in '{item}'") from None
    if not out:
        raise DataError("data.corpus: empty")
    return out


def ensure_prepared(cfg, is_main: bool = True, barrier=lambda: None) -> str:
    d = cfg.data
    path = os.path.abspath(d.path)
    if os.path.isfile(os.path.join(path, "meta.json")):
        return path
    if not d.corpus:
        raise DataError(f"data.path: {path} has no prepared data (meta.json) and data.corpus is empty; "
                        f"run tools/preprocess_data.py or set data.corpus")
    if is_main:
        from .preprocess import preprocess
        print(f"[pangu_ms] preparing {d.corpus} into {path} (vocab {cfg.model.vocab_size}, "
              f"seq_len {cfg.train.seq_length})", flush=True)
        preprocess(parse_corpus_spec(d.corpus), path, cfg.train.seq_length, vocab_size=cfg.model.vocab_size,
                   tokenizer=d.tokenizer or None, valid_fraction=d.valid_fraction, seed=cfg.train.seed,
                   max_vocab=cfg.model.vocab_size, max_docs=d.max_docs or None)
    barrier()
    return path
