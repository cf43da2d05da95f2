"""Performance simulator: time, memory and MFU of a recipe + parallel layout on a hardware profile, and a
co-design search over model shapes x layouts. Entry points: :func:`estimate`, :mod:`.search`,
``tools/simulate.py``. Model FLOPs and parameters come from ``pangu_ms.model.stats`` (the one counter)."""
from .estimate import Estimate, Simulator, estimate  # noqa: F401
from .hardware import HardwareProfile, load_hardware  # noqa: F401
from .layout import LayoutError, resolve_layout  # noqa: F401
