"""End-to-end preprocessing: outputs match the packing of the tokenized documents, determinism, the
train/valid split, mixtures written per corpus, and every bad-input error of the CLI."""
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pangu_ms.data.corpus import read_jsonl, read_txt
from pangu_ms.data.mindrecord_io import read_rows
from pangu_ms.data.packing import pack_documents, split_documents
from pangu_ms.data.preprocess import main, preprocess
from pangu_ms.data.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(progress=False, log=lambda *_: None)


def file_digests(root: Path):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_outputs_equal_packed_tokenized_documents(prepared, sample_txt, sample_jsonl):
    out, meta = prepared
    tok = load_tokenizer(out / meta["tokenizer"]["path"])
    assert meta["tokenizer"]["roundtrip_exact_on_sample"] and meta["vocab_size"] == tok.vocab_size == 300
    assert meta["seq_len"] == 8 and meta["row_len"] == 9
    for name, docs in (("plays", read_txt(sample_txt)), ("notes", read_jsonl(sample_jsonl))):
        train_idx, valid_idx = split_documents(len(docs), 0.2, seed=3)
        for split, idx in (("train", train_idx), ("valid", valid_idx)):
            expected = pack_documents([tok.encode(docs[i]) for i in idx], tok.eod_id, 8)
            ids, seg = read_rows(out / meta["corpora"][name]["splits"][split]["files"][0])
            np.testing.assert_array_equal(ids, expected.input_ids)
            np.testing.assert_array_equal(seg, expected.segment_ids)
            info = meta["corpora"][name]["splits"][split]
            assert info["rows"] == ids.shape[0] and info["tokens"] == ids.size
            assert info["documents"] == len(idx)
            # detokenizing the packed stream gives back the split's documents, EOD-separated
            text = tok.decode(ids.ravel().tolist())
            joined = "".join(docs[i] + "<|eos|>" for i in idx)
            assert joined.startswith(text)
        # the split is disjoint at document level and complete
        assert set(train_idx).isdisjoint(valid_idx) and len(train_idx) + len(valid_idx) == len(docs)
    # mixture bookkeeping and entropy = entropy of the weighted unigram mixture over training rows
    assert meta["mixture"]["weights"] == pytest.approx({"plays": 2 / 3, "notes": 1 / 3})
    rows = {n: read_rows(out / meta["corpora"][n]["splits"]["train"]["files"][0])[0] for n in ("plays", "notes")}
    p = sum(w * np.bincount(rows[n].ravel(), minlength=300) / rows[n].size
            for n, w in meta["mixture"]["weights"].items())
    expected_h = -sum(x * math.log(x) for x in p if x > 0)
    assert meta["unigram_entropy_nats"] == pytest.approx(expected_h)


def test_deterministic_files(tmp_path, sample_txt):
    args = dict(seq_len=16, vocab_size=280, valid_fraction=0.1, seed=7, num_shards=2, **QUIET)
    a = tmp_path / "run"
    preprocess([(str(sample_txt), 1.0)], a, **args)
    first = file_digests(a)
    preprocess([(str(sample_txt), 1.0)], a, **args)                 # same command, same output directory
    assert file_digests(a) == first
    assert {"plays/train/plays-train.mindrecord0", "plays/train/plays-train.mindrecord1", "meta.json", "tokenizer.json"} <= set(first)
    ids, _ = read_rows(a / "plays" / "train" / "plays-train.mindrecord1")              # any shard reads the whole split
    assert ids.shape[0] == json.loads((a / "meta.json").read_text())["rows"]["train"]
    b = tmp_path / "other"                                             # another directory: same bytes too
    preprocess([(str(sample_txt), 1.0)], b, **args)
    assert file_digests(b) == first


def test_given_tokenizer_is_copied_and_used(prepared, tmp_path, sample_txt):
    out, _ = prepared
    meta = preprocess([(str(sample_txt), 1.0)], tmp_path / "t", seq_len=8, tokenizer=str(out / "tokenizer.json"),
                      max_vocab=300, **QUIET)
    assert meta["tokenizer"]["trained"] is False and meta["vocab_size"] == 300
    assert (tmp_path / "t" / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("argv_tail, message", [
    (["--input", "{tmp}/missing.txt"], r"^error: input file not found: .*missing\.txt$"),
    (["--input", "{tmp}/empty.txt"], r"^error: corpus 'empty' is empty"),
    (["--corpus", "shakespear"], r"^error: unknown corpus 'shakespear' \(built-in: cantonese, shakespeare, wikipedia"),
    (["--input", "{txt}", "--tokenizer", "{tmp}/tok.bin"], r"^error: unknown tokenizer file type '\.bin'"),
    (["--input", "{txt}", "--tokenizer", "{tmp}/corrupt.json"], r"^error: cannot load tokenizer .*corrupt\.json"),
    (["--input", "{txt}", "--tokenizer", "{tmp}/absent.json"], r"^error: tokenizer file not found: .*absent\.json"),
    (["--input", "{txt}", "--seq-len", "1"], r"^error: --seq-len must be >= 2 \(got 1\)$"),
    (["--input", "{txt}", "--vocab-size", "1024", "--max-vocab", "512"],
     r"^error: --vocab-size 1024 is larger than --max-vocab 512$"),
    (["--input", "{txt}", "--tokenizer", "{tok}", "--max-vocab", "260"],
     r"^error: tokenizer .*tokenizer\.json has vocab size 300, larger than --max-vocab 260$"),
])
def test_cli_errors(capsys, tmp_path, prepared, sample_txt, argv_tail, message):
    import re
    (tmp_path / "empty.txt").write_text("\n\n  \n", encoding="utf-8")
    (tmp_path / "tok.bin").write_bytes(b"\x00")
    (tmp_path / "corrupt.json").write_text("{ this is not json")
    fill = {"tmp": str(tmp_path), "txt": str(sample_txt), "tok": str(prepared[0] / "tokenizer.json")}
    argv = [a.format(**fill) for a in argv_tail]
    if "--seq-len" not in argv:
        argv += ["--seq-len", "8"]
    out = tmp_path / "out"
    code, err = run_cli(capsys, *argv, "--out", str(out), "--quiet")
    assert code == 2
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists()                                           # failed before any work was done


def test_cli_help_runs_as_a_script():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--seq-len" in res.stdout and "--max-vocab" in res.stdout
