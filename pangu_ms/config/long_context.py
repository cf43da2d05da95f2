"""Long-context extension section of the recipe (``long_context:``), used when ``stage.name: long_context``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LongContextConfig:
    """Long-context extension (filled in by the long-context stage).

    Attributes:
        attention_chunk: query-chunk size of the memory-aware CPU attention (0 = full attention).
    """

    attention_chunk: int = 0
