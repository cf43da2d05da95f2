"""The training loop feeds the packed rows' document boundaries to the step when ``train.reset_attention_mask`` /
``reset_position_ids`` are on: the first logged loss equals the loss Cell on the same batch with its segment and
position ids (a fresh model of the same seed), differs from the loss without them, and validation runs too."""
import json

import mindspore as ms
import numpy as np
from mindspore import Tensor

from pangu_ms.config import load_config
from pangu_ms.data.packing import document_positions
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train.loop import Trainer
from tests.conftest import tiny_overrides

DOCS = ["ROMEO: But soft, what light?", "JULIET: O Romeo.", "HAMLET: To be, or not to be.", "PUCK: Lord, what fools.",
        "LEAR: Nothing will come of nothing.", "OTHELLO: It is the cause, my soul."] * 12


def _cfg(tmp_path, reset: bool):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    flag = "true" if reset else "false"
    return load_config(None, tiny_overrides(**{
        "model.vocab_size": 300, "model.num_layers": 2, "model.mtp_depth": 1, "data.source": "mindrecord",
        "data.corpus": str(corpus), "data.path": str(tmp_path / "prepared"), "data.valid_fraction": 0.2,
        "train.reset_attention_mask": flag, "train.reset_position_ids": flag, "train.steps": 1,
        "train.log_interval": 1, "train.eval_interval": 1, "train.eval_batches": 1, "train.save_interval": 100,
        "train.sample_tokens": 0, "train.peak_flops": 1e10, "train.output_dir": str(tmp_path / f"run_{flag}")}))


def test_trainer_steps_with_document_boundaries(tmp_path):
    cfg = _cfg(tmp_path, reset=True)
    trainer = Trainer(cfg, progress=False)
    rows, segments = trainer.sampler.batch(0, 0, with_segments=True)
    assert len(np.unique(segments)) > 1                     # the batch really holds several documents
    inputs = trainer._inputs((rows, segments))
    np.testing.assert_array_equal(inputs[3].asnumpy(), segments[:, :-1])
    np.testing.assert_array_equal(inputs[4].asnumpy(), document_positions(segments[:, :-1]))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    loss_cell = CausalLMLoss(build_model(cfg), cfg.model.mtp_loss_weight)
    x, y = Tensor(rows[:, :-1]), Tensor(rows[:, 1:])
    want = float(loss_cell(x, y, None, Tensor(segments[:, :-1]), Tensor(document_positions(segments[:, :-1])))[0])
    across = float(loss_cell(x, y)[0])
    assert abs(want - across) > 1e-4
    trainer.train()
    with open(tmp_path / "run_true" / "metrics.jsonl", encoding="utf-8") as f:
        rows_logged = [json.loads(line) for line in f]
    first = next(r for r in rows_logged if "loss/total" in r)
    assert abs(first["loss/total"] - want) < 1e-5 * abs(want), (first["loss/total"], want, across)
    assert any(k.startswith("valid/") for r in rows_logged for k in r)
