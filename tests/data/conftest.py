"""Fixtures for the data-pipeline tests: a small text corpus in a temp dir, and a prepared dataset."""
import json

import pytest

# A small corpus: blank-line separated documents with ASCII, punctuation, tabs, CRLF-free newlines,
# accented letters, CJK and an emoji, and a literal special-token string that must stay plain text.
SAMPLE_DOCS = [
    "HAMLET:\nTo be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "OPHELIA:\nGood my lord,\nHow does your honour for this many a day?",
    "[Enter Ghost]\nMARCELLUS:\nPeace, break thee off; look, where it comes again!",
    "Café déjà vu -- naïve façade; 粵語書面語 好好食 😀\ttabbed   spaced",
    "A line with <|eos|> inside it is still one document.",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.",
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;",
    "MACBETH:\nTomorrow, and tomorrow, and tomorrow,\nCreeps in this petty pace from day to day,",
    "PUCK:\nIf we shadows have offended,\nThink but this, and all is mended,",
    "PROSPERO:\nWe are such stuff\nAs dreams are made on, and our little life\nIs rounded with a sleep.",
]


@pytest.fixture(scope="session")
def sample_docs():
    return list(SAMPLE_DOCS)


@pytest.fixture(scope="session")
def sample_txt(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text("\n\n".join(SAMPLE_DOCS * 4) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sample_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "notes.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"id": i, "text": f"Note {i}: the quick brown fox jumps over {i} lazy dogs."}) + "\n")
    return path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, sample_txt, sample_jsonl):
    """A prepared two-corpus dataset (seq_len 8, vocab 300) written by the real pipeline."""
    from pangu_ms.data.preprocess import preprocess

    out = tmp_path_factory.mktemp("prepared") / "mix"
    meta = preprocess([(str(sample_txt), 1.0), (str(sample_jsonl), 0.5)], out, seq_len=8, vocab_size=300,
                      valid_fraction=0.2, seed=3, progress=False, log=lambda *_: None)
    return out, meta
