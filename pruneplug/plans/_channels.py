"""Channel rules against a model: which coupled channel groups a rule prunes.

A channel rule (``channels = true``) selects modules as any rule does
(``modules``, ``module_regex``, ``types``, minus ``exclude``) and prunes the
*output channels* of those modules: each channel group of the model's channel
graph (:func:`pruneplug.trace_channels`) in which a selected module's
parameter takes part along its output dim (dim 0; dim 1 of a transposed
convolution's, an embedding's, or a GPT-2 ``Conv1D``'s weight, which is stored
``(in, out)``; a 1-d parameter -- a bias, a norm's weight -- along its only
dim). So ``types = ["Conv2d"]`` prunes the convolutions' output channels, and
with them every tensor coupled to those channels: biases, the next BatchNorm,
the next layers' input columns.
Selecting a module never prunes its input channels: they are the outputs of
the modules before it.

A residual stream is one group, written by several modules (a ResNet's stem
and each block's last convolution, a transformer's embedding and each
block's output projections): it is pruned when *any* module writing it is
selected, and every module reading it follows.

``exclude`` is stronger than leaving a module unselected: a group with a
tensor (or a norm) in an excluded module is left alone, so an excluded module
keeps its shape, inputs and outputs alike.

The selection is a :class:`ChannelSelection`, which
:func:`pruneplug.prune_channels` calls on each group it traces
(``group_filter``): it says yes by the group's members, whatever the group's
number in that trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from ..compaction import ChannelGroup
from ..layers import is_transposed_linear

__all__ = ["ChannelSelection", "output_dim"]


def output_dim(module: nn.Module, tensor: str) -> int:
    """The dim of ``module.<tensor>`` along which it holds the module's output channels."""
    if tensor != "weight":
        return 0
    if isinstance(module, (nn.modules.conv._ConvTransposeNd, nn.Embedding, nn.EmbeddingBag)):
        return 1
    if is_transposed_linear(module):  # GPT-2's Conv1D: weight (in, out)
        return 1
    return 0


@dataclass(frozen=True)
class ChannelSelection:
    """The channel groups a channel rule prunes, as a test on a group.

    Attributes:
        outputs: ``(module, tensor, dim)`` of each parameter of a selected
            module, along its output dim: a group holding one is selected.
        excluded: the excluded modules: a group with a tensor or a norm in one
            is left alone.
    """

    outputs: frozenset[tuple[str, str, int]]
    excluded: frozenset[str]

    @classmethod
    def of(cls, chosen: Iterable[tuple[str, nn.Module, Sequence[str]]], excluded: Iterable[str]) -> ChannelSelection:
        """The selection of the output channels of ``chosen`` (``(path, module, parameter names)``)."""
        outputs = frozenset(
            (path, tensor, output_dim(module, tensor)) for path, module, tensors in chosen for tensor in tensors
        )
        return cls(outputs, frozenset(excluded))

    def owns(self, group: ChannelGroup) -> bool:
        """Whether ``group`` holds the output channels of a selected module."""
        return any(m.parameter and (m.module, m.tensor, m.dim) in self.outputs for m in group.members)

    def excluded_in(self, group: ChannelGroup) -> str | None:
        """The first excluded module ``group`` has a tensor or a norm in; ``None`` if none."""
        return next((m.module for m in (*group.members, *group.norms) if m.module in self.excluded), None)

    def __call__(self, group: ChannelGroup) -> bool:
        """Whether the rule prunes ``group`` (a prunable group of the model's channel graph)."""
        return self.owns(group) and self.excluded_in(group) is None

    def why_not(self, groups: Iterable[ChannelGroup]) -> list[str]:
        """For each group of a selected module's outputs that is not pruned: ``"#3 fc3.weight: <why>"``."""
        reasons = []
        for group in groups:
            if not self.owns(group):
                continue
            hit = self.excluded_in(group)
            if not group.prunable:
                reasons.append(f"#{group.id} {group.name}: {group.reason}")
            elif hit is not None:
                reasons.append(f"#{group.id} {group.name}: {hit or 'the model'} is excluded")
        return reasons
