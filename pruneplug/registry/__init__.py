"""Layer 4: the strategy registry -- describing strategies, loading plugins, looking strategies up.

* :mod:`.spec` -- :class:`StrategySpec` and :func:`strategy_spec`: what is known about one strategy,
  its deprecated names included (:class:`StrategyDeprecationWarning`); :func:`model_parameters`, the
  parameters of a pydantic model (a strategy's, a schedule's) for tables;
* :mod:`.plugins` -- entry-point plugins, the switches that skip them, :class:`PluginInfo`;
* :mod:`.claims` -- who gets a name (a strategy's own or deprecated name, a score's) when plugins clash;
* :mod:`.manager` -- :class:`~.manager.StrategyRegistry`: the pluggy manager, name clashes, lookup and
  registration, with the built-in plugin it is given; also importance scores, calibration statistics
  and pruning schedules by name;
* :mod:`.default` -- :class:`Registry`, with pruneplug's strategies and schedules as the built-ins, and the default
  registry the public API uses (:func:`get_registry`, :func:`use_registry`); the only module here
  that imports :mod:`pruneplug.strategies`.

Internal: the public names are exported by :mod:`pruneplug`.
"""

from .default import Registry as Registry, get_registry as get_registry, use_registry as use_registry
from .manager import StrategyRegistry as StrategyRegistry
from .plugins import (
    BLOCK_PLUGINS_ENV as BLOCK_PLUGINS_ENV,
    DISABLE_AUTOLOAD_ENV as DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP as ENTRY_POINT_GROUP,
    PLUGINS_ENV as PLUGINS_ENV,
    PluginInfo as PluginInfo,
    PluginLoadWarning as PluginLoadWarning,
)
from .spec import (
    BUILTIN_PLUGIN as BUILTIN_PLUGIN,
    KIND_DESCRIPTIONS as KIND_DESCRIPTIONS,
    KINDS as KINDS,
    ParameterInfo as ParameterInfo,
    StrategyDeprecationWarning as StrategyDeprecationWarning,
    StrategySpec as StrategySpec,
    model_parameters as model_parameters,
    strategy_spec as strategy_spec,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_AUTOLOAD_ENV",
    "BLOCK_PLUGINS_ENV",
    "PLUGINS_ENV",
    "BUILTIN_PLUGIN",
    "KINDS",
    "KIND_DESCRIPTIONS",
    "PluginLoadWarning",
    "PluginInfo",
    "ParameterInfo",
    "StrategySpec",
    "StrategyDeprecationWarning",
    "Registry",
    "StrategyRegistry",
    "strategy_spec",
    "model_parameters",
    "get_registry",
    "use_registry",
]
