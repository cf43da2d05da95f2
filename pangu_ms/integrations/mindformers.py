"""pangu_ms inside MindFormers: registered config, model and CPU training wrapper, plus the CPU shims.

Importing this module registers with ``MindFormerRegister``:

* ``PanguMoEConfig`` (CONFIG): ``recipe`` (a pangu_ms recipe YAML) + ``overrides`` (``key.path=value`` strings);
  the typed pangu_ms config is rebuilt from them, so one recipe drives both the pangu_ms loop and the Trainer.
  ``long_context_stage`` (a sub-stage name of a long_context recipe) builds the model of that sub-stage (its
  length, RoPE base / scaling, attention chunk: ``pangu_ms.train.long_context.sub_stage_config``) and
  ``init_from`` (default: that sub-stage's ``stage.init_from``) loads a pangu_ms checkpoint into it, so the
  Trainer continues from a pangu_ms pretraining run (yaml/mindformers/tiny_cpu_long_context_trainer.yaml).
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

from ..config import ConfigError, load_config  # noqa: E402
from ..model import CausalLMLoss, build_model  # noqa: E402
from ..train.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: E402
from ..train.long_context import sub_stage_config  # noqa: E402


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class PanguMoEConfig(PretrainedConfig):
    """MindFormers view of a pangu_ms recipe. Extra keys the Trainer passes (parallel_config, batch_size, ...)
    are accepted and ignored: the recipe is the source of truth for the model."""

    model_type = "pangu_ms_moe"

    def __init__(self, recipe: str = "yaml/tiny_cpu.yaml", overrides=None, long_context_stage: str = "",
                 init_from: str = "", **kwargs):
        super().__init__(**kwargs)
        self.recipe = recipe
        self.overrides = list(overrides or [])
        self.long_context_stage = long_context_stage
        self.init_from = init_from

    def to_pangu(self):
        """The pangu_ms Config: the recipe, or its long-context sub-stage ``long_context_stage``."""
        cfg = load_config(self.recipe, self.overrides)
        if not self.long_context_stage:
            return cfg
        names = [st.name for st in cfg.long_context.schedule]
        if self.long_context_stage not in names:
            raise ConfigError(f"model.model_config.long_context_stage: {self.long_context_stage!r} is not a "
                              f"sub-stage of {self.recipe} (long_context.schedule names: {names})")
        return sub_stage_config(cfg, names.index(self.long_context_stage))

    def checkpoint_to_load(self, cfg) -> str:
        """``init_from``, else the sub-stage's ``stage.init_from`` ('' = start from the seeded init)."""
        path = self.init_from or (cfg.stage.init_from if self.long_context_stage else "")
        return resolve_checkpoint(path, "model.model_config.init_from") if path else ""


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class PanguMoEForCausalLM(PreTrainedModel):
    config_class = PanguMoEConfig
    base_model_prefix = "pangu"

    def __init__(self, config: PanguMoEConfig = None):
        config = config or PanguMoEConfig()
        super().__init__(config)
        recipe = config.to_pangu()
        model = build_model(recipe)
        checkpoint = config.checkpoint_to_load(recipe)
        if checkpoint:
            load_checkpoint(model, checkpoint)
            print(f"[pangu_ms] initialised weights from {checkpoint}", flush=True)
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
