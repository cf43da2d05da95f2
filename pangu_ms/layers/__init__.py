"""Building blocks shared by the dense model and the MoE layer (below both in the import order:
config <- layers <- model / moe): the bias-free ``Linear``, the SwiGLU MLP and the seeded ``Initializer``."""
from .init import Initializer  # noqa: F401
from .linear import Linear  # noqa: F401
from .mlp import SwiGLUMLP  # noqa: F401
