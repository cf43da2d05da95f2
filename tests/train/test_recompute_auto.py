"""train.recompute: auto picks the first granularity of AUTO_ORDER whose predicted peak (the simulator's memory
model of the reference path) fits train.memory_budget_gb; a budget none fits is one error naming the key and the
smallest prediction, before anything compiles; the trainer builds the chosen granularity and logs the choice and
the measured peak beside the predicted one."""
import os

import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.config.recompute import AUTO_ORDER
from pangu_ms.sim.recompute_choice import choose_recompute, predicted_peak
from tests.conftest import tiny_overrides

GB = 1e9


def _cfg(budget, **extra):
    return load_config(None, tiny_overrides(**{"train.recompute": "auto", "train.memory_budget_gb": budget,
                                               **extra}))


def _predictions():
    cfg = _cfg(1.0)
    return {rc: predicted_peak(cfg, rc, 1)["total"] for rc in AUTO_ORDER}


def test_the_first_granularity_that_fits_is_chosen():
    pred = _predictions()
    assert pred["none"] > pred["selective"] > pred["moe_fine"]                   # recompute lowers the model
    assert choose_recompute(_cfg(2 * pred["none"] / GB), 1)[0] == "none"
    between = (pred["none"] + pred["selective"]) / 2 / GB
    choice, tried = choose_recompute(_cfg(between), 1)
    assert choice == "selective" and [rc for rc, _ in tried] == ["none", "selective"]
    assert choose_recompute(_cfg(pred["moe_fine"] / GB), 1)[0] == "moe_fine"


def test_a_budget_no_granularity_meets_is_one_error():
    pred = _predictions()
    smallest = min(pred, key=pred.get)
    with pytest.raises(ConfigError, match=r"train.memory_budget_gb: .* below the smallest predicted peak, "
                                          rf"{pred[smallest] / GB:.3g} GB with train.recompute={smallest}"):
        choose_recompute(_cfg(pred[smallest] / GB / 2), 1)


def test_trainer_builds_and_logs_the_choice(tmp_path):
    from pangu_ms.parallel.runtime import Runtime
    from pangu_ms.train.loop import Trainer
    pred = _predictions()
    between = (pred["none"] + pred["selective"]) / 2 / GB
    cfg = _cfg(between, **{"train.steps": 1, "train.output_dir": str(tmp_path / "run"), "data.source": "synthetic",
                           "train.peak_flops": 1e10, "train.sample_tokens": 0})
    trainer = Trainer(cfg, runtime=Runtime.single_process(), progress=False)
    assert trainer.cfg.train.recompute == "selective"
    assert trainer.net.recompute_label == "selective"
    assert trainer.net.layers[0].input_norm._has_config_recompute                # the Cells are really marked
    trainer.train()
    log = open(os.path.join(tmp_path, "run", "train.log")).read()
    assert "recompute auto: selective (predicted peak" in log
    assert "recompute auto: measured peak" in log and "predicted" in log
