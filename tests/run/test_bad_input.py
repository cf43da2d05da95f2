"""Every bad input to a command-line entry gets ONE ``error:`` line naming the file / key / value, exit status 2,
no traceback, and nothing trained (checked by running the CLIs as a user would, in a subprocess)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TINY = os.path.join(ROOT, "yaml/tiny_cpu.yaml")

# name -> bytes, written into the test's tmp dir before each case
FILES = {
    "syntax.yaml": b"train:\n  steps: [1\n",
    "list.yaml": b"- model\n- train\n",
    "latin1.yaml": b"train:\n  output_dir: caf\xe9\n",
    "empty.yaml": b"",
    "dup.yaml": b"train:\n  steps: 3\ntrain:\n  lr: 1.0\n",
    "nobase.yaml": b"base: missing_parent.yaml\n",
    "cycle_a.yaml": b"base: cycle_b.yaml\n",
    "cycle_b.yaml": b"base: cycle_a.yaml\n",
    "latin1.txt": b"first document caf\xe9\n\nsecond document\n\nthird document\n",
    "three_docs.txt": b"first document\n\nsecond document\n\nthird document\n",
    "a_file": b"not a directory\n",
    "run_bad/metrics.jsonl": b'{"step": 1, "loss/total": 2.0}\n{not json\n',
    "run_ok/metrics.jsonl": b'{"step": 1, "loss/total": 2.0}\n',
}

TRAIN, SIM, PLAN, STATS, PREP, PLOT = (os.path.join(ROOT, p) for p in (
    "run/train.py", "tools/simulate.py", "tools/show_plan.py", "tools/model_stats.py", "tools/preprocess_data.py",
    "tools/plot_run.py"))

# (command line with {tmp}/{tiny} placeholders, text the one error line must contain)
CASES = {
    # recipe files
    "yaml_syntax": ([TRAIN, "--config", "{tmp}/syntax.yaml"], "syntax.yaml: not valid YAML (line 3"),
    "top_level_list": ([TRAIN, "--config", "{tmp}/list.yaml"], "list.yaml: top level must be a mapping"),
    "config_not_utf8": ([TRAIN, "--config", "{tmp}/latin1.yaml"], "latin1.yaml: not a UTF-8 text file"),
    "empty_yaml": ([TRAIN, "--config", "{tmp}/empty.yaml"], "empty.yaml: empty recipe"),
    "duplicate_key": ([TRAIN, "--config", "{tmp}/dup.yaml"], "dup.yaml: not valid YAML (line 3, column 1): "
                                                             "duplicate key 'train'"),
    "config_missing": ([TRAIN, "--config", "{tmp}/nonexistent.yaml"], "config file not found: {tmp}/nonexistent"),
    "base_missing": ([TRAIN, "--config", "{tmp}/nobase.yaml"], "base: file not found: {tmp}/missing_parent.yaml"),
    "base_cycle": ([TRAIN, "--config", "{tmp}/cycle_a.yaml"], "circular 'base:' chain {tmp}/cycle_a.yaml -> "
                                                              "{tmp}/cycle_b.yaml -> {tmp}/cycle_a.yaml"),
    # --set and values
    "set_without_equals": ([TRAIN, "--config", "{tiny}", "--set", "train.steps"], "override 'train.steps' must"),
    "set_bad_yaml_value": ([TRAIN, "--config", "{tiny}", "--set", "train.steps=[1"], "train.steps: cannot parse"),
    "unknown_key": ([TRAIN, "--config", "{tiny}", "--set", "train.stepz=3"], "train.stepz: unknown key"),
    "unknown_section": ([TRAIN, "--config", "{tiny}", "--set", "trian.steps=3"], "trian: unknown key"),
    "wrong_type_int": ([TRAIN, "--config", "{tiny}", "--set", "train.steps=abc"], "train.steps: expected an integer"),
    "wrong_type_bool": ([TRAIN, "--config", "{tiny}", "--set", "train.resume=maybe"], "train.resume: expected true"),
    "section_not_mapping": ([TRAIN, "--config", "{tiny}", "--set", "train=3"], "train: expected a mapping"),
    "unknown_stage": ([TRAIN, "--config", "{tiny}", "--set", "stage.name=finetune"], "stage.name: 'finetune' is not"),
    "lr_nan": ([TRAIN, "--config", "{tiny}", "--set", "train.lr=nan"], "train.lr: must be a finite number, got nan"),
    "lr_inf": ([TRAIN, "--config", "{tiny}", "--set", "train.lr=.inf"], "train.lr: must be a finite number, got inf"),
    "min_lr_nan": ([TRAIN, "--config", "{tiny}", "--set", "train.min_lr=.nan"], "train.min_lr: must be a finite"),
    "grad_clip_inf": ([TRAIN, "--config", "{tiny}", "--set", "train.grad_clip=inf"], "train.grad_clip: must be a fin"),
    "sim_float_nan": ([TRAIN, "--config", "{tiny}", "--set", "sim.expert_imbalance=nan"],
                      "sim.expert_imbalance: must be a finite"),
    "phase_lr_nan": ([TRAIN, "--config", "{tiny}", "--set", "train.phases=[{{steps: 1200, lr: .nan}}]"],
                     "train.phases[0].lr: must be a finite"),
    "zero_steps": ([TRAIN, "--config", "{tiny}", "--set", "train.steps=0"], "train.steps: must be a finite number > 0, got 0"),
    "negative_seq_length": ([TRAIN, "--config", "{tiny}", "--set", "train.seq_length=-1"], "train.seq_length: must"),
    "zero_vocab": ([TRAIN, "--config", "{tiny}", "--set", "model.vocab_size=0"], "model.vocab_size: must be a finite number > 0"),
    "zero_dp": ([TRAIN, "--config", "{tiny}", "--set", "parallel.dp=0"], "parallel.dp: must be a finite number > 0"),
    "zero_adam_eps": ([TRAIN, "--config", "{tiny}", "--set", "train.adam_eps=0"], "train.adam_eps: must be a finite number > 0"),
    "negative_seed": ([TRAIN, "--config", "{tiny}", "--set", "train.seed=-1"], "train.seed: must be in [0, 2**32)"),
    "negative_eval_batches": ([TRAIN, "--config", "{tiny}", "--set", "train.eval_batches=-1"],
                              "train.eval_batches: must be a finite number >= 0"),
    "negative_bias_rate": ([TRAIN, "--config", "{tiny}", "--set", "moe.expert_bias_update_rate=-0.1"],
                           "moe.expert_bias_update_rate: must be a finite number >= 0"),
    "zero_embedding_std": ([TRAIN, "--config", "{tiny}", "--set", "model.embedding_init_std=0"],
                           "model.embedding_init_std: must be a finite number > 0"),
    "negative_max_docs": ([TRAIN, "--config", "{tiny}", "--set", "data.max_docs=-1"], "data.max_docs: must be a finite number >= 0"),
    "stop_after_zero": ([TRAIN, "--config", "{tiny}", "--stop-after", "0"], "--stop-after: must be >= 1, got 0"),
    "output_dir_under_file": ([TRAIN, "--config", "{tiny}", "--set", "train.output_dir={tmp}/a_file/run"],
                              "train.output_dir: cannot create {tmp}/a_file/run: Not a directory"),
    # data
    "corpus_not_utf8": ([TRAIN, "--config", "{tiny}", "--set", "train.output_dir={tmp}/out", "--set",
                         "data.path={tmp}/prepared", "--set", "data.corpus={tmp}/latin1.txt"],
                        "latin1.txt: not UTF-8 text (line 1, byte offset 18"),
    "preprocess_not_utf8": ([PREP, "--input", "{tmp}/latin1.txt", "--out", "{tmp}/p", "--seq-len", "8"],
                            "latin1.txt: not UTF-8 text"),
    "preprocess_out_under_file": ([PREP, "--input", "{tmp}/three_docs.txt", "--out", "{tmp}/a_file/p", "--seq-len",
                                   "8"], "cannot create output directory {tmp}/a_file/p"),
    # tools
    "simulate_devices_zero": ([SIM, "estimate", "--config", "{tiny}", "--devices", "0"], "--devices: must be >= 1"),
    "simulate_search_workers_zero": ([SIM, "search", "--config", "{tiny}", "--devices", "8", "--workers", "0"],
                                     "--workers: must be >= 1, got 0"),
    "simulate_yaml_syntax": ([SIM, "estimate", "--config", "{tmp}/syntax.yaml"], "syntax.yaml: not valid YAML"),
    "simulate_hardware_not_utf8": ([SIM, "estimate", "--config", "{tiny}", "--hardware", "{tmp}/latin1.yaml"],
                                   "latin1.yaml: not a UTF-8 text file"),
    "simulate_hardware_unknown": ([SIM, "estimate", "--config", "{tiny}", "--hardware", "tpu9"],
                                  "sim.hardware: unknown profile 'tpu9'"),
    "calibrate_run_without_config": ([SIM, "calibrate", "--from-runs", "{tmp}/run_ok", "--out", "{tmp}/fit.yaml"],
                                     "--from-runs: {tmp}/run_ok/config.yaml is missing"),
    "calibrate_csv_missing": ([SIM, "calibrate", "--from-runs", "{tmp}/runs.csv", "--out", "{tmp}/fit.yaml"],
                              "--from-runs: {tmp}/runs.csv: no such file or directory"),
    "simulate_bad_fraction": ([SIM, "estimate", "--config", "{tiny}", "--set", "sim.recompute_fraction=2"],
                              "sim.recompute_fraction: must be in [0, 1], got 2.0"),
    "show_plan_yaml_list": ([PLAN, "--config", "{tmp}/list.yaml"], "list.yaml: top level must be a mapping"),
    "show_plan_rank_out_of_range": ([PLAN, "--config", "{tiny}", "--rank", "99"], "--rank: 99 is out of range"),
    "model_stats_seq_length": ([STATS, "--config", "{tiny}", "--seq-length", "0"], "--seq-length: must be >= 1"),
    "model_stats_lr_inf": ([STATS, "--config", "{tiny}", "--set", "train.lr=inf"], "train.lr: must be a finite"),
    "plot_run_bad_json": ([PLOT, "{tmp}/run_bad"], "run_bad/metrics.jsonl:2: not valid JSON"),
    "plot_run_out_under_file": ([PLOT, "{tmp}/run_ok", "--out", "{tmp}/a_file/curves.png"],
                                "--out: directory of {tmp}/a_file/curves.png does not exist"),
}


def run_cli(tmp_path, argv):
    for name, data in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    argv = [a.format(tmp=tmp_path, tiny=TINY) for a in argv]
    return subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def assert_one_error(r, needle):
    out = r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert len(errors) == 1, out[-3000:]
    assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_error_line(tmp_path, case):
    argv, needle = CASES[case]
    assert_one_error(run_cli(tmp_path, argv), needle.format(tmp=tmp_path))
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not (tmp_path / "output").exists()       # the recipe's default output_dir was not used either


def test_token_ids_are_checked_against_the_vocab(tmp_path):
    """meta.json claims vocab 64 but the packed ids go up to ~300: the ids themselves are checked at load time."""
    from pangu_ms.data.preprocess import preprocess
    docs = "\n\n".join(f"document {i}: the quick brown fox jumps over {i} lazy dogs" for i in range(40))
    (tmp_path / "docs.txt").write_text(docs, encoding="utf-8")
    prepared = tmp_path / "prepared"
    preprocess([(str(tmp_path / "docs.txt"), 1.0)], prepared, seq_len=8, vocab_size=300, valid_fraction=0.2,
               seed=3, progress=False, log=lambda *_: None)
    meta = json.loads((prepared / "meta.json").read_text())
    meta["vocab_size"] = 64
    (prepared / "meta.json").write_text(json.dumps(meta))
    r = run_cli(tmp_path, [TRAIN, "--config", TINY, "--no-progress", "--set", f"train.output_dir={tmp_path}/out",
                           "--set", "data.source=mindrecord", "--set", f"data.path={prepared}", "--set",
                           "data.corpus=", "--set", "model.vocab_size=64", "--set", "train.seq_length=8"])
    line = assert_one_error(r, "outside [0, model.vocab_size=64)")
    assert str(prepared) in line and ".mindrecord" in line
    assert not (tmp_path / "out" / "checkpoints").exists()
