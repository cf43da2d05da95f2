"""Read a run's ``metrics.jsonl`` (one JSON object per line, written by ``pangu_ms/train/logging.py``)."""
from __future__ import annotations

import json


def read_metrics(path: str, error: type[Exception] = ValueError) -> list[dict]:
    """The records of ``path`` in file order (blank lines skipped); a line that is not JSON raises ``error``
    naming the file and line."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows
