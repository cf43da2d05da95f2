"""Typed recipe configuration: schema, YAML loading with overrides, validation."""
from .schema import (Config, DataConfig, ModelConfig, MoEConfig, ParallelConfig, PhaseConfig,  # noqa: F401
                     StageConfig, TrainConfig)
from .errors import ConfigError  # noqa: F401
from .loader import dump_config, from_dict, load_config, parse_overrides, to_dict  # noqa: F401
from .validate import validate_config  # noqa: F401
