"""The one place where pruneplug.testing reaches into Hypothesis's private API.

Hypothesis keys its example database, and seeds a derandomized run, by a
digest of the test function's source. Every conformance check runs through
the same small inner function, so without help all checks of all strategies
would share one database entry (replaying one strategy's failure on another)
and one derandomized seed. Hypothesis mixes the private attribute
``_hypothesis_internal_add_digest`` of the inner test into that digest (its
own stateful testing sets it for the same reason). It is set here and
nowhere else; ``tests/testing/test_hypothesis_private.py`` fails, naming this
function, if a Hypothesis release stops honouring it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DIGEST_ATTRIBUTE", "set_database_key"]

DIGEST_ATTRIBUTE = "_hypothesis_internal_add_digest"
"""The private attribute of a ``@given`` test's inner function that Hypothesis adds to its digest (bytes)."""


def set_database_key(test: Callable[..., object], key: str) -> bool:
    """Give the ``@given`` test ``test`` a database entry and derandomized seed of its own, told apart by ``key``.

    Returns ``False`` (and changes nothing) when ``test`` is not a Hypothesis test.
    """
    inner = getattr(getattr(test, "hypothesis", None), "inner_test", None)
    if inner is None:
        return False
    setattr(inner, DIGEST_ATTRIBUTE, key.encode())
    return True
