"""``stage: rl``: GRPO-family RL with verifiable rewards, KV-cache rollouts and a frozen reference model.

One iteration (``rl.updates_per_rollout`` optimizer steps; ``train.steps`` counts optimizer steps):
 1. prompts: ``rl.prompts_per_step`` problems, a ``hard_fraction`` of them from the hard-example queue, the rest
    drawn uniformly from ``rl.data`` (``default_rng([seed, iteration, round])``: resumable);
 2. rollouts: G = ``rl.group_size`` completions each with the KV-cache sampler (temperature / top-p, stop token,
    max new tokens);
 3. rewards: the multi-capability reward (``rl.rewards``) per completion; hard-example queue updated with each
    group's mean ``correct`` reward;
 4. dynamic sampling (optional): groups with all-equal rewards are dropped and new prompts rolled out, up to
    ``dynamic_sampling_rounds``; empty slots are masked;
 5. advantages: group-normalised; old log-probs (policy before the update) and reference log-probs (the frozen
    ``stage.init_from`` model) by one jitted forward each;
 6. ``updates_per_rollout`` jitted GRPO steps (clipped policy loss with low/high clip, token-level mean, k3 KL,
    MoE aux loss; routing dropless as in ``moe:``).
Logged to train.log / metrics.jsonl / tensorboardX: reward (total, per reward, per capability), KL, entropy,
clip fraction, response length, rollout and training tokens/s, hard-queue size, informative-group fraction.
Held-out evaluation (``rl.eval_data``) before the first and after the last step and every ``eval_interval``
steps: mean reward of ``eval_samples`` samples per problem at the rollout temperature, and greedy accuracy.
Checkpoints: policy + optimizer (auto-resume), the hard-example queue in ``rl_state.json`` next to them.
"""
from __future__ import annotations

import json
import math
import os
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config import Config, ConfigError, dump_config
from ..model import build_model
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .logging import RunLogger
from .mf import ensure_mindformers


def _check(cfg: Config) -> None:
    r = cfg.rl
    if not r.data:
        raise ConfigError("rl.data: empty; give a prompts jsonl (tools/make_math_data.py writes one)")
    if not cfg.stage.init_from:
        raise ConfigError("stage.init_from: the rl stage starts from an SFT (or pretrained) run; set it")
    for name in ("group_size", "prompts_per_step", "max_new_tokens", "max_prompt_tokens", "updates_per_rollout"):
        if getattr(r, name) <= 0:
            raise ConfigError(f"rl.{name}: must be > 0, got {getattr(r, name)}")
    if r.group_size < 2:
        raise ConfigError("rl.group_size: group-normalised advantages need at least 2 samples per prompt")
    if not (0 <= r.clip_low < 1 and r.clip_high >= 0):
        raise ConfigError(f"rl.clip_low / clip_high: need 0 <= clip_low < 1 and clip_high >= 0")
    if cfg.model.attention_type != "mla":
        raise ConfigError("model.attention_type: the KV-cache rollouts support mla only")
    if r.max_prompt_tokens + r.max_new_tokens > cfg.model.max_position_embeddings:
        raise ConfigError("rl.max_prompt_tokens + rl.max_new_tokens exceed model.max_position_embeddings")


class RLTrainer:
    def __init__(self, cfg: Config, progress: bool = True):
        _check(cfg)
        from ..data import load_tokenizer
        from ..rl.loss import GRPOLoss, TokenLogProbs
        from ..rl.mining import HardExampleQueue
        from ..rl.rewards import MultiCapabilityReward
        from ..rl.rollout import RolloutSampler
        from ..rl.tasks import read_jsonl
        from .optim import build_optimizer
        from .step import TrainStep, compile_step
        self.cfg, t, r = cfg, cfg.train, cfg.rl
        self.progress = progress
        self.run_dir = os.path.abspath(t.output_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        ensure_mindformers(os.path.join(self.run_dir, "mindformers_log"), 0 if t.mode == "graph" else 1)
        ms.set_context(mode=ms.GRAPH_MODE if t.mode == "graph" else ms.PYNATIVE_MODE)
        self.graph = t.mode == "graph"
        tok_path = r.tokenizer or cfg.data.tokenizer
        if not tok_path:
            raise ConfigError("rl.tokenizer: empty (and data.tokenizer is empty)")
        self.tok = load_tokenizer(tok_path)
        self.stop_id = self.tok.eod_id if r.stop_token == "eos" else int(r.stop_token)
        from ..data.chat import encode_prompt
        self.problems = [p for p in read_jsonl(r.data)]
        self.by_id = {p["id"]: p for p in self.problems}
        self.prompt_ids = {p["id"]: encode_prompt(self.tok, str(p["prompt"])) for p in self.problems}
        self.problems = [p for p in self.problems if len(self.prompt_ids[p["id"]]) <= r.max_prompt_tokens]
        if not self.problems:
            raise ConfigError(f"rl.data: no prompt fits rl.max_prompt_tokens={r.max_prompt_tokens}")
        self.eval_set = read_jsonl(r.eval_data) if r.eval_data else []
        if r.eval_problems:
            self.eval_set = self.eval_set[: r.eval_problems]
        self.eval_set = [p for p in self.eval_set
                         if len(encode_prompt(self.tok, str(p["prompt"]))) <= r.max_prompt_tokens]
        self.seq_len = r.max_prompt_tokens + r.max_new_tokens          # tokens per row (input = row[:-1])
        self.batch = r.prompts_per_step * r.group_size
        self.reward = MultiCapabilityReward(r.rewards)
        self.net = build_model(cfg)
        self.ref = build_model(cfg) if r.kl_coef > 0 else None
        self.optimizer = build_optimizer(self.net.trainable_params(), t)
        self.loss_cell = GRPOLoss(self.net, r.clip_low, r.clip_high, r.kl_coef, r.aux_loss)
        self.step_cell = TrainStep(self.loss_cell, self.optimizer, t.grad_clip)
        self._step = compile_step(self.step_cell, t.mode)
        self.logp_cell = TokenLogProbs(self.net)
        self._logp = ms.jit(self.logp_cell.construct) if self.graph else self.logp_cell
        if self.ref is not None:
            for p in self.ref.get_parameters():
                p.requires_grad = False
            self.ref_cell = TokenLogProbs(self.ref)
            self._ref_logp = ms.jit(self.ref_cell.construct) if self.graph else self.ref_cell
        self.sampler = RolloutSampler(self.net, self.batch, self.seq_len, self.graph)
        self.queue = HardExampleQueue(r.hard_threshold, r.hard_max_requeue, r.hard_capacity)
        self.ckpt_dir = os.path.join(self.run_dir, "checkpoints")
        self.start_step = 0
        self.log = None

    # ------------------------------------------------------------------ rollouts and rewards
    def score(self, problem: dict, tokens: list, stopped: bool):
        from ..rl.rewards import Completion
        body = [x for x in tokens if x != self.stop_id] if stopped else list(tokens)
        c = Completion(self.tok.decode(body), stopped, len(tokens), self.cfg.rl.max_new_tokens)
        return self.reward(c, problem)

    def rollout_groups(self, problems: list, rng):
        """G completions per problem -> list of groups: dict(problem, rollouts, rewards [G], parts)."""
        r = self.cfg.rl
        prompts = [self.prompt_ids[p["id"]] for p in problems for _ in range(r.group_size)]
        outs = self.sampler.generate(prompts, r.max_new_tokens, r.temperature, r.top_p, self.stop_id, rng)
        groups = []
        for k, p in enumerate(problems):
            ro = outs[k * r.group_size: (k + 1) * r.group_size]
            scored = [self.score(p, o.tokens, o.stopped) for o in ro]
            groups.append({"problem": p, "rollouts": ro, "rewards": np.array([s[0] for s in scored]),
                           "parts": [s[1] for s in scored]})
        return groups

    def draw_problems(self, it: int, rnd: int, n: int) -> list:
        r = self.cfg.rl
        rng = np.random.default_rng([self.cfg.train.seed, it, rnd])
        hard = []
        if r.hard_mining and rnd == 0:
            hard = [self.by_id[i] for i in self.queue.take(int(round(r.hard_fraction * n)))]
        m = n - len(hard)
        fresh = [self.problems[i] for i in rng.choice(len(self.problems), m, replace=m > len(self.problems))]
        return hard + fresh

    def collect(self, it: int):
        """Rollout groups for one iteration (dynamic sampling applied) and their statistics."""
        from ..rl.advantages import informative_groups
        r = self.cfg.rl
        p_n = r.prompts_per_step
        kept, seen = [], []
        rounds = r.dynamic_sampling_rounds if r.dynamic_sampling else 1
        for rnd in range(rounds):
            need = p_n - len(kept)
            if need <= 0:
                break
            problems = self.draw_problems(it, rnd, p_n)      # fixed batch: always a full rollout batch
            rng = np.random.default_rng([self.cfg.train.seed, it, rnd, 7])
            groups = self.rollout_groups(problems, rng)
            seen += groups
            for g in groups:
                if r.hard_mining:
                    self.queue.update(g["problem"]["id"], float(np.mean([q["correct"] for q in g["parts"]]))
                                      if "correct" in g["parts"][0] else float(g["rewards"].mean()))
            ok = informative_groups(np.stack([g["rewards"] for g in groups])) if r.dynamic_sampling \
                else np.ones(len(groups), bool)
            kept += [g for g, keep in zip(groups, ok) if keep][:need]
        return kept, seen

    def build_batch(self, groups):
        """Right-padded rows [B, seq_len], response mask on labels [B, seq_len-1], advantages [B]."""
        from ..rl.advantages import group_advantages
        r = self.cfg.rl
        b, s = self.batch, self.seq_len
        pad = self.tok.pad_id if self.tok.pad_id is not None else self.stop_id
        rows = np.full((b, s), pad, np.int32)
        mask = np.zeros((b, s - 1), np.float32)
        adv = np.zeros(b, np.float32)
        if groups:
            a = group_advantages(np.stack([g["rewards"] for g in groups]), r.adv_eps, r.scale_adv_by_std)
        for k, g in enumerate(groups):
            for j, ro in enumerate(g["rollouts"]):
                i = k * r.group_size + j
                seq = list(ro.prompt) + list(ro.tokens)
                rows[i, :len(seq)] = seq
                mask[i, len(ro.prompt) - 1: len(seq) - 1] = 1.0
                adv[i] = a[k, j]
        return rows, mask, adv

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Held-out: mean reward of eval_samples samples per problem, per reward and capability; greedy acc."""
        r = self.cfg.rl
        if not self.eval_set:
            return {}
        from ..data.chat import encode_prompt
        rng = np.random.default_rng([self.cfg.train.seed, 99])
        prompts = [encode_prompt(self.tok, str(p["prompt"])) for p in self.eval_set]
        out = {"problems": len(self.eval_set), "samples_per_problem": r.eval_samples}
        sampled = self.sampler.generate([q for q in prompts for _ in range(r.eval_samples)], r.max_new_tokens,
                                        r.temperature, r.top_p, self.stop_id, rng)
        totals, parts, caps = [], {}, {}
        for i, o in enumerate(sampled):
            p = self.eval_set[i // r.eval_samples]
            tot, pr = self.score(p, o.tokens, o.stopped)
            totals.append(tot)
            for k, v in pr.items():
                parts.setdefault(k, []).append(v)
                caps.setdefault(f"{p.get('capability', 'default')}/{k}", []).append(v)
            caps.setdefault(f"{p.get('capability', 'default')}/total", []).append(tot)
        out["reward"] = float(np.mean(totals))
        out.update({f"reward_{k}": float(np.mean(v)) for k, v in parts.items()})
        out.update({f"cap/{k}": float(np.mean(v)) for k, v in caps.items()})
        greedy = self.sampler.generate(prompts, r.max_new_tokens, 0.0, 1.0, self.stop_id, rng)
        g_parts = [self.score(p, o.tokens, o.stopped)[1] for p, o in zip(self.eval_set, greedy)]
        if g_parts and "correct" in g_parts[0]:
            out["greedy_correct"] = float(np.mean([q["correct"] for q in g_parts]))
        return out

    def _log_eval(self, step: int, ev: dict, tag: str) -> None:
        if not ev:
            return
        self.log.scalars(step, {f"eval/{k}": v for k, v in ev.items() if isinstance(v, float)})
        caps = ", ".join(f"{k[4:]} {v:.3f}" for k, v in ev.items() if k.startswith("cap/") and k.endswith("correct"))
        self.log.info(f"{tag} held-out ({ev['problems']} problems x {ev['samples_per_problem']} samples): reward "
                      f"{ev['reward']:.4f}, correct {ev.get('reward_correct', float('nan')):.4f}, format "
                      f"{ev.get('reward_format', float('nan')):.4f}, greedy correct "
                      f"{ev.get('greedy_correct', float('nan')):.4f}; by capability: {caps}")

    # ------------------------------------------------------------------ checkpoints
    def maybe_resume(self) -> None:
        latest = latest_checkpoint(self.ckpt_dir) if self.cfg.train.resume else None
        init = self.cfg.stage.init_from
        init_path = latest_checkpoint(init) or latest_checkpoint(os.path.join(init, "checkpoints")) or init
        if self.ref is not None:
            load_checkpoint(self.ref, init_path)
        if latest:
            state = load_checkpoint(self.step_cell, latest)
            self.start_step = state["step"] + 1
            side = os.path.join(latest, "rl_state.json")
            if os.path.isfile(side):
                with open(side, encoding="utf-8") as f:
                    self.queue.load_state(json.load(f)["queue"])
            self.log.info(f"resumed from {latest} (next step {self.start_step})")
        else:
            load_checkpoint(self.net, init_path)
            self.log.info(f"initialised policy (and reference) from {init_path}")

    def save(self, step: int) -> None:
        t = self.cfg.train
        path = save_checkpoint(self.step_cell, self.ckpt_dir, step, {"run": t.output_dir}, t.checkpoint_format,
                               t.keep_last)
        with open(os.path.join(path, "rl_state.json"), "w", encoding="utf-8") as f:
            json.dump({"queue": self.queue.state()}, f)

    # ------------------------------------------------------------------ main
    def train(self, stop_after: int | None = None) -> dict:
        cfg, t, r = self.cfg, self.cfg.train, self.cfg.rl
        self.log = RunLogger(self.run_dir, 0, t.steps, 0, progress=False)
        self.maybe_resume()
        self.log.close()
        self.log = RunLogger(self.run_dir, 0, t.steps, self.start_step, self.progress)
        dump_config(cfg, os.path.join(self.run_dir, "config.yaml"))
        k = r.updates_per_rollout
        end = t.steps if stop_after is None else min(t.steps, self.start_step + stop_after)
        self.log.info(f"rl: {len(self.problems)} train prompts, {len(self.eval_set)} held-out; {r.prompts_per_step} "
                      f"prompts x G={r.group_size} per rollout, {k} updates per rollout, steps {self.start_step}"
                      f"..{end} of {t.steps}; rows of {self.seq_len} tokens; KV cache "
                      f"{cfg.model.kv_lora_rank + cfg.model.qk_rope_head_dim} floats/token/layer")
        summary = {"curve": []}
        t_start = time.perf_counter()
        if self.start_step == 0 and self.eval_set:
            ev = self.evaluate()
            summary["eval_before"] = ev
            self._log_eval(0, ev, "before RL:")
        step = self.start_step
        it = step // k
        rollout_time = train_time = 0.0
        gen_tokens = train_tokens = 0
        while step < end:
            t0 = time.perf_counter()
            gen0 = self.sampler.tokens_generated
            kept, seen = self.collect(it)
            rows, mask, adv = self.build_batch(kept)
            x, y = Tensor(rows[:, :-1]), Tensor(rows[:, 1:])
            old = self._logp(x, y)
            ref = self._ref_logp(x, y) if self.ref is not None else old
            t1 = time.perf_counter()
            rollout_time += t1 - t0
            gen_tokens += self.sampler.tokens_generated - gen0
            m_t, a_t = Tensor(mask), Tensor(adv)
            stats = []
            for _ in range(k):
                if step >= end:
                    break
                outs = self._step(x, y, old, ref, a_t, m_t)
                stats.append([float(v.asnumpy()) for v in outs])
                step += 1
                self.log.advance(1)
            train_time += time.perf_counter() - t1
            train_tokens += len(stats) * rows[:, :-1].size
            loss, pg, kl, ent, clipf, aux, norm = np.mean(stats, 0)
            if not math.isfinite(loss):
                raise FloatingPointError(f"step {step}: RL loss is {loss}")
            all_rewards = np.concatenate([g["rewards"] for g in seen])
            vals = {"rl/loss": loss, "rl/pg_loss": pg, "rl/kl": kl, "rl/entropy": ent, "rl/clip_frac": clipf,
                    "loss/aux": aux, "grad_norm": norm, "reward/total": float(all_rewards.mean()),
                    "rl/response_length": float(np.mean([len(o.tokens) for g in seen for o in g["rollouts"]])),
                    "rl/informative_groups": len(kept) / max(r.prompts_per_step, 1),
                    "rl/rollout_rounds": len(seen) / r.prompts_per_step, "rl/hard_queue": len(self.queue),
                    "perf/rollout_tokens_per_s": gen_tokens / max(rollout_time, 1e-9),
                    "perf/train_tokens_per_s": train_tokens / max(train_time, 1e-9),
                    "lr": float(self.optimizer_lr(step - 1))}
            by_cap = {}
            for g in seen:
                cap = g["problem"].get("capability", "default")
                for total, parts in zip(g["rewards"], g["parts"]):
                    by_cap.setdefault(f"reward/{cap}", []).append(total)
                    for name, v in parts.items():
                        by_cap.setdefault(f"reward/{name}", []).append(v)
                        by_cap.setdefault(f"reward/{cap}/{name}", []).append(v)
            vals.update({key: float(np.mean(v)) for key, v in by_cap.items()})
            self.log.scalars(step, vals)
            summary["curve"].append({"step": step, "reward": vals["reward/total"],
                                     "correct": vals.get("reward/correct", float("nan"))})
            if it % max(1, t.log_interval // k) == 0 or step >= end:
                self.log.info(f"step {step}/{t.steps} reward {vals['reward/total']:.3f} correct "
                              f"{vals.get('reward/correct', float('nan')):.3f} kl {kl:.4f} ent {ent:.3f} clip "
                              f"{clipf:.3f} len {vals['rl/response_length']:.2f} informative "
                              f"{vals['rl/informative_groups']:.2f} queue {len(self.queue)} "
                              f"rollout {vals['perf/rollout_tokens_per_s']:.0f} tok/s train "
                              f"{vals['perf/train_tokens_per_s']:.0f} tok/s")
                for g in seen[: r.log_samples]:
                    o = g["rollouts"][0]
                    self.log.info(f"  sample {g['problem']['prompt']!r} -> {self.tok.decode(o.tokens)!r} "
                                  f"(answer {g['problem']['answer']}, reward {g['rewards'][0]:.2f})")
            if r.eval_interval > 0 and step % r.eval_interval == 0 and step < end and self.eval_set:
                self._log_eval(step, self.evaluate(), f"step {step}:")
            if step % t.save_interval == 0 or step >= end:
                self.save(step - 1)
            it += 1
        if end == t.steps and self.eval_set:
            ev = self.evaluate()
            summary["eval_after"] = ev
            self._log_eval(step, ev, "after RL:")
        summary.update({"rollout_time_s": rollout_time, "train_time_s": train_time,
                        "wall_time_s": time.perf_counter() - t_start,
                        "tokens_per_s": (gen_tokens + train_tokens) / max(rollout_time + train_time, 1e-9)})
        with open(os.path.join(self.run_dir, "rl_summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
        self.log.close()
        return summary

    def optimizer_lr(self, step: int) -> float:
        """The learning rate the optimizer applies at ``step`` (shared helper of the training loop)."""
        from .optim import current_lr
        return current_lr(self.optimizer, max(step, 0))


def run_rl(cfg: Config, progress: bool = True, stop_after: int | None = None) -> dict:
    return RLTrainer(cfg, progress=progress).train(stop_after=stop_after)
