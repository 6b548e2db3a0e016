"""How a strategy reads the calibration statistics of the tensor it is pruning.

:func:`pruneplug.prune_calibrated` collects statistics per module and prunes
inside :func:`using_statistics`; a strategy asks :func:`statistics_for` for
those of the module it is pruning (``pruneplug.ScoreTarget.module``, which the
core sets while it computes a mask). Statistics collected another way -- on
another machine, from a saved file -- are used the same way::

    with pruneplug.using_statistics({model.fc1: {"input_sq_norms": norms}}):
        pruneplug.prune(model.fc1, "weight", "wanda", amount=0.5)
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType

from torch import Tensor, nn

from ..errors import CalibrationError, CalibrationRequiredError, InvalidParametersError

__all__ = ["StatisticsByModule", "using_statistics", "statistics_for"]

StatisticsByModule = Mapping[nn.Module, Mapping[str, Tensor]]
"""Statistics of calibration data: per module (the object itself), per statistic name, a tensor."""

_current: contextvars.ContextVar[StatisticsByModule | None] = contextvars.ContextVar(
    "pruneplug_statistics", default=None
)


@contextmanager
def using_statistics(statistics: StatisticsByModule) -> Iterator[None]:
    """Make ``statistics`` what data-aware strategies read inside the ``with`` block.

    Blocks nest: the innermost one's statistics are read (not merged).

    Raises:
        InvalidParametersError: ``statistics`` is not a mapping of modules to
            mappings of names to tensors.
    """
    if not isinstance(statistics, Mapping):
        raise InvalidParametersError(
            f"statistics must map modules to {{statistic name: tensor}}, got {type(statistics).__name__}"
        )
    for module, values in statistics.items():
        if not isinstance(module, nn.Module) or not isinstance(values, Mapping):
            raise InvalidParametersError(
                f"statistics must map modules to {{statistic name: tensor}}; got a key {type(module).__name__} "
                f"with a value {type(values).__name__}"
            )
    token = _current.set(MappingProxyType(dict(statistics)))
    try:
        yield
    finally:
        _current.reset(token)


def statistics_for(
    module: nn.Module | None,
    names: Sequence[str],
    *,
    strategy: str,
    tensor: str | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, Tensor]:
    """The statistics ``names`` of ``module``'s calibration inputs, from the innermost :func:`using_statistics`.

    ``shapes`` gives the shape each must have (checked). ``strategy`` and
    ``tensor`` name what asks, in errors.

    Raises:
        CalibrationRequiredError: no statistics are in use, or none of these
            for ``module`` (``None``: a bare tensor is being pruned).
        CalibrationError: a statistic is not a tensor of the expected shape.
    """
    module_type = type(module).__name__ if module is not None else None
    context = {"module_type": module_type, "tensor": tensor, "strategy": strategy}
    hint = (
        "run it through pruneplug.prune_calibrated(model, ..., calibration=batches), which collects them, "
        "or inside pruneplug.using_statistics({module: {name: tensor}})"
    )
    if module is None:
        raise CalibrationRequiredError(
            f"{strategy!r} needs calibration statistics ({', '.join(names)}) of the layer it prunes, "
            f"and a bare tensor has none: {hint}",
            **context,
        )
    current = _current.get()
    found = None if current is None else current.get(module)
    missing = [name for name in names if found is None or name not in found]
    if missing:
        where = "no statistics are in use" if current is None else "none were collected for this module"
        raise CalibrationRequiredError(
            f"{strategy!r} needs the calibration statistic{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(n) for n in missing)} of this layer's inputs, and {where}: {hint}",
            **context,
        )
    assert found is not None
    out = {}
    for name in names:
        value = found[name]
        wanted = None if shapes is None else shapes.get(name)
        if not isinstance(value, Tensor):
            raise CalibrationError(f"statistic {name!r} is a {type(value).__name__}, not a tensor", **context)
        if wanted is not None and tuple(value.shape) != tuple(wanted):
            raise CalibrationError(
                f"statistic {name!r} has shape {tuple(value.shape)}, but this layer needs {tuple(wanted)}", **context
            )
        out[name] = value
    return out
