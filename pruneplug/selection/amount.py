"""What ``amount`` means: a count when it is an int, a fraction when it is a float.

The rules are torch.nn.utils.prune's, so the same call prunes the same number
of entries: an ``int`` is an absolute count (``>= 0``), a ``float`` a fraction
in ``[0, 1]`` turned into a count with Python's ``round`` (half to even), and
a count larger than what is left to prune is an error. A strategy may
protect entries (or slices) from pruning; the count is still taken over
everything unpruned, and one larger than what may be pruned is an error.

Two validators sit on top: :func:`check_amount` is the strict one the native
API uses (a bool is not an amount, NaN is not a fraction, a tensor is not a
number), :func:`check_amount_like_torch` accepts what torch accepts (any
``numbers.Real``, ``True`` counting as 1) and raises the types torch raises.
"""

from __future__ import annotations

import math
import numbers

from ..errors import InvalidAmountError, InvalidParametersError

__all__ = ["check_amount", "check_amount_like_torch", "count_to_prune", "Amount"]

Amount = int | float


def check_amount(amount: object) -> int | float:
    """Validate an amount for the native API and return it as ``int`` or ``float``.

    >>> check_amount(3), check_amount(0.25)
    (3, 0.25)
    >>> check_amount(True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruneplug.errors.InvalidParametersError: amount must be an int (a count) or a float in [0, 1] ..., got bool True
    """
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise InvalidParametersError(
            f"amount must be an int (a count) or a float in [0, 1] (a fraction), got {type(amount).__name__} {amount!r}"
        )
    if isinstance(amount, numbers.Integral):
        value = int(amount)
        if value < 0:
            raise InvalidAmountError(f"amount={value} is a negative count; use an int >= 0")
        return value
    fraction = float(amount)
    if not math.isfinite(fraction):
        raise InvalidAmountError(f"amount={fraction} is not a finite fraction; use a float in [0, 1]")
    if not 0.0 <= fraction <= 1.0:
        raise InvalidAmountError(
            f"amount={fraction} is a float outside [0, 1]; a float is a fraction (use an int for a count)"
        )
    return fraction


class _AmountTypeError(InvalidParametersError, TypeError):
    """An amount that is not a real number (torch raises ``TypeError``)."""


def check_amount_like_torch(amount: object) -> None:
    """Validate an amount the way ``torch.nn.utils.prune`` does at construction.

    Accepts any ``numbers.Real`` (so ``True`` is the count 1, as in torch) and
    rejects NaN early, which torch only notices later when rounding it.
    """
    if not isinstance(amount, numbers.Real):
        raise _AmountTypeError(f"Invalid type for amount: {amount!r}. Must be int or float.")
    if isinstance(amount, numbers.Integral):
        if int(amount) < 0:
            raise InvalidAmountError(
                f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer"
            )
        return
    value = float(amount)
    if math.isnan(value) or value > 1.0 or value < 0.0:
        raise InvalidAmountError(
            f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer"
        )


def count_to_prune(
    amount: int | float, available: int, *, unit: str = "entries", protected: int = 0, strategy: str | None = None
) -> int:
    """Turn ``amount`` into the number of units to prune out of ``available``.

    ``unit`` only words the error ("entries", "slices along dim 0", ...).
    ``protected`` of the ``available`` units may not be pruned (a strategy's
    ``protected`` mask): the count is still taken over all ``available`` --
    so the same amount prunes the same number whatever is protected -- and
    one that reaches into the protected units is an error naming
    ``strategy``.

    >>> count_to_prune(0.4, 17), count_to_prune(1.0, 15), count_to_prune(1, 15)
    (7, 15, 1)
    >>> count_to_prune(20, 19)
    Traceback (most recent call last):
    ...
    pruneplug.errors.InvalidAmountError: amount=20 is larger than the 19 unpruned entries left to prune
    >>> count_to_prune(0.5, 13, protected=5)
    6
    >>> count_to_prune(1.0, 13, protected=5, strategy="diagonal")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    pruneplug.errors.InvalidAmountError: strategy 'diagonal': amount=1.0 asks to prune 13 of the 13 unpruned
    entries, but the strategy protects 5 of them: at most 8 may be pruned (an int amount <= 8, or a fraction
    <= 8/13 = 0.6154)
    """
    if isinstance(amount, numbers.Integral):
        count = int(amount)
        if count > available and not protected:
            raise InvalidAmountError(f"amount={count} is larger than the {available} unpruned {unit} left to prune")
    else:
        count = round(float(amount) * available)
    prunable = available - protected
    if count > prunable:
        raise InvalidAmountError(
            f"amount={amount!r} asks to prune {count} of the {available} unpruned {unit}, but the strategy protects "
            f"{protected} of them: at most {prunable} may be pruned (an int amount <= {prunable}, or a fraction "
            f"<= {prunable}/{available} = {prunable / available:.4g})",
            strategy=strategy,
        )
    return count
