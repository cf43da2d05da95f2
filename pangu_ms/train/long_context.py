"""Long-context extension stage (``stage.name: long_context``).

The stage is the pretraining loop run once per sub-stage of ``long_context.schedule``, each time on a derived
:class:`Config` (:func:`sub_stage_config`) with

* ``train.seq_length`` / ``model.max_position_embeddings`` = the sub-stage's length,
* ``model.rope_theta`` = the sub-stage's base and ``long_context.rope_scaling*`` = its optional NTK / YaRN
  scaling (RoPE tables are not parameters, so weights carry over unchanged),
* its own steps / LR curve / global batch (and Ascend ``parallel.cp``),
* data packed at the new length (``<data.path>_s<L>`` unless given; prepared on first use with the
  *pretraining tokenizer*, so token ids do not change),
* ``train.output_dir = <output_dir>/<i>_<name>`` and ``stage.init_from`` = the previous sub-stage's final
  checkpoint (the first sub-stage: the recipe's ``stage.init_from``, a pretraining run directory or checkpoint).

Each sub-stage resumes on its own like any run (automatic resume from ``<sub-dir>/checkpoints``); a finished
sub-stage (``long_context_done.json`` present) is skipped on rerun. Only the weights are carried between
sub-stages; AdamW moments start from zero as in a fresh fine-tuning phase.
"""
from __future__ import annotations

import dataclasses
import json
import os

from ..config import Config
from ..config.loader import ConfigError
from .checkpoint import latest_checkpoint

DONE_FILE = "long_context_done.json"


def sub_stage_dir(cfg: Config, i: int) -> str:
    st = cfg.long_context.schedule[i]
    return os.path.join(cfg.train.output_dir, f"{i}_{st.name or f's{st.seq_length}'}")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory, a ``checkpoints`` directory or a run directory -> the checkpoint to load."""
    if not path:
        raise ConfigError("stage.init_from: the long_context stage needs the pretraining run (or checkpoint) "
                          "to start from")
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "state.json")):
        return path
    for root in (path, os.path.join(path, "checkpoints")):
        ck = latest_checkpoint(root)
        if ck:
            return ck
    raise ConfigError(f"stage.init_from: no complete checkpoint under {path}")


def validate_schedule(cfg: Config) -> None:
    sched = cfg.long_context.schedule
    if not sched:
        raise ConfigError("long_context.schedule: empty (stage.name: long_context needs at least one sub-stage)")
    prev = cfg.train.seq_length
    for i, st in enumerate(sched):
        where = f"long_context.schedule[{i}]"
        if st.seq_length < 2:
            raise ConfigError(f"{where}.seq_length: must be >= 2 (got {st.seq_length})")
        if st.seq_length < prev:
            raise ConfigError(f"{where}.seq_length: {st.seq_length} is shorter than the previous length {prev}")
        if st.steps < 1:
            raise ConfigError(f"{where}.steps: must be >= 1 (got {st.steps})")
        if st.max_position_embeddings and st.max_position_embeddings < st.seq_length:
            raise ConfigError(f"{where}.max_position_embeddings: {st.max_position_embeddings} < seq_length "
                              f"{st.seq_length}")
        if st.rope_scaling != "none" and st.rope_scaling_factor < 1.0:
            raise ConfigError(f"{where}.rope_scaling_factor: must be >= 1 (got {st.rope_scaling_factor})")
        from ..config.validate import validate_config
        try:
            validate_config(sub_stage_config(cfg, i))
        except ConfigError as e:
            raise ConfigError(f"{where} (derived sub-stage config): {e}") from None
        prev = st.seq_length


def _tokenizer_of(cfg: Config) -> str:
    """The tokenizer the pretraining data was prepared with (sub-stage data must reuse it)."""
    if cfg.data.tokenizer:
        return cfg.data.tokenizer
    for name in ("tokenizer.json", "tokenizer.model"):
        p = os.path.join(os.path.abspath(cfg.data.path), name)
        if os.path.isfile(p):
            return p
    return ""


def sub_stage_config(cfg: Config, i: int) -> Config:
    """The derived pretraining-loop Config of sub-stage ``i`` (see the module docstring)."""
    sched = cfg.long_context.schedule
    st = sched[i]
    prev_len = sched[i - 1].seq_length if i else cfg.train.seq_length
    gbs = st.global_batch_size or cfg.train.global_batch_size
    cp = st.cp or cfg.parallel.cp
    # the device count stays fixed: raising cp takes the ranks from data parallelism (dp * cp is constant)
    dp = cfg.parallel.dp * cfg.parallel.cp // cp if (cfg.parallel.dp * cfg.parallel.cp) % cp == 0 else -1
    if dp < 1:
        raise ConfigError(f"long_context.schedule[{i}].cp: {cp} does not divide parallel.dp*cp = "
                          f"{cfg.parallel.dp * cfg.parallel.cp} (the device count is kept)")
    mbs = st.micro_batch_size or max(1, min(cfg.parallel.micro_batch_size, gbs // dp))
    lc = dataclasses.replace(
        cfg.long_context, rope_scaling=st.rope_scaling, rope_scaling_factor=st.rope_scaling_factor,
        rope_original_max_position=(st.rope_original_max_position or prev_len) if st.rope_scaling == "yarn" else
        st.rope_original_max_position)
    model = dataclasses.replace(cfg.model, rope_theta=st.rope_theta or cfg.model.rope_theta,
                                max_position_embeddings=st.max_position_embeddings or st.seq_length)
    train = dataclasses.replace(cfg.train, seq_length=st.seq_length, steps=st.steps, global_batch_size=gbs,
                                lr=st.lr, min_lr=st.min_lr, warmup_steps=st.warmup_steps,
                                lr_schedule=st.lr_schedule, phases=[], output_dir=sub_stage_dir(cfg, i))
    parallel = dataclasses.replace(cfg.parallel, micro_batch_size=mbs, cp=cp, dp=dp)
    data = cfg.data
    if data.source == "mindrecord":
        tok = _tokenizer_of(cfg)
        data = dataclasses.replace(data, path=st.data_path or f"{data.path.rstrip('/')}_s{st.seq_length}",
                                   corpus=st.data_corpus or data.corpus, tokenizer=tok,
                                   max_docs=st.data_max_docs or data.max_docs, weights={})
    prev_dir = sub_stage_dir(cfg, i - 1) if i else ""
    stage = dataclasses.replace(cfg.stage, name="long_context",
                                init_from=os.path.join(prev_dir, "checkpoints") if i else cfg.stage.init_from)
    return dataclasses.replace(cfg, model=model, train=train, parallel=parallel, data=data, stage=stage,
                               long_context=lc)


def run_long_context(cfg: Config, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) every sub-stage; returns a summary with one entry per sub-stage.

    ``stop_after`` counts optimizer steps over the whole call (to emulate an interruption); the next call
    resumes inside the interrupted sub-stage.
    """
    from .loop import Trainer, setup_runtime
    validate_schedule(cfg)
    if cfg.data.source == "mindrecord" and not _tokenizer_of(cfg):
        raise ConfigError(f"data.tokenizer: the long_context stage must reuse the pretraining tokenizer, but "
                          f"data.tokenizer is empty and {cfg.data.path} has no tokenizer.json")
    resolve_checkpoint(cfg.stage.init_from)           # fail early with a clear message
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    rt = None
    subs, remaining, last = [], stop_after, {}
    for i, st in enumerate(cfg.long_context.schedule):
        sub = sub_stage_config(cfg, i)
        done_file = os.path.join(sub.train.output_dir, DONE_FILE)
        if os.path.isfile(done_file):
            with open(done_file, encoding="utf-8") as f:
                last = json.load(f)
            subs.append({**last, "skipped": True})
            if progress:
                print(f"[long_context] sub-stage {i} ({sub.train.output_dir}) already finished; skipped", flush=True)
            continue
        if remaining is not None and remaining <= 0:
            break
        sub = dataclasses.replace(sub, stage=dataclasses.replace(
            sub.stage, init_from=resolve_checkpoint(sub.stage.init_from)))
        if progress:
            lc = sub.long_context
            scal = "" if lc.rope_scaling == "none" else f", {lc.rope_scaling} x{lc.rope_scaling_factor:g}"
            print(f"[long_context] sub-stage {i} '{st.name}': seq {sub.train.seq_length}, rope_theta "
                  f"{sub.model.rope_theta:g}{scal}, {sub.train.steps} steps, batch {sub.train.global_batch_size}, "
                  f"lr {sub.train.lr:g}, from {sub.stage.init_from}", flush=True)
        rt = rt or setup_runtime(sub)      # msrun: the explicit-collective runtime; else Runtime.single_process()
        trainer = Trainer(sub, runtime=rt, progress=progress)
        res = trainer.train(stop_after=remaining)
        n_done = len(res.get("losses", {}))
        if remaining is not None:
            remaining -= n_done
        finished = latest_checkpoint(trainer.ckpt_dir) is not None and \
            int(os.path.basename(latest_checkpoint(trainer.ckpt_dir)).split("_")[1]) == sub.train.steps - 1
        entry = {"index": i, "name": st.name, "seq_length": sub.train.seq_length,
                 "rope_theta": sub.model.rope_theta, "rope_scaling": sub.long_context.rope_scaling,
                 "steps": sub.train.steps, "output_dir": os.path.abspath(sub.train.output_dir),
                 "valid_loss": res.get("valid_loss"), "tokens_per_s": res.get("tokens_per_s"),
                 "train_time_s": res.get("train_time_s"), "finished": finished,
                 "losses": {int(k): float(v) for k, v in res.get("losses", {}).items()}}
        subs.append(entry)
        last = entry
        if finished and rt.rank == 0:
            with open(done_file, "w", encoding="utf-8") as f:
                json.dump({k: v for k, v in entry.items() if k != "losses"}, f, indent=1)
        if not finished:
            break
    summary = {"sub_stages": subs, "finished": bool(subs) and len(subs) == len(cfg.long_context.schedule)
               and all(s.get("finished", False) or s.get("skipped", False) for s in subs)}
    if last.get("valid_loss") is not None:
        summary["valid_loss"] = last["valid_loss"]
        summary["tokens_per_s"] = last.get("tokens_per_s") or 0.0
    losses = {}
    for s in subs:
        for k, v in s.get("losses", {}).items():
            losses[(s["index"], int(k))] = v
    summary["losses"] = losses
    return summary
