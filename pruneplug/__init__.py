"""pruneplug: PyTorch pruning in which every pruning strategy is a plugin.

The public API lives here and only here::

    import pruneplug
    pruneplug.prune(model.conv1, "weight", "ln_structured", amount=0.5, n=2, dim=0)
    pruneplug.prune_global([(model.fc1, "weight"), (model.fc2, "weight")], "l1_unstructured", amount=0.2)
    pruneplug.remove(model)

For code written against ``torch.nn.utils.prune``, :mod:`pruneplug.compat`
is a drop-in replacement.
"""

from __future__ import annotations

from . import _moved as _moved  # old module paths stay importable, for pickles made by 0.1.0
from .api import (
    compute_mask as compute_mask,
    get_strategy as get_strategy,
    is_pruned as is_pruned,
    list_strategies as list_strategies,
    make_schedule as make_schedule,
    prune as prune,
    prune_global as prune_global,
    pruning_history as pruning_history,
    refresh as refresh,
    register as register,
    registered as registered,
    remove as remove,
    unregister as unregister,
)
from .calibration import (
    CalibrationReport as CalibrationReport,
    owl_amounts as owl_amounts,
    prune_calibrated as prune_calibrated,
)
from .compaction import (
    ChannelGraph as ChannelGraph,
    ChannelGroup as ChannelGroup,
    CompactionReport as CompactionReport,
    compact as compact,
    count_macs as count_macs,
    count_params as count_params,
    load_compacted as load_compacted,
    prune_channels as prune_channels,
    trace_channels as trace_channels,
)
from .core.fast_path import (
    SelectsEntries as SelectsEntries,
    SelectsSlices as SelectsSlices,
    UpdatesValues as UpdatesValues,
)
from .core.method import BasePruningMethod as BasePruningMethod, PruningContainer as PruningContainer
from .core.packing import pack_masks as pack_masks, unpack_masks as unpack_masks
from .errors import (
    CalibrationBatchError as CalibrationBatchError,
    CalibrationBlockError as CalibrationBlockError,
    CalibrationError as CalibrationError,
    CalibrationLossError as CalibrationLossError,
    CalibrationRequiredError as CalibrationRequiredError,
    ChannelGraphWarning as ChannelGraphWarning,
    ChannelTraceError as ChannelTraceError,
    CompactionError as CompactionError,
    DistributedSelectionError as DistributedSelectionError,
    IncompatibleStrategyError as IncompatibleStrategyError,
    InvalidAmountError as InvalidAmountError,
    InvalidDimError as InvalidDimError,
    InvalidImportanceScoresError as InvalidImportanceScoresError,
    InvalidMaskError as InvalidMaskError,
    InvalidParametersError as InvalidParametersError,
    InvalidScheduleError as InvalidScheduleError,
    InvalidTargetError as InvalidTargetError,
    NotPrunedError as NotPrunedError,
    PackedMaskError as PackedMaskError,
    PruneplugError as PruneplugError,
    PruningStateError as PruningStateError,
    ScheduleNotFoundError as ScheduleNotFoundError,
    ScoreNotFoundError as ScoreNotFoundError,
    StatisticNotFoundError as StatisticNotFoundError,
    StrategyConflictError as StrategyConflictError,
    StrategyFailedError as StrategyFailedError,
    StrategyNotFoundError as StrategyNotFoundError,
    TensorNotFoundError as TensorNotFoundError,
    UnsupportedNormError as UnsupportedNormError,
)
from .hookspecs import hookimpl as hookimpl
from .io.checkpoints import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    CheckpointExistsError as CheckpointExistsError,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from .io.distributed_checkpoint import load_sharded as load_sharded, save_sharded as save_sharded
from .io.report import Report as Report, report as report, tensor_histories as tensor_histories
from .io.state_dict import load_pruned_state_dict as load_pruned_state_dict
from .params import StrategyParams as StrategyParams
from .plans import Plan as Plan, PlanError as PlanError, Rule as Rule, apply_plan as apply_plan, load_plan as load_plan
from .registry import (
    PluginInfo as PluginInfo,
    PluginLoadWarning as PluginLoadWarning,
    Registry as Registry,
    StrategyDeprecationWarning as StrategyDeprecationWarning,
    StrategySpec as StrategySpec,
    get_registry as get_registry,
    strategy_spec as strategy_spec,
    use_registry as use_registry,
)
from .schedules.base import Schedule as Schedule
from .selection.scores import (
    ImportanceScore as ImportanceScore,
    ScoreTarget as ScoreTarget,
    current_target as current_target,
)
from .statistics.context import statistics_for as statistics_for, using_statistics as using_statistics
from .statistics.spec import NeedsStatistics as NeedsStatistics, Statistic as Statistic
from .storage.formats import MaskStorage as MaskStorage
from .storage.packed import PackedMask as PackedMask
from .strategies import (
    CountsPerRow as CountsPerRow,
    StructuredStrategy as StructuredStrategy,
    UnstructuredStrategy as UnstructuredStrategy,
)
from .training import Masking as Masking, Pruner as Pruner

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
    "refresh",
    "load_pruned_state_dict",
    "load_sharded",
    "pack_masks",
    "unpack_masks",
    "PackedMask",
    "MaskStorage",
    # channels: coupled channel pruning and compaction
    "trace_channels",
    "ChannelGraph",
    "ChannelGroup",
    "prune_channels",
    "compact",
    "load_compacted",
    "CompactionReport",
    "count_macs",
    "count_params",
    # data-aware pruning
    "prune_calibrated",
    "owl_amounts",
    "CalibrationReport",
    # data-aware pruning: calibration statistics
    "Statistic",
    "NeedsStatistics",
    "UpdatesValues",
    "using_statistics",
    "statistics_for",
    # pruning while training: schedules
    "Schedule",
    "make_schedule",
    "Masking",
    "Pruner",
    # plans, checkpoints, reports
    "Plan",
    "Rule",
    "apply_plan",
    "load_plan",
    "report",
    "Report",
    "tensor_histories",
    "load_checkpoint",
    "save_checkpoint",
    "save_sharded",
    "Checkpoint",
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
    "SelectsEntries",
    "SelectsSlices",
    "CountsPerRow",
    "ImportanceScore",
    "ScoreTarget",
    "current_target",
    "StrategyParams",
    "StrategySpec",
    "strategy_spec",
    "Registry",
    "PluginInfo",
    "PluginLoadWarning",
    "StrategyDeprecationWarning",
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
    "ScoreNotFoundError",
    "StatisticNotFoundError",
    "ScheduleNotFoundError",
    "InvalidScheduleError",
    "StrategyConflictError",
    "IncompatibleStrategyError",
    "StrategyFailedError",
    "UnsupportedNormError",
    "PruningStateError",
    "PackedMaskError",
    "DistributedSelectionError",
    "PlanError",
    "CheckpointError",
    "CheckpointExistsError",
    "ChannelTraceError",
    "CompactionError",
    "ChannelGraphWarning",
    "CalibrationError",
    "CalibrationRequiredError",
    "CalibrationBatchError",
    "CalibrationLossError",
    "CalibrationBlockError",
]
