"""``pruneplug demo``: how much accuracy each strategy keeps as LeNet gets sparser.

The demo trains the tutorial's LeNet on the handwritten digits shipped with
scikit-learn for a few seconds, then prunes copies of it with every
registered strategy that applies -- built-ins and installed plugins alike,
found through the registry -- and with global L1 pruning, at rising
sparsity, with and without a short fine-tune, and measures test accuracy.
Then it prunes whole coupled channel groups (:func:`pruneplug.prune_channels`),
fine-tunes, compacts the networks (:func:`pruneplug.compact`) and measures
what that buys: parameters, MACs and CPU latency against the dense network.
Last, it compares gradual pruning while training (a :class:`pruneplug.Pruner`
following a cubic schedule) with one-shot pruning and fine-tuning, to 90% and
95% global sparsity with the same number of training steps, over a few seeds.

::

    from pathlib import Path
    from pruneplug.demo import DemoConfig, run_demo, write_outputs

    result = run_demo(DemoConfig.quick(seed=0))
    write_outputs(result, Path("pruneplug-demo"))   # results.json, accuracy-vs-sparsity.png, gradual-vs-one-shot.*

It needs the ``demo`` extra (``pip install 'pruneplug[demo]'``: scikit-learn
and matplotlib); :func:`require_extra` says so when they are missing. This
package imports without them.

Modules: ``_data`` (the digits), ``_training`` (train, fine-tune, score),
``_variants`` (which runs, from the registry), ``_sweep`` (prune copies and
measure), ``_channels`` (channel pruning, compaction, latency),
``_gradual`` (gradual against one-shot pruning), ``_run`` (the whole demo),
``_output`` (the files), ``_gradual_output`` (the comparison's table and
plot), ``_table`` (the printed tables).
"""

from __future__ import annotations

from ._channels import (
    ChannelPoint as ChannelPoint,
    ChannelSweep as ChannelSweep,
    LeftOut as LeftOut,
    channel_sweep as channel_sweep,
    median_latencies as median_latencies,
    prune_and_compact as prune_and_compact,
)
from ._data import Digits as Digits, load_digits_data as load_digits_data
from ._extra import (
    EXTRA as EXTRA,
    DemoError as DemoError,
    MissingExtraError as MissingExtraError,
    require_extra as require_extra,
)
from ._gradual import (
    GradualComparison as GradualComparison,
    GradualRow as GradualRow,
    GradualSettings as GradualSettings,
    TrainingRun as TrainingRun,
    compare_gradual as compare_gradual,
    gradual_settings as gradual_settings,
)
from ._gradual_output import (
    GRADUAL_PLOT_FILE as GRADUAL_PLOT_FILE,
    GRADUAL_TABLE_FILE as GRADUAL_TABLE_FILE,
    gradual_markdown as gradual_markdown,
)
from ._output import (
    PLOT_FILE as PLOT_FILE,
    RESULTS_FILE as RESULTS_FILE,
    prepare_output_folder as prepare_output_folder,
    result_payload as result_payload,
    write_outputs as write_outputs,
)
from ._progress import Phases as Phases, Step as Step, silent as silent
from ._run import (
    DemoConfig as DemoConfig,
    DemoResult as DemoResult,
    run_demo as run_demo,
    train_lenet as train_lenet,
)
from ._sweep import (
    Curve as Curve,
    Point as Point,
    SweepSettings as SweepSettings,
    prunable_layers as prunable_layers,
    sweep as sweep,
    weight_sparsity as weight_sparsity,
)
from ._training import accumulate_gradients as accumulate_gradients, evaluate as evaluate, train as train
from ._variants import Skipped as Skipped, Variant as Variant, plan_variants as plan_variants

__all__ = [
    "run_demo",
    "DemoConfig",
    "DemoResult",
    "write_outputs",
    "prepare_output_folder",
    "result_payload",
    "RESULTS_FILE",
    "PLOT_FILE",
    "EXTRA",
    "require_extra",
    "DemoError",
    "MissingExtraError",
    "Digits",
    "load_digits_data",
    "train_lenet",
    "train",
    "evaluate",
    "accumulate_gradients",
    "plan_variants",
    "Variant",
    "Skipped",
    "sweep",
    "SweepSettings",
    "Curve",
    "Point",
    "prunable_layers",
    "weight_sparsity",
    "channel_sweep",
    "prune_and_compact",
    "median_latencies",
    "ChannelSweep",
    "ChannelPoint",
    "LeftOut",
    "compare_gradual",
    "gradual_settings",
    "gradual_markdown",
    "GradualSettings",
    "GradualComparison",
    "GradualRow",
    "TrainingRun",
    "GRADUAL_PLOT_FILE",
    "GRADUAL_TABLE_FILE",
    "Phases",
    "Step",
    "silent",
]
