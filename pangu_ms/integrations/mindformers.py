"""pangu_ms inside MindFormers: registered config, model and CPU training wrapper, plus the CPU shims.

Importing this module registers with ``MindFormerRegister``:

* ``PanguMoEConfig`` (CONFIG): ``recipe`` (a pangu_ms recipe YAML) + ``overrides`` (``key.path=value`` strings);
  the typed pangu_ms config is rebuilt from them, so one recipe drives both the pangu_ms loop and the Trainer.
* ``PanguMoEForCausalLM`` (MODELS): legacy-model contract ``construct(input_ids [B, S+1]) -> scalar loss``.
* ``PanguCPUTrainOneStepCell`` (WRAPPER): ``MFTrainOneStepCell`` with its Ascend-only overflow check
  (``NPUGetFloatStatusV2``, no CPU kernel) replaced by an IsFinite check, and a ``pangu_grad_reducer`` hook so the
  explicit data/expert-parallel gradient reduction of ``pangu_ms.parallel`` can replace the identity reducer.

Gaps of MindFormers 1.9 on CPU that pangu_ms fills (measured, see shared docs):
* gradient accumulation is silently disabled outside semi-auto parallel -> use the pangu_ms loop
  (``run/train.py`` with a pangu_ms recipe), whose ``TrainStep(..., accumulate=True)`` really accumulates;
* ``comm_func.barrier`` has no CPU kernel, which breaks resume under msrun -> :func:`install_cpu_shims` routes
  MindFormers' barriers to ``mint.distributed.barrier``.
"""
from __future__ import annotations

import os

from ..train.mf import ensure_mindformers

ensure_mindformers()

import mindspore as ms  # noqa: E402
from mindformers.models.configuration_utils import PretrainedConfig  # noqa: E402
from mindformers.models.modeling_utils import PreTrainedModel  # noqa: E402
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister  # noqa: E402
from mindformers.wrapper.wrapper import MFTrainOneStepCell  # noqa: E402
from mindspore.nn.wrap.loss_scale import _ascend_grad_overflow  # noqa: E402

from ..config import load_config  # noqa: E402
from ..model import CausalLMLoss, build_model  # noqa: E402


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class PanguMoEConfig(PretrainedConfig):
    """MindFormers view of a pangu_ms recipe. Extra keys the Trainer passes (parallel_config, batch_size, ...)
    are accepted and ignored: the recipe is the source of truth for the model."""

    model_type = "pangu_ms_moe"

    def __init__(self, recipe: str = "yaml/tiny_cpu.yaml", overrides=None, **kwargs):
        super().__init__(**kwargs)
        self.recipe = recipe
        self.overrides = list(overrides or [])

    def to_pangu(self):
        return load_config(self.recipe, self.overrides)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class PanguMoEForCausalLM(PreTrainedModel):
    config_class = PanguMoEConfig
    base_model_prefix = "pangu"

    def __init__(self, config: PanguMoEConfig = None):
        config = config or PanguMoEConfig()
        super().__init__(config)
        recipe = config.to_pangu()
        model = build_model(recipe)
        # the loss Cell first, the model last: this Cell prefixes parameter names with the attribute path, and
        # the last assignment sets them, so they stay ``pangu.<model name>`` as with the bare model
        self.loss = CausalLMLoss(model, recipe.model.mtp_loss_weight)
        self.pangu = model

    def construct(self, input_ids):
        return self.loss(input_ids[:, :-1], input_ids[:, 1:])[0]


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class PanguCPUTrainOneStepCell(MFTrainOneStepCell):
    def __init__(self, *args, pangu_grad_reducer=None, **kwargs):
        super().__init__(*args, **kwargs)
        if pangu_grad_reducer is not None:
            self.set_grad_reducer(pangu_grad_reducer)

    def set_grad_reducer(self, reducer) -> None:
        """Plug a gradient-reduction Cell (tuple of grads -> tuple) in place of MindFormers' reducer."""
        self.grad_reducer = reducer

    def start_overflow_check(self, pre_cond, compute_input):
        return ms.Tensor([0] * 8, ms.int32), compute_input

    def get_overflow_status(self, status, compute_output):
        return self._get_distributed_overflow_status_on_infnan_mode(_ascend_grad_overflow, compute_output)


def install_cpu_shims() -> None:
    """Route MindFormers' ``comm_func.barrier`` calls to ``mint.distributed.barrier`` (CPU has no Barrier
    kernel; needed for checkpoint resume under msrun). Idempotent."""
    from mindspore import mint

    def cpu_barrier(*_args, **_kwargs):
        mint.distributed.barrier()

    import mindformers.trainer.utils as tu
    import mindformers.utils.load_checkpoint_utils as lcu
    import mindformers.version_control as vc
    from mindspore.communication import comm_func
    import mindformers.core.callback.callback as cb
    for mod in (comm_func, tu, lcu, vc, cb):
        if hasattr(mod, "barrier"):
            mod.barrier = cpu_barrier


def train_with_mindformers(yaml_path: str, output_dir: str | None = None) -> None:
    """Run ``mindformers.Trainer`` on a MindFormers-style YAML that names the registered classes."""
    from mindformers import MindFormerConfig, Trainer, build_context
    from mindformers.utils.file_utils import set_output_path
    cfg = MindFormerConfig(yaml_path)
    if output_dir:
        cfg.output_dir = output_dir
    set_output_path(cfg.output_dir)
    build_context(cfg)
    if os.environ.get("MS_ROLE"):
        install_cpu_shims()
    Trainer(cfg).train()
