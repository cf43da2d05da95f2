"""run/train.py refuses bad input before training, with one clear line naming the thing."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def train(tmp_path, *sets):
    args = [sys.executable, os.path.join(ROOT, "run/train.py"), "--config", os.path.join(ROOT, "yaml/tiny_cpu.yaml"),
            "--no-progress", "--set", f"train.output_dir={tmp_path / 'out'}"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.parametrize("sets, message", [
    (["train.seq_length=4096"], "train.seq_length: 4096 > model.max_position_embeddings=2048"),
    (["data.path=/nonexistent/prepared", "data.corpus="], "has no prepared data (meta.json) and data.corpus is empty"),
    (["data.path=__TMP__/p", "data.corpus=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    (["data.path=__TMP__/p", "data.corpus=klingon"], "klingon"),
    (["data.path=__TMP__/p", "data.corpus=shakespeare", "data.tokenizer=__TMP__/tok.json"], "tok.json"),
])
def test_bad_input_is_named_before_training(tmp_path, sets, message):
    sets = [s.replace("__TMP__", str(tmp_path)) for s in sets]
    r = train(tmp_path, *sets)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], r.stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n", encoding="utf-8")
    r = train(tmp_path, f"data.path={tmp_path / 'p'}", f"data.corpus={tmp_path / 'empty.txt'}")
    assert r.returncode == 2 and "empty" in r.stderr.lower(), r.stderr[-2000:]
