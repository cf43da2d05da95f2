"""``stage: sft``: supervised fine-tuning on chat jsonl with the loss on response tokens only.

The shared :class:`~pangu_ms.train.loop.Trainer` (jitted step, AdamW + LR schedule, logging, atomic checkpoints,
auto-resume, ``stage.init_from``) with the data replaced: ``sft.data`` is encoded with the chat template of
:mod:`pangu_ms.data.chat`, packed into rows of ``train.seq_length + 1`` tokens with a token loss mask, and every
step feeds ``(input_ids, labels, loss_mask)`` so the loss Cell's cross-entropy (and the MTP loss) is the
mean over response tokens only; with ``sft.mtp_on_response: false`` the loss Cell weighs MTP by 0. Validation is the same masked loss on ``sft.valid_data``. The MoE aux loss stays
on and routing stays dropless as configured in ``moe:``. Single process (no msrun data parallelism for SFT yet).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config import Config, ConfigError
from .loop import Trainer


def _tokenizer_path(cfg: Config, own: str) -> str:
    path = own or cfg.data.tokenizer
    if not path:
        raise ConfigError("sft.tokenizer: empty (and data.tokenizer is empty); point it at a tokenizer.json")
    return path


class SFTTrainer(Trainer):
    def _build_loss(self):
        from ..model import CausalLMLoss
        weight = self.cfg.model.mtp_loss_weight if self.cfg.sft.mtp_on_response else 0.0
        return CausalLMLoss(self.net, weight)

    def _build_data(self):
        from ..data import load_tokenizer
        from ..data.chat import SFTSampler, build_sft_rows
        from ..rl.tasks import read_jsonl
        cfg, t, s = self.cfg, self.cfg.train, self.cfg.sft
        if not s.data:
            raise ConfigError("sft.data: empty; give a jsonl of {\"prompt\", \"response\"} lines")
        if self.rt.world > 1:
            raise ConfigError("stage sft: runs in one process (no msrun data parallelism yet)")
        tok = load_tokenizer(_tokenizer_path(cfg, s.tokenizer))
        if tok.vocab_size > cfg.model.vocab_size:
            raise ConfigError(f"sft.tokenizer: {tok.vocab_size} tokens > model.vocab_size={cfg.model.vocab_size}")
        rows, mask = build_sft_rows(tok, read_jsonl(s.data), t.seq_length, s.pack)
        sampler = SFTSampler(rows, mask, t.global_batch_size, cfg.parallel.micro_batch_size, t.seed)
        valid = build_sft_rows(tok, read_jsonl(s.valid_data), t.seq_length, s.pack) if s.valid_data else None
        self.sft_rows = len(rows)
        self.sft_response_tokens = int(mask[:, 1:].sum())
        return sampler, valid, tok

    def _run_step_local(self, step: int):
        if self.accum == 1:
            ids, m = self.sampler.batch(step, 0)
            out = self._step(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]), Tensor(m.astype(np.float32)))
            loss, lm, mtp, aux, load, drop, norm = out
            return [float(v.asnumpy()) for v in (loss, lm, mtp, aux, drop, norm)], load.asnumpy()
        acc, load_sum = np.zeros(5), None
        for j in range(self.accum):
            ids, m = self.sampler.batch(step, j)
            loss, lm, mtp, aux, load, drop = self._micro(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]),
                                                         Tensor(m.astype(np.float32)))
            acc += [float(v.asnumpy()) for v in (loss, lm, mtp, aux, drop)]
            load_sum = load.asnumpy() if load_sum is None else load_sum + load.asnumpy()
        norm = float(self._apply(Tensor(float(self.accum), ms.float32)).asnumpy())
        return list(acc / self.accum) + [norm], load_sum

    def evaluate(self) -> dict:
        """Masked (response-token) LM loss on ``sft.valid_data`` (token-weighted over all rows)."""
        if self.valid is None:
            return {"all": float("nan")}
        if not hasattr(self, "_eval_fn"):
            loss_cell = self.loss_cell

            def eval_fn(x, y, m):
                return loss_cell(x, y, m)[1]
            self._eval_fn = ms.jit(eval_fn) if self.cfg.train.mode == "graph" else eval_fn
        rows, mask = self.valid
        b = self.micro
        tot, cnt = 0.0, 0.0
        for i in range(0, len(rows) - b + 1, b):
            m = mask[i: i + b, 1:].astype(np.float32)
            loss = float(self._eval_fn(Tensor(rows[i: i + b, :-1]), Tensor(rows[i: i + b, 1:]),
                                       Tensor(m)).asnumpy())
            tot += loss * m.sum()
            cnt += m.sum()
        return {"sft": tot / max(cnt, 1.0), "all": tot / max(cnt, 1.0)}

    def sample(self, n_tokens: int, prompt: str = "", temperature: float = 0.0, top_k: int = 0) -> str:
        """Greedy answers to the first few validation (or training) prompts, with the KV-cache decoder."""
        from ..data.chat import encode_prompt
        from ..rl.rollout import RolloutSampler
        from ..rl.tasks import read_jsonl
        recs = read_jsonl(self.cfg.sft.valid_data or self.cfg.sft.data)[:4]
        prompts = [encode_prompt(self.tokenizer, str(r["prompt"])) for r in recs]
        new = min(n_tokens, 16)
        sampler = RolloutSampler(self.net, len(prompts), max(len(p) for p in prompts) + new,
                                 graph=self.cfg.train.mode == "graph")
        outs = sampler.generate(prompts, new, 0.0, 1.0, self.tokenizer.eod_id)
        lines = [f"{r['prompt']!r} -> {self.tokenizer.decode([x for x in o.tokens if x != self.tokenizer.eod_id])!r}"
                 f" (reference {r['response']!r})" for r, o in zip(recs, outs)]
        text = "\n".join(lines)
        self.log.info("greedy answers:\n" + text)
        return text


def run_sft(cfg: Config, progress: bool = True, stop_after: int | None = None) -> dict:
    trainer = SFTTrainer(cfg, progress=progress)
    summary = trainer.train(stop_after=stop_after)
    summary["rows"] = trainer.sft_rows
    summary["response_tokens"] = trainer.sft_response_tokens
    return summary
