"""The training loop shared by every stage: data, jitted step (with real gradient accumulation), validation,
logging, checkpoints with automatic exact resume (:class:`~pangu_ms.train.checkpoint.CheckpointManager`),
the non-finite step policy (:mod:`pangu_ms.train.divergence`), and a generated sample at the end.

Order of one optimizer step ``i`` (0-based): for each micro-batch ``j`` of this rank, ``sampler.batch(i, j)``
-> forward/backward (-> gradient buffers when accumulating) -> gradient reduction over DP/EP ranks -> clip ->
AdamW with ``lr[i]`` (skipped in the jitted step when the loss or gradient norm is not finite). Checkpoint
``step_<i + 1>`` (taken after step ``i``) stores every Parameter (weights, moments, global step) and resumes at
step ``i + 1``; metrics.jsonl records after it are dropped on resume (they are logged again). Since batches are a function of (seed, step, rank) and the model has no dropout,
a resumed run reproduces the uninterrupted run's losses exactly.
"""
from __future__ import annotations

import os
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config import Config, ConfigError, dump_config
from ..data.packing import document_positions
from ..model import CausalLMLoss, build_model
from ..model.stats import compute_stats
from .determinism import apply_determinism
from .checkpoint import CheckpointManager, load_checkpoint, local_parameter_names, resolve_checkpoint
from .divergence import DivergenceError, LossSpikeDetector, NonFiniteGuard
from .logging import RunLogger, expert_load_stats, truncate_metrics
from .mf import ensure_mindformers
from .optim import current_lr
from .recompute_auto import PeakMeter, describe_measured, parameter_bytes, resolve_auto
from .schedule import phase_starts
from .step import TrainStep, compile_step


def setup_runtime(cfg: Config):
    """msrun-launched -> the explicit-collective runtime of ``pangu_ms.parallel``; else one process."""
    from ..parallel.runtime import setup_parallel
    return setup_parallel(cfg)


class Trainer:
    def __init__(self, cfg: Config, runtime=None, progress: bool = True):
        self.cfg = cfg
        t = cfg.train
        self.run_dir = os.path.abspath(t.output_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        ensure_mindformers(os.path.join(self.run_dir, "mindformers_log"), 0 if t.mode == "graph" else 1)
        ms.set_context(mode=ms.GRAPH_MODE if t.mode == "graph" else ms.PYNATIVE_MODE)
        apply_determinism(t.deterministic)
        self.rt = runtime or setup_runtime(cfg)
        # train.recompute: auto -> the cheapest granularity the memory model fits in train.memory_budget_gb
        cfg, self._auto_note, self._auto_predicted = resolve_auto(cfg, self.rt.world)
        self.cfg = cfg
        self.sampler, self.valid, self.tokenizer = self._build_data()
        self.accum = self.sampler.accumulation_steps
        self.micro = self.sampler.micro_batch_size
        self.net = build_model(cfg, hooks=self.rt.hooks)
        self.loss_cell = self._build_loss()
        from .optim import build_optimizer
        self.optimizer = build_optimizer(self.net.trainable_params(), t)
        reducer = self.rt.grad_reducer(self.net, self.optimizer)
        self.step_cell = TrainStep(self.loss_cell, self.optimizer, t.grad_clip, reducer, accumulate=self.accum > 1)
        if self.accum > 1:
            self._micro = ms.jit(self.step_cell.micro) if t.mode == "graph" else self.step_cell.micro
            self._apply = ms.jit(self.step_cell.apply) if t.mode == "graph" else self.step_cell.apply
        else:
            self._step = compile_step(self.step_cell, t.mode)
        self.stats = compute_stats(cfg, t.seq_length)
        self.placement = self._expert_placement()
        self.checkpoints = self._checkpoint_manager()
        self.start_step = 0
        self.skipped_before = 0         # non-finite steps skipped before the resumed checkpoint
        self.log = None
        self.progress = progress

    def _checkpoint_manager(self) -> CheckpointManager:
        t, rt = self.cfg.train, self.rt
        local, experts = set(), None
        if rt.hooks is not None and rt.hooks.local_experts is not None:     # expert parallelism: own shards
            from ..parallel.grads import expert_param_names
            local = local_parameter_names(self.step_cell, expert_param_names(self.net))
            experts = (*rt.hooks.local_experts, self.cfg.moe.num_experts)
        return CheckpointManager(self.run_dir, rt.rank, rt.world, local, t.checkpoint_format, t.keep_last,
                                 all_sum=self._all_sum, barrier=rt.barrier, log=lambda line: self.log.info(line),
                                 experts=experts,
                                 placement_of=self.placement.placement_of() if self.placement is not None else None)

    def _expert_placement(self):
        """Placement state of the explicit EP path (``pangu_ms.parallel.placement_executor``): with
        ``moe.expert_placement`` it predicts, plans and migrates; otherwise (EP without placement) it only reads
        the dispatchers' tables for the per-rank load statistics. None without EP."""
        m, rt = self.cfg.moe, self.rt
        ep = rt.groups.get("ep")
        if ep is None or ep.size <= 1 or not self.net.moe_layer_ids:
            if m.expert_placement:
                raise ConfigError("moe.expert_placement: needs the explicit expert-parallel path with the flat "
                                  "all-to-all (launch with run/msrun.sh, parallel.ep > 1)")
            return None
        from ..parallel.placement_executor import ExpertPlacement
        return ExpertPlacement(self.net, self.step_cell, ep.ranks, ep.index, rt.world, m.placement_theta,
                               m.placement_interval, m.placement_threshold, enabled=m.expert_placement)

    def _build_loss(self):
        """The stage's loss Cell over ``self.net`` (pretraining: CE + ``model.mtp_loss_weight`` MTP + aux)."""
        return CausalLMLoss(self.net, self.cfg.model.mtp_loss_weight)

    # ------------------------------------------------------------------ data
    def _build_data(self):
        cfg, t, rt = self.cfg, self.cfg.train, self.rt
        mbs = cfg.parallel.micro_batch_size
        if cfg.data.source == "synthetic":
            from ..data.synthetic import SyntheticSampler
            s = SyntheticSampler(cfg.model.vocab_size, t.seq_length, t.global_batch_size, rt.dp_rank, rt.dp_size,
                                 t.seed, mbs)
            return s, None, None
        from ..data import load_batch_sampler, load_tokenizer, open_prepared
        from ..data.prepare import ensure_prepared
        path = ensure_prepared(cfg, is_main=rt.rank == 0, barrier=rt.barrier)
        phases = None
        if t.phases:
            phases = [(start, dict(ph.weights) or None) for start, ph in phase_starts(t)]
            if any(w is None for _, w in phases):
                phases = None if all(w is None for _, w in phases) else \
                    [(s, w or {}) for s, w in phases]
        sampler = load_batch_sampler(path, t.seq_length, t.global_batch_size, rt.dp_rank, rt.dp_size, t.seed,
                                     micro_batch_size=mbs, weights=dict(cfg.data.weights) or None, phases=phases,
                                     vocab_size=cfg.model.vocab_size)
        valid = open_prepared(path, "valid", seq_len=t.seq_length, vocab_size=cfg.model.vocab_size)
        tok_path = os.path.join(path, "tokenizer.json")
        tokenizer = load_tokenizer(tok_path) if os.path.isfile(tok_path) else None
        return sampler, valid, tokenizer

    def _valid_sets(self, batch_size):
        """{name: iterator of this rank's validation batches}; the batch budget is split over the corpora."""
        n = self.cfg.train.eval_batches
        if self.valid is None:
            return {"synthetic": self.sampler.valid_batches(batch_size, n)}
        from ..data import eval_batches
        per = max(1, n // len(self.valid))
        return {name: eval_batches(split, batch_size, self.rt.dp_rank, self.rt.dp_size, max_batches=per,
                                   with_segments=self._documents())
                for name, split in self.valid.items()}

    # ------------------------------------------------------------------ steps
    def _all_sum(self, x: np.ndarray) -> np.ndarray:
        """``x`` (float32) summed over every rank (a world AllReduce; identity in one process)."""
        if self.rt.world == 1:
            return x
        from mindspore import ops
        return ops.AllReduce()(Tensor(np.asarray(x, np.float32))).asnumpy()

    def _across_ranks(self, values, load):
        """Loss-like scalars averaged and expert loads summed over the data-parallel ranks (for logging)."""
        if self.rt.world == 1:
            return values, load
        packed = np.concatenate([np.asarray(values, np.float32), np.asarray(load, np.float32).ravel()])
        total = self._all_sum(packed)
        n = len(values)
        return list(total[:n] / self.rt.world), total[n:].reshape(np.shape(load))

    def _documents(self) -> bool:
        """Whether the recipe resets attention or positions per document (step inputs carry segments)."""
        t = self.cfg.train
        return t.reset_attention_mask or t.reset_position_ids

    def _inputs(self, batch) -> tuple:
        """Step inputs of one batch: (input_ids, labels), plus (loss mask None, segment_ids, position_ids) of
        the inputs when attention or positions are reset per document (``train.reset_*``)."""
        if not self._documents():
            return Tensor(batch[:, :-1]), Tensor(batch[:, 1:])
        rows, segments = batch
        segments = segments[:, :-1]
        t = self.cfg.train
        return (Tensor(rows[:, :-1]), Tensor(rows[:, 1:]), None,
                Tensor(segments) if t.reset_attention_mask else None,
                Tensor(document_positions(segments)) if t.reset_position_ids else None)

    def _batch(self, step: int, micro: int):
        """Rows of (step, micro), with their segment ids when ``_documents()`` (prepared data only: validated)."""
        if self._documents():
            return self.sampler.batch(step, micro, with_segments=True)
        return self.sampler.batch(step, micro)

    def _peak_meter(self):
        """A PeakMeter for the first step, with the step compiled before it (the compile's own memory is not
        the step's); None (and a log line) with gradient accumulation, whose jitted micro-step compiles on its
        first call."""
        if self.accum > 1:
            self.log.info("recompute auto: the measured peak is not taken with gradient accumulation")
            return None
        if self.cfg.train.mode == "graph":
            self.step_cell.compile(*self._inputs(self._batch(self.start_step, 0)))
            self._step = self.step_cell                     # the compiled Cell (same graph as ms.jit of construct)
        return PeakMeter()

    def run_step(self, step: int):
        vals, load = self._run_step_local(step)
        return self._across_ranks(vals, load)

    def _run_step_local(self, step: int):
        """One optimizer step; returns host floats (loss, lm, mtp, aux, drop, grad_norm) and the expert load."""
        if self.accum == 1:
            out = self._step(*self._inputs(self._batch(step, 0)))
            loss, lm, mtp, aux, load, drop, norm = out
            vals = [float(v.asnumpy()) for v in (loss, lm, mtp, aux, drop, norm)]
            return vals, load.asnumpy()
        acc = np.zeros(5)
        load_sum = None
        for j in range(self.accum):
            loss, lm, mtp, aux, load, drop = self._micro(*self._inputs(self._batch(step, j)))
            acc += [float(v.asnumpy()) for v in (loss, lm, mtp, aux, drop)]
            load_sum = load.asnumpy() if load_sum is None else load_sum + load.asnumpy()
        norm = float(self._apply(Tensor(float(self.accum), ms.float32)).asnumpy())
        return list(acc / self.accum) + [norm], load_sum

    def evaluate(self) -> dict:
        """Mean validation LM loss per corpus and over all batches (key ``all``)."""
        if not hasattr(self, "_eval_fn"):
            loss_cell = self.loss_cell

            def eval_fn(*inputs):
                return loss_cell(*inputs)[1]
            self._eval_fn = ms.jit(eval_fn) if self.cfg.train.mode == "graph" else eval_fn
        out, every = {}, []
        for name, batches in self._valid_sets(self.micro).items():
            losses = [float(self._eval_fn(*self._inputs(b)).asnumpy()) for b in batches]
            losses = list(self._across_ranks(losses, np.zeros(0))[0]) if losses else losses
            if losses:
                out[name] = float(np.mean(losses))
                every += losses
        out["all"] = float(np.mean(every)) if every else float("nan")
        return out

    # ------------------------------------------------------------------ checkpoints
    def maybe_resume(self) -> None:
        """Newest complete checkpoint of this run (``train.resume``), else ``stage.init_from``'s weights."""
        init_from = self.cfg.stage.init_from
        state = self.checkpoints.resume(self.step_cell) if self.cfg.train.resume else None
        if state:
            self.start_step = state["step"]
            self.skipped_before = state.get("skipped_steps", 0)
            if self.placement is not None:
                self._resume_placement(self.checkpoints.paths(self.start_step).directory)
        elif init_from:
            path = resolve_checkpoint(init_from)
            experts = self.checkpoints.experts
            load_checkpoint(self.net, path, self.rt.rank, experts=experts[:2] if experts else None,
                            expert_names=self.checkpoints.local_names, placement_of=self.checkpoints.placement_of)
            if self.placement is not None:
                self.placement.read_tables()
            self.log.info(f"initialised weights from {path}")
        if self.rt.rank == 0:
            truncate_metrics(self.run_dir, self.start_step)
            truncate_metrics(self.run_dir, self.start_step, "expert_load.jsonl")

    def _resume_placement(self, directory: str) -> None:
        """The tables came back with the weights (dispatcher Parameters); the predictor from the side file."""
        import json
        from ..parallel.placement_executor import STATE_FILE
        self.placement.read_tables()
        path = os.path.join(directory, STATE_FILE)
        if self.placement.enabled and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.placement.load_state(json.load(f))
        elif self.placement.enabled:
            self.log.info(f"expert placement: {directory} has no {STATE_FILE}; the load predictor starts afresh")

    def save(self, step: int, skipped: int = 0) -> str:
        """Checkpoint after 0-based step ``step`` (on every rank; each writes its part)."""
        side = None
        if self.placement is not None and self.placement.enabled:
            from ..parallel.placement_executor import STATE_FILE
            side = {STATE_FILE: self.placement.state()}
        return self.checkpoints.save(self.step_cell, step + 1, {"run": self.cfg.train.output_dir,
                                                                "skipped_steps": skipped}, side_files=side)

    def _placement_step(self, step: int, load) -> dict:
        """Feed the predictor; on a check step plan / migrate and log (the scalars are returned for
        metrics.jsonl: predicted device-load CV before / after and experts moved, per layer)."""
        pl = self.placement
        pl.observe(load)
        out = {}
        for d in pl.check(step + 1):
            out[f"moe/layer{d.layer}/placement_cv_before"] = d.cv_before
            out[f"moe/layer{d.layer}/placement_cv_after"] = d.cv_after if d.migrate else d.cv_before
            out[f"moe/layer{d.layer}/placement_moved"] = len(d.moved)
            verdict = (f"migrated experts {d.moved}" if d.migrate else
                       f"kept (planned CV {d.cv_after:.4f}, gain below moe.placement_threshold="
                       f"{pl.threshold})")
            self.log.info(f"step {step + 1} expert placement layer {d.layer}: predicted device-load CV "
                          f"{d.cv_before:.4f} -> {d.cv_after if d.migrate else d.cv_before:.4f}, {verdict}")
        return out

    # ------------------------------------------------------------------ main
    def train(self, stop_after: int | None = None) -> dict:
        """Train to ``train.steps`` (or stop after ``stop_after`` steps of this call, to emulate an
        interruption). Returns a summary dict (losses per step, final validation loss, throughput)."""
        cfg, t = self.cfg, self.cfg.train
        self.log = RunLogger(self.run_dir, self.rt.rank, t.steps, 0, progress=False)
        self.maybe_resume()
        self.log.close()
        self.log = RunLogger(self.run_dir, self.rt.rank, t.steps, self.start_step, self.progress)
        if self.rt.rank == 0:
            dump_config(cfg, os.path.join(self.run_dir, "config.yaml"))
        peak = t.peak_flops or self._measure_peak()
        tokens_per_step = t.global_batch_size * t.seq_length
        self.log.info(f"model {self.stats.total_params / 1e6:.3f}M params ({self.stats.active_params / 1e6:.3f}M "
                      f"active), {self.stats.train_flops_per_token / 1e6:.2f} MFLOP/token; "
                      f"{t.steps} steps x {tokens_per_step} tokens, accumulation {self.accum}, "
                      f"world {self.rt.world}; MFU peak {peak / 1e9:.1f} GFLOP/s")
        losses, summary = {}, {}
        end = t.steps if stop_after is None else min(t.steps, self.start_step + stop_after)
        t_window, n_window, train_time = time.perf_counter(), 0, 0.0
        phase_at = {s: p.name for s, p in phase_starts(t)} if t.phases else {}
        guard = NonFiniteGuard(t.on_nonfinite, t.max_skipped_steps, self.log.info, self.skipped_before)
        ep_width = self.placement.ep_width if self.placement is not None else 1
        spikes = LossSpikeDetector(t.loss_spike_factor, t.loss_spike_window, self.log.info)
        meter = None
        if self._auto_note:
            self.log.info(self._auto_note)
            meter = self._peak_meter()
        for step in range(self.start_step, end):
            if step in phase_at:
                self.log.info(f"phase '{phase_at[step]}' starts at step {step}")
            if meter is not None and step == self.start_step:
                meter.start()
            t0 = time.perf_counter()
            (loss, lm, mtp, aux, drop, norm), load = self.run_step(step)
            if meter is not None and step == self.start_step:
                self.log.info(describe_measured(self._auto_predicted, parameter_bytes(self.step_cell),
                                                meter.growth_bytes()))
            tables = None
            if self.placement is not None:
                tables = self.placement.tables()          # the placement this step's tokens were routed under
                checked = self._placement_step(step, load)
                if checked:
                    self.log.scalars(step + 1, checked)
            train_time += time.perf_counter() - t0
            n_window += 1
            losses[step] = loss
            try:
                guard.check(step + 1, loss, norm)
            except DivergenceError:
                self.log.close()                    # run/train.py prints the one error line
                raise
            spikes.check(step + 1, loss)
            self.log.advance(1, {"loss": f"{loss:.3f}"})
            last = step == end - 1
            if (step + 1) % t.log_interval == 0 or last:
                dt = time.perf_counter() - t_window
                tps = n_window * tokens_per_step / dt
                mfu = tps * self.stats.train_flops_per_token / peak
                lr_now = current_lr(self.optimizer, step)
                vals = {"loss/total": loss, "loss/lm": lm, "loss/mtp": mtp, "loss/aux": aux, "lr": lr_now,
                        "grad_norm": norm, "train/skipped_steps": guard.skipped,
                        **({"train/loss_spikes": spikes.spikes} if t.loss_spike_factor > 0 else {}), "perf/tokens_per_s": tps, "perf/mfu": mfu, "moe/drop_rate": drop,
                        **expert_load_stats(load, tables, ep_width)}
                self.log.scalars(step + 1, vals)
                if self.cfg.moe.enabled:
                    self._log_expert_load(step + 1, load, tables)
                self.log.info(f"step {step + 1}/{t.steps} loss {loss:.4f} lm {lm:.4f} mtp {mtp:.4f} aux {aux:.4f} "
                              f"lr {lr_now:.2e} gnorm {norm:.3f} {tps:.0f} tok/s mfu {100 * mfu:.2f}%")
                t_window, n_window = time.perf_counter(), 0
            if (step + 1) % t.eval_interval == 0 or (last and end == t.steps):
                ev = self.evaluate()
                v = summary["valid_loss"] = ev["all"]
                summary["valid_losses"] = ev
                per = {f"valid/{k}": x for k, x in ev.items() if k != "all"}
                self.log.scalars(step + 1, {"valid/loss": v, **(per if len(per) > 1 else {})})
                detail = ", ".join(f"{k} {x:.4f}" for k, x in per.items()) if len(per) > 1 else ""
                self.log.info(f"step {step + 1} validation loss {v:.4f}" + (f" ({detail})" if detail else ""))
                t_window = time.perf_counter()
            if (step + 1) % t.save_interval == 0 or last:
                self.save(step, guard.skipped)
        summary.update({"losses": losses, "train_time_s": train_time,
                        "tokens_per_s": (end - self.start_step) * tokens_per_step / max(train_time, 1e-9)})
        # with expert parallelism every rank takes part in each forward (the all-to-all), so all ranks sample
        if end == t.steps and t.sample_tokens > 0 and (self.rt.rank == 0 or self.rt.hooks is not None):
            summary["sample"] = self.sample(t.sample_tokens)
        self.log.close()
        return summary

    def _log_expert_load(self, step: int, load, tables) -> None:
        """Per-expert routed tokens (before any drop) of the logged step: tensorboard curves and one line of
        ``expert_load.jsonl`` (with the placement tables the step ran under), read by tools/analyze_moe.py."""
        from ..moe.load_stats import per_expert_scalars
        self.log.tb_scalars(step, per_expert_scalars(load))
        rec = {"load": np.asarray(load).astype(float).tolist()}
        if tables is not None:
            rec["tables"] = np.asarray(tables).tolist()
            rec["ep_width"] = self.placement.ep_width
        self.log.record("expert_load", step, rec)

    def _measure_peak(self) -> float:
        from ..bench.peak import mindspore_gemm_peak
        return mindspore_gemm_peak(sizes=(1024, 2048), repeats=3)[0] * 1e9

    # ------------------------------------------------------------------ generation
    def sample(self, n_tokens: int, prompt: str = "ROMEO:\n", temperature: float = 0.8, top_k: int = 20) -> str:
        """Sample ``n_tokens`` after ``prompt`` (full forward per token over a fixed window; the KV-cache decoder
        belongs to the RL stage). Printed to the log and returned."""
        from .generate import sample_tokens
        s = self.cfg.train.seq_length
        if self.tokenizer is not None:
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(self.sampler.global_batch(0)[0, :8])
        out = sample_tokens(self.net, ids, n_tokens, s, temperature, top_k, self.cfg.train.seed,
                            graph=self.cfg.train.mode == "graph")
        text = self.tokenizer.decode(out) if self.tokenizer is not None else " ".join(map(str, out))
        self.log.info("sample:\n" + text)
        return text
