"""Importing MindFormers safely: its import writes ``./output/log`` into the current directory and its first
``get_context`` call silently switches MindSpore to PyNative unless ``build_context`` ran. ``ensure_mindformers``
routes the logs to ``log_dir`` and calls ``build_context`` for CPU graph mode once."""
from __future__ import annotations

import os

_READY = False


def ensure_mindformers(log_dir: str | None = None, mode: int = 0) -> None:
    global _READY
    if _READY:
        return
    os.environ.setdefault("LOCAL_DEFAULT_PATH", os.path.abspath(log_dir or os.path.join("output", "mindformers")))
    import mindspore as ms
    from mindformers import build_context
    dev = ms.get_context("device_target")
    build_context({"context": {"mode": mode, "device_target": dev}, "parallel": {}, "run_mode": "train",
                   "use_parallel": False})
    _READY = True
