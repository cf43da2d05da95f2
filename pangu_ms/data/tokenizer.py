"""Tokenizers: train a byte-level BPE, or load a tokenizer.json / sentencepiece model.

All tokenizers are wrapped in :class:`TextTokenizer`, which exposes what the pipeline needs: ``encode``,
``encode_batch``, ``decode``, ``vocab_size`` and the ids of the special tokens (``eod_id`` is required,
``bos_id`` / ``pad_id`` are optional).

**Trained BPE** (:func:`train_bpe`, the default when no tokenizer is given): ``tokenizers`` BPE model with a
ByteLevel pre-tokenizer (GPT-2 regex split, no prefix space), **no normalizer**, a ByteLevel decoder, and
all 256 byte symbols in the initial alphabet.  Every string is therefore representable and
``decode(encode(text)) == text`` holds exactly for any Unicode text.  Special tokens, in id order:
``<|pad|>`` = 0, ``<|bos|>`` = 1, ``<|eos|>`` = 2 (the end-of-document token).  Special-token strings that
occur *inside* the text are tokenized as ordinary text (``encode_special_tokens``), so a document can
never inject an end-of-document token.  The smallest vocabulary is 256 + 3 = 259.

**Loaded tokenizer.json**: any ``tokenizers`` file (HuggingFace fast tokenizer).  The end-of-document token
is found by name (``<|eos|>``, ``<|endoftext|>``, ``</s>``, ``<eos>``, ``<|end_of_text|>``) unless given.
Encoding never adds special tokens (post-processors such as a Llama BOS are bypassed); the packer adds
the end-of-document token itself.  Round-trip exactness depends on that tokenizer's normalizer.

**Loaded sentencepiece ``.model``**: via the ``sentencepiece`` package (installed with mindformers).  The
end-of-document id is the model's ``eos_id``.  Sentencepiece normalises text (NFKC, whitespace), so the
round trip is in general *not* byte-exact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

from pangu_ms.data.errors import DataError

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
EOD_CANDIDATES = (EOS_TOKEN, "<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>")
BOS_CANDIDATES = (BOS_TOKEN, "<s>", "<bos>", "<|begin_of_text|>")
PAD_CANDIDATES = (PAD_TOKEN, "<pad>", "[PAD]")
MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)


class TextTokenizer:
    """Uniform wrapper around a ``tokenizers.Tokenizer`` or a ``sentencepiece.SentencePieceProcessor``."""

    def __init__(self, backend, kind: str, path: Optional[Path], eod_id: int,
                 bos_id: Optional[int] = None, pad_id: Optional[int] = None):
        self.backend = backend
        self.kind = kind                  # "tokenizers" | "sentencepiece"
        self.path = Path(path) if path is not None else None
        self.eod_id = int(eod_id)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.pad_id = None if pad_id is None else int(pad_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids (including special / added tokens); every id is < vocab_size."""
        if self.kind == "tokenizers":
            return int(self.backend.get_vocab_size(with_added_tokens=True))
        return int(self.backend.get_piece_size())

    def encode(self, text: str) -> List[int]:
        if self.kind == "tokenizers":
            return self.backend.encode(text, add_special_tokens=False).ids
        return list(self.backend.encode(text, out_type=int))

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self.kind == "tokenizers":
            return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        return [list(ids) for ids in self.backend.encode(list(texts), out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "tokenizers":
            return self.backend.decode(ids, skip_special_tokens=False)
        return self.backend.decode(ids)

    def special_ids(self) -> dict:
        return {"eod_id": self.eod_id, "bos_id": self.bos_id, "pad_id": self.pad_id}

    def save(self, out_dir: Path) -> Path:
        """Write the tokenizer into ``out_dir`` (tokenizer.json or tokenizer.model) and return the path.

        For a tokenizers backend a ``tokenizer_config.json`` is written as well, so that
        ``mindformers`` / ``transformers`` ``AutoTokenizer.from_pretrained(out_dir)`` load it offline.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "tokenizers":
            path = out_dir / "tokenizer.json"
            self.backend.save(str(path))
            vocab = self.backend.get_vocab(with_added_tokens=True)
            inverse = {v: k for k, v in vocab.items()}
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 30,
                      "eos_token": inverse.get(self.eod_id)}
            if self.bos_id is not None:
                config["bos_token"] = inverse.get(self.bos_id)
            if self.pad_id is not None:
                config["pad_token"] = inverse.get(self.pad_id)
            (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
            return path
        path = out_dir / "tokenizer.model"
        path.write_bytes(self.backend.serialized_model_proto())
        return path


def _find_token(vocab: dict, candidates: Sequence[str]) -> Optional[int]:
    for name in candidates:
        if name in vocab:
            return int(vocab[name])
    return None


def _wrap_tokenizers(tok, path: Optional[Path], eod_token: Optional[str]) -> TextTokenizer:
    vocab = tok.get_vocab(with_added_tokens=True)
    if eod_token is not None:
        if eod_token not in vocab:
            raise DataError(f"tokenizer {path}: end-of-document token '{eod_token}' is not in its vocabulary")
        eod_id = int(vocab[eod_token])
    else:
        eod_id = _find_token(vocab, EOD_CANDIDATES)
        if eod_id is None:
            raise DataError(f"tokenizer {path} has no end-of-document token (looked for "
                            f"{', '.join(EOD_CANDIDATES)}); name one with --eod-token")
    try:
        tok.encode_special_tokens = True       # special-token strings inside documents stay plain text
    except AttributeError:                     # tokenizers < 0.19
        pass
    return TextTokenizer(tok, "tokenizers", path, eod_id, _find_token(vocab, BOS_CANDIDATES),
                         _find_token(vocab, PAD_CANDIDATES))


def train_bpe(texts: Iterable[str], vocab_size: int, length: Optional[int] = None,
              special_tokens: Sequence[str] = SPECIAL_TOKENS, show_progress: bool = False) -> TextTokenizer:
    """Train a byte-level BPE on ``texts`` (see the module docstring); deterministic for the same input.

    ``special_tokens`` get ids 0, 1, 2, ... in order and must include ``<|eos|>`` (the end-of-document
    token).  ``vocab_size`` counts the 256 byte symbols and the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(special_tokens):
        raise DataError(f"--vocab-size {vocab_size} is too small for a byte-level BPE "
                        f"(needs >= 256 bytes + {len(special_tokens)} special tokens = {256 + len(special_tokens)})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return _wrap_tokenizers(tok, None, EOS_TOKEN if EOS_TOKEN in special_tokens else None)


def load_tokenizer(path: os.PathLike, eod_token: Optional[str] = None) -> TextTokenizer:
    """Load ``tokenizer.json`` (or a directory holding one) or a sentencepiece ``.model``.

    Raises DataError (one line, naming the file) if it is missing, of an unknown type, or unreadable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise DataError(f"tokenizer directory {path} holds neither tokenizer.json nor tokenizer.model")
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    if path.suffix == ".json":
        from tokenizers import Tokenizer
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot load tokenizer {path}: not a valid tokenizer.json ({reason})") from None
        return _wrap_tokenizers(tok, path, eod_token)
    if path.suffix == ".model":
        try:
            import sentencepiece
        except ImportError:
            raise DataError(f"cannot load tokenizer {path}: the 'sentencepiece' package is not installed") from None
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.Load(str(path))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot load tokenizer {path}: not a valid sentencepiece model ({reason})") from None
        if eod_token is not None:
            eod_id = sp.piece_to_id(eod_token)
            if eod_id == sp.unk_id() and eod_token != sp.id_to_piece(sp.unk_id()):
                raise DataError(f"tokenizer {path}: end-of-document token '{eod_token}' is not in its vocabulary")
        else:
            eod_id = sp.eos_id()
            if eod_id < 0:
                raise DataError(f"sentencepiece model {path} has no eos piece; name one with --eod-token")
        bos = sp.bos_id()
        pad = sp.pad_id()
        return TextTokenizer(sp, "sentencepiece", path, eod_id, bos if bos >= 0 else None, pad if pad >= 0 else None)
    raise DataError(f"unknown tokenizer file type '{path.suffix or path.name}': {path} "
                    f"(expected a tokenizer.json or a sentencepiece .model)")


def batched(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
