"""Layer 6: coupled channel pruning and physical compaction -- removing pruned channels for real.

``trace`` records a run of the model, ``rules`` says what each step couples,
``graph`` solves that into channel groups, ``prune`` masks whole groups,
``compact`` slices them out (``resize`` rewrites layer attributes), ``load``
resizes a fresh model to a compacted checkpoint, ``macs`` and ``report``
measure the result.
"""

from .compact import compact
from .graph import ChannelGraph, ChannelGroup, Member, trace_channels
from .load import load_compacted
from .macs import count_macs, count_params
from .prune import prune_channels
from .report import CompactionReport

__all__ = [
    "trace_channels",
    "ChannelGraph",
    "ChannelGroup",
    "Member",
    "prune_channels",
    "compact",
    "load_compacted",
    "CompactionReport",
    "count_macs",
    "count_params",
]
