"""The compaction tests run their tiny models on one thread.

At batch 2 and a few thousand parameters, splitting an operator across
threads costs more than it saves, and on a busy machine the threads wait for
each other: the zoo matrix measured 15 s on one thread, 88 s on two, on the
2-core development machine under load.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
