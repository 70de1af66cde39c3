"""TOML configurations validated with pydantic: run configurations (:mod:`.run`: ``kernelfield
solve|sample|compare|phase-diagram|spectrum`` and the base of sweeps), generalisation studies
(:mod:`.study`) and their errors (:mod:`.errors`: :class:`ConfigError` naming the file and fields).
"""

from .errors import ConfigError, read_toml
from .run import Config, load_config, parse_config
from .study import GeneralizationConfig, load_generalization_config, parse_generalization_config

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "GeneralizationConfig",
           "load_generalization_config", "parse_generalization_config", "read_toml"]
