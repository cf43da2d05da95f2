#!/usr/bin/env python
"""One-command CPU demonstration of the long-context stage (docs/long_context.md):

    python tools/long_context_demo.py [--config yaml/tiny_cpu_long_context.yaml] [--trials 10] [--fresh]

1. writes the synthetic passkey corpora ``data/passkey/passkey_s{128,256,512}.jsonl`` (mixed into Shakespeare;
   this is what makes retrieval learnable for the ~1M-parameter model, stated in the docs);
2. pretrains the tiny model at the recipe's short length (``stage.name=pretrain``, output ``stage.init_from``);
3. evaluates it: passkey accuracy at 1x and 4x the pretraining length, LM loss on held-out Shakespeare packed
   at 4x the length ("before");
4. runs the long_context stage (its schedule, e.g. 128 -> 256 -> 512 with a raised RoPE base);
5. evaluates the extended model the same way ("after"), writes heat-maps + ``demo_results.json`` to the stage's
   output directory and the before/after table into docs/long_context.md (between the DEMO markers);
6. comparisons without training: the pretrained model at 4x with NTK-aware and with YaRN RoPE scaling (factor 4,
   original length = the pretraining length), evaluated the same way (``--no-scaling-rows`` skips them).

Reruns reuse finished runs (every run resumes); ``--fresh`` deletes the demo's runs, prepared data and passkey
corpora first (the timed one-command run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/pangu_ms_mflogs")
os.environ.setdefault("GLOG_v", "3")

# passkey document sizes (tokens) per training length: they span most of the window so that needle-to-question
# distances cover it; reminders of the key (passkey_documents) only in pretraining, where they make the copy
# circuit form early; the extension documents hold the needle alone (far needles at the new lengths)
PASSKEY_DOCS = {128: (50, 124), 256: (100, 250), 512: (200, 496), 1024: (400, 990), 2048: (800, 1980)}
PASSKEY_REMINDERS = {128: 2}       # max reminders per document at this length (0 where absent)
# share of documents whose needle lies in the first quarter of the filler (passkey_documents far_fraction): with a
# uniform depth, distances near the window length (a needle at the start of the prompt) are rarely trained
PASSKEY_FAR_FRACTION = 0.5
SCALINGS = {"ntk": "NTK", "yarn": "YaRN"}     # the RoPE scalings compared with the raised base, and their labels
START, END = "<!-- DEMO-RESULTS-START -->", "<!-- DEMO-RESULTS-END -->"


def _model_for(cfg, length, ckpt):
    from pangu_ms.model import build_model
    from pangu_ms.train.checkpoint import load_checkpoint
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, max_position_embeddings=max(length, cfg.model.max_position_embeddings)))
    net = build_model(cfg)
    load_checkpoint(net, ckpt)
    return net


def evaluate(cfg, ckpt, lengths, long_len, long_data, trials, tok, log):
    from pangu_ms.eval.passkey import evaluate_passkey, heldout_loss
    net = _model_for(cfg, max(lengths), ckpt)
    t0 = time.perf_counter()
    pk = evaluate_passkey(net, tok, lengths, [0.0, 0.25, 0.5, 0.75, 1.0], trials, seed=7, log=log)
    loss_long = heldout_loss(net, long_data, long_len, cfg.model.vocab_size, corpus="shakespeare",
                             batch_size=4, max_batches=8)
    log(f"[demo] held-out Shakespeare loss at {long_len} tokens: {loss_long:.4f} "
        f"(eval {time.perf_counter() - t0:.0f} s)")
    return pk, loss_long


def scaled_config(cfg, scaling: str, factor: float, original: int):
    """``cfg`` with RoPE scaling ``scaling`` (ntk / yarn) of ``factor`` over ``original`` positions."""
    lc = dataclasses.replace(cfg.long_context, rope_scaling=scaling, rope_scaling_factor=factor,
                             rope_original_max_position=original)
    return dataclasses.replace(cfg, long_context=lc)


def scaled_schedule(lc_cfg, scaling: str, short: int):
    """The recipe's extension schedule with RoPE scaling ``scaling`` (ntk / yarn) instead of the raised base: every
    sub-stage keeps the pretraining base and scales by its length / ``short`` (yarn: over ``short`` positions);
    same steps, LR and data; runs into ``<train.output_dir>_<scaling>``."""
    sched = [dataclasses.replace(s, rope_theta=0.0, rope_scaling=scaling, rope_scaling_factor=s.seq_length / short,
                                 rope_original_max_position=short) for s in lc_cfg.long_context.schedule]
    train = dataclasses.replace(lc_cfg.train, output_dir=f"{lc_cfg.train.output_dir.rstrip('/')}_{scaling}")
    return dataclasses.replace(lc_cfg, train=train, long_context=dataclasses.replace(lc_cfg.long_context,
                                                                                     schedule=sched))


def _mean_acc(pk, length) -> float:
    """Passkey accuracy at ``length``, mean over depths (fraction; keys are strings once read from JSON)."""
    table = pk["mean_accuracy"]
    return float(table[length] if length in table else table[str(length)])


def _mean_lp(pk, length):
    i = pk["lengths"].index(length)
    return sum(pk["logprob"][i]) / len(pk["logprob"][i])


def render_table(res: dict) -> str:
    """The before/after markdown block of docs/long_context.md from ``demo_results.json``."""
    b, a, t = res["passkey_before"], res["passkey_after"], res["timings_s"]
    short, long_len = b["lengths"][0], res["long_length"]
    acc = _mean_acc
    load = f"~{res['load_average']:.0f}" if "load_average" in res else "~6"
    evals = t["eval_before_s"] + t["eval_after_s"] + t.get("eval_scaling_s", 0.0)
    variants = (f", NTK / YaRN extensions {t['scaling_extension_s']:.0f} s" if "scaling_extension_s" in t else "")
    return "\n".join([
        f"Schedule: {res['schedule']}. Measured on this 2-core CPU machine (shared with other jobs, load average "
        f"{load} at the end), wall time of the whole demo {res['total_s'] / 60:.1f} min (pretrain "
        f"{t['pretrain_s']:.0f} s, extension {t['extend_s']:.0f} s, evaluations {evals:.0f} s{variants}; rest = "
        f"data preparation and start-up).",
        "",
        f"| model | passkey acc @ {short} | passkey acc @ {long_len} (4x) | answer log-prob @ {short} | "
        f"answer log-prob @ {long_len} | held-out loss @ {long_len} |",
        "|---|---:|---:|---:|---:|---:|",
        f"| before (pretrained at {short}) | {acc(b, short):.2f} | {acc(b, long_len):.2f} | "
        f"{_mean_lp(b, short):.2f} | {_mean_lp(b, long_len):.2f} | {res['heldout_loss_before']:.3f} |",
        f"| after (extended to {res['sub_stages'][-1]['seq_length']}) | {acc(a, short):.2f} | "
        f"{acc(a, long_len):.2f} | {_mean_lp(a, short):.2f} | {_mean_lp(a, long_len):.2f} | "
        f"{res['heldout_loss_after']:.3f} |",
    ] + [
        f"| pretrained + {name} x4, no training | {acc(r['passkey'], short):.2f} | {acc(r['passkey'], long_len):.2f} | "
        f"{_mean_lp(r['passkey'], short):.2f} | {_mean_lp(r['passkey'], long_len):.2f} | {r['heldout_loss']:.3f} |"
        for name, r in res.get("scaling_rows", {}).items()
    ] + [
        f"| extended with {name} instead (base {res.get('pretrain_rope_theta', 'kept')}, same steps) | "
        f"{acc(r['passkey'], short):.2f} | {acc(r['passkey'], long_len):.2f} | "
        f"{_mean_lp(r['passkey'], short):.2f} | {_mean_lp(r['passkey'], long_len):.2f} | {r['heldout_loss']:.3f} |"
        for name, r in res.get("scaling_extension_rows", {}).items()
    ] + [
        "",
        f"Passkey accuracy = exact greedy match of all answer tokens, mean over 5 depths x {res['trials']} random "
        f"keys; answer log-prob = summed log-probability of the answer tokens (space, '#', the 4-5 digits; guessing 5 "
        f"uniform digits gives 5 ln(1/10) = -11.5). Per depth (0, .25, .5, .75, 1) at {long_len}: accuracy "
        f"before " + ", ".join(f"{x:.1f}" for x in b["accuracy"][-1]) + ", after " +
        ", ".join(f"{x:.1f}" for x in a["accuracy"][-1]) + "; log-prob before " +
        ", ".join(f"{x:.1f}" for x in b["logprob"][-1]) + ", after " + ", ".join(f"{x:.1f}" for x in a["logprob"][-1])
        + ". Held-out loss = LM loss on Shakespeare validation scenes packed at " + f"{long_len} tokens.",
    ])


def write_doc(doc: str, table: str) -> None:
    if doc and os.path.isfile(doc):
        text = open(doc, encoding="utf-8").read()
        if START in text and END in text:
            text = text[: text.index(START) + len(START)] + "\n" + table + "\n" + text[text.index(END):]
            with open(doc, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"[demo] table written to {doc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(ROOT, "yaml/tiny_cpu_long_context.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--fresh", action="store_true", help="delete the demo's runs, prepared data and passkey corpora first")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs/long_context.md"),
                    help="markdown file whose DEMO block receives the table ('' = do not write)")
    ap.add_argument("--out", default="",
                    help="put the demo's runs under DIR (DIR/pretrain, DIR/long_context) and write DIR/results.json")
    ap.add_argument("--no-scaling-rows", action="store_true",
                    help="skip the NTK / YaRN comparisons (the pretrained model at 4x with RoPE scaling)")
    ap.add_argument("--scaling-extension", action="store_true",
                    help="also run the extension with NTK-aware and with YaRN RoPE scaling (pretraining base kept) "
                         "and evaluate both (~7 more minutes)")
    ap.add_argument("--report-only", action="store_true",
                    help="only re-render the docs table from the last run's demo_results.json")
    args = ap.parse_args(argv)
    if args.out:
        out = os.path.abspath(args.out)
        args.overrides += [f"train.output_dir={out}/long_context", f"stage.init_from={out}/pretrain"]
    t_start = time.perf_counter()
    os.chdir(ROOT)
    if args.report_only:
        from pangu_ms.config import load_config
        out = load_config(args.config, args.overrides).train.output_dir
        with open(os.path.join(out, "demo_results.json"), encoding="utf-8") as f:
            table = render_table(json.load(f))
        print(table)
        write_doc(args.doc, table)
        return 0
    import mindspore as ms
    ms.set_device("CPU")
    from pangu_ms.config import load_config
    from pangu_ms.data import load_tokenizer
    from pangu_ms.eval.passkey import format_table, plot_heatmap, write_passkey_corpus
    from pangu_ms.train.long_context import resolve_checkpoint, run_long_context, sub_stage_config
    from pangu_ms.parallel.runtime import Runtime
    from pangu_ms.train.loop import Trainer

    def log(m):
        print(m, flush=True)

    lc_cfg = load_config(args.config, args.overrides)
    pre_cfg = load_config(args.config, args.overrides + ["stage.name=pretrain", "stage.init_from=",
                                                         f"train.output_dir={lc_cfg.stage.init_from}"])
    lens = [pre_cfg.train.seq_length] + [s.seq_length for s in lc_cfg.long_context.schedule]
    if args.fresh:       # the demo's runs, its prepared data and passkey corpora (everything is rebuilt)
        data_dirs = [pre_cfg.data.path] + [f"{pre_cfg.data.path.rstrip('/')}_s{L}" for L in lens[1:]] + \
            [s.data_path for s in lc_cfg.long_context.schedule if s.data_path]
        variant_dirs = [scaled_schedule(lc_cfg, n, lens[0]).train.output_dir for n in SCALINGS]
        for d in [lc_cfg.train.output_dir, lc_cfg.stage.init_from] + variant_dirs + data_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for L in lens:
            p = os.path.join("data", "passkey", f"passkey_s{L}.jsonl")
            if os.path.isfile(p):
                os.remove(p)
    # 1. passkey corpora, one per length of the recipe
    for L in lens:
        lo, hi = PASSKEY_DOCS.get(L, (int(0.3 * L), int(0.93 * L)))
        path = os.path.join("data", "passkey", f"passkey_s{L}.jsonl")
        if not os.path.isfile(path):
            write_passkey_corpus(path, n=4000 if L <= 256 else 2000, min_tokens=lo, max_tokens=hi, seed=L,
                                 max_reminders=PASSKEY_REMINDERS.get(L, 0), far_fraction=PASSKEY_FAR_FRACTION)
    timings = {}
    # 2. pretraining at the short length
    t0 = time.perf_counter()
    pre = Trainer(pre_cfg, runtime=Runtime.single_process(), progress=False).train()
    timings["pretrain_s"] = time.perf_counter() - t0
    short, long_len = pre_cfg.train.seq_length, 4 * pre_cfg.train.seq_length
    tok = load_tokenizer(os.path.join(pre_cfg.data.path, "tokenizer.json"))
    # data packed at 4x (the extension's own data when the schedule reaches it) for the held-out loss
    idx = [i for i, s in enumerate(lc_cfg.long_context.schedule) if s.seq_length == long_len]
    long_data_cfg = sub_stage_config(lc_cfg, idx[0] if idx else len(lc_cfg.long_context.schedule) - 1)
    if not idx:
        long_data_cfg = dataclasses.replace(long_data_cfg, train=dataclasses.replace(
            long_data_cfg.train, seq_length=long_len), data=dataclasses.replace(
            long_data_cfg.data, path=f"{pre_cfg.data.path}_s{long_len}"))
    from pangu_ms.data.prepare import ensure_prepared
    long_data = ensure_prepared(long_data_cfg)
    # 3. before
    t0 = time.perf_counter()
    before_ckpt = resolve_checkpoint(pre_cfg.train.output_dir)
    pk_before, loss_before = evaluate(pre_cfg, before_ckpt, [short, long_len], long_len, long_data, args.trials,
                                      tok, log)
    timings["eval_before_s"] = time.perf_counter() - t0
    # 3b. comparisons: the same pretrained weights at 4x with NTK-aware / YaRN RoPE scaling, no training
    scaling_rows = {}
    if not args.no_scaling_rows:
        t0 = time.perf_counter()
        for name, label in SCALINGS.items():
            cfg_s = scaled_config(pre_cfg, name, float(long_len // short), short)
            pk, loss = evaluate(cfg_s, before_ckpt, [short, long_len], long_len, long_data, args.trials, tok, log)
            scaling_rows[label] = {"passkey": pk, "heldout_loss": loss}
        timings["eval_scaling_s"] = time.perf_counter() - t0
    # 4. extension
    t0 = time.perf_counter()
    summary = run_long_context(lc_cfg, progress=False)
    timings["extend_s"] = time.perf_counter() - t0
    # 5. after
    t0 = time.perf_counter()
    last_cfg = sub_stage_config(lc_cfg, len(lc_cfg.long_context.schedule) - 1)
    after_ckpt = resolve_checkpoint(last_cfg.train.output_dir)
    pk_after, loss_after = evaluate(last_cfg, after_ckpt, [short, long_len], long_len, long_data, args.trials,
                                    tok, log)
    timings["eval_after_s"] = time.perf_counter() - t0
    # 5b. comparisons: the same extension schedule with NTK / YaRN scaling instead of the raised base
    extended_rows = {}
    if args.scaling_extension:
        t0 = time.perf_counter()
        for name, label in SCALINGS.items():
            var_cfg = scaled_schedule(lc_cfg, name, short)
            run_long_context(var_cfg, progress=False)
            var_last = sub_stage_config(var_cfg, len(var_cfg.long_context.schedule) - 1)
            pk, loss = evaluate(var_last, resolve_checkpoint(var_last.train.output_dir), [short, long_len], long_len,
                                long_data, args.trials, tok, log)
            extended_rows[label] = {"passkey": pk, "heldout_loss": loss}
        timings["scaling_extension_s"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    out_dir = lc_cfg.train.output_dir
    os.makedirs(out_dir, exist_ok=True)
    plot_heatmap(pk_before, os.path.join(out_dir, "passkey_before.png"),
                 f"before: trained at {short}, theta {pre_cfg.model.rope_theta:g}")
    plot_heatmap(pk_after, os.path.join(out_dir, "passkey_after.png"),
                 f"after: extended to {last_cfg.train.seq_length}, theta {last_cfg.model.rope_theta:g}")
    sched = " -> ".join([f"{short} (theta {pre_cfg.model.rope_theta:g})"] +
                        [f"{s.seq_length} (theta {s.rope_theta:g}, {s.steps} steps)"
                         for s in lc_cfg.long_context.schedule])
    res = {"schedule": sched, "passkey_before": pk_before, "passkey_after": pk_after,
           "heldout_loss_before": loss_before, "heldout_loss_after": loss_after, "long_length": long_len,
           "pretrain_valid_loss": pre.get("valid_loss"),
           "pretrain_rope_theta": f"{pre_cfg.model.rope_theta:g}", "timings_s": timings, "total_s": total,
           "trials": args.trials, "scaling_rows": scaling_rows, "scaling_extension_rows": extended_rows, "sub_stages": [{k: v for k, v in s.items() if k != "losses"}
                                                 for s in summary["sub_stages"]]}
    res.update(acc_train_len=_mean_acc(pk_before, short), acc_4x_before=_mean_acc(pk_before, long_len),
               acc_4x_after=_mean_acc(pk_after, long_len), load_average=os.getloadavg()[0],
               **{f"acc_4x_{k.lower()}_no_training": _mean_acc(v["passkey"], long_len)
                  for k, v in scaling_rows.items()},
               **{f"acc_4x_after_{k.lower()}_extension": _mean_acc(v["passkey"], long_len)
                  for k, v in extended_rows.items()})
    with open(os.path.join(out_dir, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    if args.out:
        for name in ("passkey_before.png", "passkey_after.png"):
            shutil.copy(os.path.join(out_dir, name), os.path.join(args.out, name))
        with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
            json.dump({k: res[k] for k in ("acc_train_len", "acc_4x_before", "acc_4x_after", "schedule", "total_s")
                       + tuple(k for k in res if k.endswith(("_no_training", "_extension")))}, f, indent=1)
    table = render_table(res)
    print("\n" + format_table(pk_before, "before:") + "\n\n" + format_table(pk_after, "after:") + "\n\n" + table)
    write_doc(args.doc, table)
    print(f"[demo] total {total:.0f} s; results {os.path.join(out_dir, 'demo_results.json')}")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
