"""One top-level handler for every command-line entry point (``run/train.py``, ``tools/*.py``).

``sys.exit(run_cli(main))`` runs ``main()``; a user-input problem -- :class:`ConfigError`, :class:`DataError`, or
an input error type of a module the command has already imported (:data:`LAZY_INPUT_ERRORS`, e.g. the checkpoint
manager's, whose module imports MindSpore) -- is printed as the single line ``error: <message>`` on stderr and
the process exits with status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

from .config.errors import ConfigError
from .data.errors import DataError

INPUT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError)
# "module:ClassName" of input errors whose modules are too heavy to import here; they count once imported.
LAZY_INPUT_ERRORS = ("pangu_ms.train.checkpoint:CheckpointError", "pangu_ms.interop.errors:ConversionError")
EXIT_BAD_INPUT = 2


def input_error_types() -> tuple[type[BaseException], ...]:
    found = []
    for spec in LAZY_INPUT_ERRORS:
        module, name = spec.split(":")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return INPUT_ERRORS + tuple(found)


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (a multi-line message is joined with ' | ')."""
    text = " | ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"error: {text or type(exc).__name__}"


def run_cli(main: Callable[..., int | None], *args, **kwargs) -> int:
    """Exit status of ``main(*args, **kwargs)`` (None counts as 0); bad input -> one error line, status 2."""
    try:
        status = main(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- filtered just below, everything else re-raised
        if not isinstance(exc, input_error_types()):
            raise
        print(error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if status is None else int(status)


def _console(module: str) -> Callable[[], int]:
    """A console-script entry (pyproject.toml ``[project.scripts]``): ``module.main()`` under :func:`run_cli`.
    The module is named as a string and imported when the command runs (the tools sit above this module)."""
    def entry() -> int:
        import importlib
        return run_cli(importlib.import_module(module).main)
    entry.__name__ = module.rsplit(".", 1)[-1]
    return entry


train = _console("pangu_ms.run.train")
simulate = _console("pangu_ms.tools.simulate")
model_stats = _console("pangu_ms.tools.model_stats")
show_plan = _console("pangu_ms.tools.show_plan")
preprocess_data = _console("pangu_ms.tools.preprocess_data")
plot_run = _console("pangu_ms.tools.plot_run")
bench = _console("pangu_ms.tools.bench")
eval_passkey = _console("pangu_ms.tools.eval_passkey")
convert_ckpt = _console("pangu_ms.tools.convert_ckpt")
