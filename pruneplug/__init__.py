"""pruneplug: PyTorch pruning in which every strategy is a plugin.

The public API lives here and only here::

    import pruneplug
    pruneplug.prune(model.conv1, "weight", "ln_structured", amount=0.5, n=2, dim=0)
    pruneplug.prune_global([(model.fc1, "weight"), (model.fc2, "weight")], "l1_unstructured", amount=0.2)
    pruneplug.remove(model)

For code written against ``torch.nn.utils.prune``, :mod:`pruneplug.compat`
is a drop-in replacement.
"""

from __future__ import annotations

from ._api import (
    compute_mask as compute_mask,
)
from ._api import (
    get_strategy as get_strategy,
)
from ._api import (
    is_pruned as is_pruned,
)
from ._api import (
    list_strategies as list_strategies,
)
from ._api import (
    prune as prune,
)
from ._api import (
    prune_global as prune_global,
)
from ._api import (
    pruning_history as pruning_history,
)
from ._api import (
    register as register,
)
from ._api import (
    registered as registered,
)
from ._api import (
    remove as remove,
)
from ._api import (
    unregister as unregister,
)
from ._container import PruningContainer as PruningContainer
from ._errors import (
    IncompatibleStrategyError as IncompatibleStrategyError,
)
from ._errors import (
    InvalidAmountError as InvalidAmountError,
)
from ._errors import (
    InvalidDimError as InvalidDimError,
)
from ._errors import (
    InvalidImportanceScoresError as InvalidImportanceScoresError,
)
from ._errors import (
    InvalidMaskError as InvalidMaskError,
)
from ._errors import (
    InvalidParametersError as InvalidParametersError,
)
from ._errors import (
    InvalidTargetError as InvalidTargetError,
)
from ._errors import (
    NotPrunedError as NotPrunedError,
)
from ._errors import (
    PruneplugError as PruneplugError,
)
from ._errors import (
    PruningStateError as PruningStateError,
)
from ._errors import (
    StrategyConflictError as StrategyConflictError,
)
from ._errors import (
    StrategyFailedError as StrategyFailedError,
)
from ._errors import (
    StrategyNotFoundError as StrategyNotFoundError,
)
from ._errors import (
    TensorNotFoundError as TensorNotFoundError,
)
from ._method import BasePruningMethod as BasePruningMethod
from ._params import StrategyParams as StrategyParams
from ._registry import (
    PluginInfo as PluginInfo,
)
from ._registry import (
    PluginLoadWarning as PluginLoadWarning,
)
from ._registry import (
    Registry as Registry,
)
from ._registry import (
    StrategySpec as StrategySpec,
)
from ._registry import (
    get_registry as get_registry,
)
from ._registry import (
    strategy_spec as strategy_spec,
)
from ._registry import (
    use_registry as use_registry,
)
from ._state_dict import load_pruned_state_dict as load_pruned_state_dict
from .hookspecs import hookimpl as hookimpl
from .strategies import StructuredStrategy as StructuredStrategy
from .strategies import UnstructuredStrategy as UnstructuredStrategy

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # pruning
    "prune",
    "prune_global",
    "remove",
    "is_pruned",
    "compute_mask",
    "pruning_history",
    "load_pruned_state_dict",
    # strategies and the registry
    "list_strategies",
    "get_strategy",
    "register",
    "unregister",
    "registered",
    "hookimpl",
    "BasePruningMethod",
    "PruningContainer",
    "UnstructuredStrategy",
    "StructuredStrategy",
    "StrategyParams",
    "StrategySpec",
    "strategy_spec",
    "Registry",
    "PluginInfo",
    "PluginLoadWarning",
    "get_registry",
    "use_registry",
    # errors
    "PruneplugError",
    "InvalidAmountError",
    "InvalidParametersError",
    "InvalidDimError",
    "InvalidImportanceScoresError",
    "InvalidMaskError",
    "InvalidTargetError",
    "TensorNotFoundError",
    "NotPrunedError",
    "StrategyNotFoundError",
    "StrategyConflictError",
    "IncompatibleStrategyError",
    "StrategyFailedError",
    "PruningStateError",
]
