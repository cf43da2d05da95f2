"""The math of pangu_ms as MindSpore Cells (no collectives, no shard strategies here): the model returns logits
and MoE side outputs; the loss Cells of ``loss.py`` turn them into the training objective."""
from .attention import AttentionOptions  # noqa: F401
from .build import attention_options, build_model  # noqa: F401
from .loss import CausalLMLoss, CrossEntropy  # noqa: F401
from .transformer import DecoderLayer, PanguForCausalLM, model_dtype  # noqa: F401
