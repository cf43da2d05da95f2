#!/usr/bin/env python
"""Preprocess text into packed MindRecord shards for pangu_ms pretraining.

    python tools/preprocess_data.py --corpus shakespeare --out data/shakespeare --seq-len 64 --vocab-size 512

Run with --help for all options.  The pipeline lives in ``pangu_ms/data/preprocess.py``; its module
docstring describes the output directory (MindRecord files per corpus and split, tokenizer, meta.json).
Errors in the arguments or inputs are reported as one ``error: ...`` line with exit status 2, before any
long work starts.
"""

import os
import sys

os.environ.setdefault("GLOG_v", "3")  # MindSpore (used for MindRecord writing): errors only

from pangu_ms.data.preprocess import main  # noqa: E402

if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
