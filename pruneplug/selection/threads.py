"""How many intra-op threads torch's CPU ops run on, and how many CPUs other processes leave free.

Short parallel ops on every thread are fast on an idle machine and slow
beside busy processes: each ends at a barrier, where the team waits for the
thread that was descheduled. The selection gives up threads when CPUs are
busy (:mod:`pruneplug.selection.exact`), and the demo trains its tiny LeNet on
one thread; both go through :func:`intra_op_threads`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["openmp_backend", "free_cpus", "intra_op_threads"]


@functools.cache
def openmp_backend() -> bool:
    """Whether torch's intra-op threads are OpenMP's, whose number a thread may change at any time."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def free_cpus() -> int | None:
    """CPUs this process may use minus other processes' runnable threads, now; ``None`` where unknown.

    Linux only: ``/proc/loadavg`` counts the runnable threads of the whole
    machine (this one included), ``/proc/self/task`` those of this process.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
        with open("/proc/loadavg") as loadavg:
            running = int(loadavg.read().split()[3].partition("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as stat:
                own += stat.read().rpartition(")")[2].split()[0] == "R"
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    return cpus - max(0, running - own)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block's torch ops on ``count`` intra-op threads; restore the caller's count after, also on error.

    ``torch.set_num_threads`` sets OpenMP's team size for the calling thread,
    but torch also records the number process-wide: while the block runs,
    ``torch.get_num_threads()`` reads ``count`` in other threads too, and a
    thread started meanwhile keeps ``count`` as its default (each selection
    restores the count it found). Under torch's native thread pool the size
    cannot change once work has started: nothing is changed there.
    """
    threads = torch.get_num_threads()
    if count == threads or not openmp_backend():
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
