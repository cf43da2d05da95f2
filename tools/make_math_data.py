#!/usr/bin/env python
"""Write the arithmetic post-training task (pangu_ms/rl/tasks.py) as jsonl files plus its tokenizer.

    python tools/make_math_data.py --out data/math [--max-a 100] [--max-b 10] [--mul-max 0] [--heldout 0.1] [--seed 0]

Writes into --out:
    pretrain.jsonl   {"text"}: documents of 16 solved training problems "a+b=c" one per line (for stage pretrain)
    sft_train.jsonl  {"id", "capability", "prompt", "answer", "response"} for every training problem
    sft_valid.jsonl  the same for the held-out problems (SFT validation loss only; never trained on)
    rl_train.jsonl   training problems (RL prompts)
    heldout.jsonl    held-out problems (RL before/after evaluation)
    tokenizer/       byte-level BPE with single-digit pre-tokenization (tokenizer.json)
    split.json       generator settings, seed and counts
"""
import argparse
import json
import os
import sys



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/math")
    ap.add_argument("--max-a", type=int, default=100, help="add/sub first operand in [0, N)")
    ap.add_argument("--max-b", type=int, default=10, help="add/sub second operand in [0, N)")
    ap.add_argument("--mul-max", type=int, default=0, help="mul operands in [0, N) (0: no mul problems)")
    ap.add_argument("--heldout", type=float, default=0.1, help="held-out fraction per capability")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-docs", type=int, default=4000)
    ap.add_argument("--vocab-size", type=int, default=512, help="upper bound of the tokenizer's vocabulary")
    args = ap.parse_args(argv)

    import numpy as np

    from pangu_ms.data.chat import render_prompt
    from pangu_ms.rl.tasks import all_problems, split_problems, train_digit_tokenizer, write_jsonl
    train, held = split_problems(all_problems(args.max_a, args.max_b, args.mul_max), args.heldout, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    docs = []
    for _ in range(args.pretrain_docs):
        pick = rng.choice(len(train), 16, replace=False)
        docs.append({"text": "\n".join(f"{train[i]['prompt']}{train[i]['answer']}" for i in pick)})
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "pretrain.jsonl"), docs)
    sft = lambda ps: [{**p, "response": str(p["answer"])} for p in ps]  # noqa: E731
    write_jsonl(os.path.join(args.out, "sft_train.jsonl"), sft(train))
    write_jsonl(os.path.join(args.out, "sft_valid.jsonl"), sft(held))
    write_jsonl(os.path.join(args.out, "rl_train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "heldout.jsonl"), held)
    texts = [d["text"] for d in docs] + [render_prompt(p["prompt"]) + str(p["answer"]) for p in train]
    tok = train_digit_tokenizer(texts, args.vocab_size)
    tok.save(os.path.join(args.out, "tokenizer"))
    counts = {c: {"train": sum(p["capability"] == c for p in train), "heldout": sum(p["capability"] == c for p in held)}
              for c in sorted({p["capability"] for p in train + held})}
    info = {"generator": "pangu_ms.rl.tasks (own)", "max_a": args.max_a, "max_b": args.max_b, "mul_max": args.mul_max,
            "heldout_fraction": args.heldout, "seed": args.seed, "train": len(train), "heldout": len(held),
            "by_capability": counts, "tokenizer_vocab": tok.vocab_size, "pretrain_docs": len(docs)}
    with open(os.path.join(args.out, "split.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
