"""The one private Hypothesis API the kit uses still works: a failure here means a Hypothesis release changed it.

``pruneplug.testing._hypothesis_private.set_database_key`` sets Hypothesis's
private ``_hypothesis_internal_add_digest`` so that each check of each
strategy has its own database entry and derandomized seed. These tests check
that Hypothesis still reads it, through what it changes (the examples of a
derandomized run, the database key of a failure), not through its code.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.database import InMemoryExampleDatabase

from pruneplug.testing._hypothesis_private import DIGEST_ATTRIBUTE, set_database_key

CHANGED = f"Hypothesis changed {DIGEST_ATTRIBUTE}; update pruneplug.testing._hypothesis_private.set_database_key"


def twin(seen: list[int], **options: object) -> Callable[[], None]:
    """A ``@given`` test, the same source every call (what the kit's checks are), recording what it draws."""

    @settings(max_examples=10, **options)  # type: ignore[arg-type]
    @given(st.integers(0, 2**30))
    def run(value: int) -> None:
        seen.append(value)

    return run


def derandomized_draws(key: str | None) -> list[int]:
    seen: list[int] = []
    test = twin(seen, derandomize=True, database=None)
    if key is not None:
        assert set_database_key(test, key), f"{CHANGED} (a @given test has no .hypothesis.inner_test any more)"
    test()
    return seen


def test_the_key_decides_a_derandomized_run_s_examples() -> None:
    assert derandomized_draws(None) == derandomized_draws(None), "derandomized runs of one source must agree"
    assert derandomized_draws("a") == derandomized_draws("a"), CHANGED
    assert derandomized_draws("a") != derandomized_draws("b"), f"{CHANGED} (the key no longer changes the seed)"
    assert derandomized_draws("a") != derandomized_draws(None), f"{CHANGED} (the key no longer changes the seed)"


def test_the_key_decides_where_a_failure_is_saved() -> None:
    database = InMemoryExampleDatabase()

    def fail_once(key: str) -> None:
        """A failing test, the same source every call, its failure saved in ``database`` under ``key``."""

        @settings(database=database, max_examples=5, derandomize=False)
        @given(st.integers(0, 10))
        def failing(value: int) -> None:
            raise ValueError(value)

        assert set_database_key(failing, key), CHANGED
        with pytest.raises(ValueError):
            failing()

    def saved() -> set[bytes]:
        """The keys holding failures (not Hypothesis's sub-keys, which extend a key: ``key + b".secondary"``)."""
        keys = [key for key, values in database.data.items() if values]
        return {key for key in keys if not any(key != other and key.startswith(other) for other in keys)}

    fail_once("a")
    fail_once("a")
    saved_under_a = saved()
    fail_once("b")
    assert len(saved_under_a) == 1, f"{CHANGED} (one key, one test: one database entry)"
    assert len(saved()) == 2, f"{CHANGED} (failures of other keys share a database entry)"


def test_a_plain_function_is_left_alone() -> None:
    def plain() -> None:
        return None

    assert set_database_key(plain, "a") is False
    assert not hasattr(plain, DIGEST_ATTRIBUTE)
