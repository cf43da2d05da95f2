"""SFT: chat template + packing + loss mask (only response tokens count), and one SFT step on a tiny config."""
import json
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor

from pangu_ms.data.chat import SFTSampler, build_sft_rows, encode_example, encode_prompt, pack_examples
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.rl.tasks import train_digit_tokenizer

RECORDS = [{"prompt": "12+7=", "response": "19"}, {"prompt": "3-3=", "response": "0"},
           {"prompt": "99+9=", "response": "108"}, {"prompt": "5+0=", "response": "5"}]


def tokenizer():
    return train_digit_tokenizer([f"Q:{r['prompt']}\nA:{r['response']}" for r in RECORDS] * 3, 300)


def test_template_and_mask_cover_only_the_response():
    tok = tokenizer()
    ids, mask = encode_example(tok, "12+7=", "19")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eod_id
    assert ids[: len(encode_prompt(tok, "12+7="))] == encode_prompt(tok, "12+7=")
    assert tok.decode([i for i, m in zip(ids, mask) if m][:-1]) == "19"
    assert sum(mask) == len(tok.encode("19")) + 1
    rows, tmask = build_sft_rows(tok, RECORDS, 24)
    assert rows.shape[1] == 25 and rows.shape == tmask.shape
    # every response (+ eos) is in the mask, nothing else is
    assert tmask.sum() == sum(len(tok.encode(r["response"])) + 1 for r in RECORDS)
    got = tok.decode([int(t) for t, m in zip(rows.reshape(-1), tmask.reshape(-1)) if m and t != tok.eod_id])
    assert got == "".join(r["response"] for r in RECORDS)
    # packing never splits an example; no packing = one example per row
    r1, _ = pack_examples([([1, 2, 3], [0, 1, 1])] * 3, 6)
    assert r1.tolist() == [[1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 0, 0]]
    r2, m2 = pack_examples([([1, 2, 3], [0, 1, 1])] * 2, 6, pack=False)
    assert r2.shape == (2, 7) and m2.sum() == 4


def test_masked_loss_equals_hand_computed_masked_mean(small_cfg):
    cfg = small_cfg(**{"model.mtp_depth": 0})
    model = build_model(cfg, seed=5)
    net = CausalLMLoss(model, cfg.model.mtp_loss_weight)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.model.vocab_size, (2, 11)).astype(np.int32)
    mask = np.zeros((2, 10), np.float32)
    mask[0, 6:9] = 1
    mask[1, 2] = 1
    x, y = Tensor(ids[:, :-1]), Tensor(ids[:, 1:])
    lm = float(net(x, y, Tensor(mask))[1].asnumpy())
    logits = model(x)[0].asnumpy().astype(np.float64).reshape(2, 10, -1)
    ce = []
    for b in range(2):
        for t in range(10):
            if mask[b, t]:
                row = logits[b, t]
                ce.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[b, t + 1]])
    np.testing.assert_allclose(lm, np.mean(ce), rtol=1e-5)
    # tokens outside the mask do not matter: change a masked-out label, the loss is unchanged
    y2 = ids[:, 1:].copy()
    y2[0, 0] = (y2[0, 0] + 1) % cfg.model.vocab_size
    assert abs(float(net(x, Tensor(y2), Tensor(mask))[1].asnumpy()) - lm) < 1e-6
    assert abs(float(net(x, y)[1].asnumpy()) - lm) > 1e-4


def test_sampler_is_deterministic():
    rows = np.arange(50 * 5, dtype=np.int32).reshape(50, 5)
    s = SFTSampler(rows, np.ones_like(rows), 4, 2, seed=3)
    a = [s.batch(i, j)[0].tolist() for i in range(20) for j in range(2)]
    b = [SFTSampler(rows, np.ones_like(rows), 4, 2, seed=3).batch(i, j)[0].tolist() for i in range(20) for j in range(2)]
    assert a == b and s.batch(0, 0)[1].shape == (2, 4)


def test_sft_stage_runs_and_resumes(small_cfg, tmp_path):
    from pangu_ms.train.sft import run_sft
    tok = tokenizer()
    tok.save(tmp_path / "tok")
    with open(tmp_path / "sft.jsonl", "w") as f:
        for r in RECORDS * 4:
            f.write(json.dumps(r) + "\n")
    cfg = small_cfg(**{"model.vocab_size": 300, "stage.name": "sft", "train.steps": 3, "train.seq_length": 24,
                       "train.output_dir": str(tmp_path / "run"), "train.save_interval": 2, "train.log_interval": 1,
                       "train.eval_interval": 3, "train.sample_tokens": 0, "train.peak_flops": 1e10,
                       "sft.data": str(tmp_path / "sft.jsonl"), "sft.valid_data": str(tmp_path / "sft.jsonl"),
                       "sft.tokenizer": str(tmp_path / "tok" / "tokenizer.json")})
    first = run_sft(cfg, progress=False, stop_after=2)
    assert sorted(first["losses"]) == [0, 1] and all(np.isfinite(list(first["losses"].values())))
    rest = run_sft(cfg, progress=False)
    assert sorted(rest["losses"]) == [2] and np.isfinite(rest["valid_loss"])
    assert os.path.isdir(tmp_path / "run" / "checkpoints")
