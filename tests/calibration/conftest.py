"""The calibration tests run their tiny models on one thread.

At a few thousand parameters, splitting an operator across threads costs
more than it saves, and on a busy machine the threads wait for each other
(a 32-wide LLaMA block took 1.4 s on two busy cores, as compaction's zoo did);
the reference SparseGPT's column loop is hundreds of tiny ops, which threads
only slow down.
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
