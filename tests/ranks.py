"""Scenarios on several gloo processes: :func:`run_ranks` (in pytest) starts them, this file runs one rank.

A test file that runs on several ranks defines ``SCENARIOS``, a dict of
functions ``scenario(rank, world, *args)`` that raise on failure, and calls
``run_ranks(__file__, name, world, *args)`` (``args``: strings, a path say) (the ``run_ranks`` fixture of
``tests/conftest.py``). Each rank is a process forked from a forkserver
that has imported torch and pruneplug once (spawning each rank would import
them again, which takes longer than most scenarios); it runs this file
under the name :data:`RANK_MAIN`, joins a gloo group on 127.0.0.1 (timeout
60 s), loads the test file's ``SCENARIOS`` and runs one. A rank that fails
prints its traceback and exits non-zero; ranks still running after the
deadline are killed, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import multiprocessing
import runpy
import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

#: The module name under which a rank's process runs this file.
RANK_MAIN = "__pruneplug_rank__"
#: How long a group of ranks may take, start-up included, before it counts as hung.
DEADLINE_S = 90.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_ranks(file: str | Path, scenario: str, world: int, *args: str) -> None:
    """Run ``SCENARIOS[scenario](rank, world, *args)`` of the test file ``file`` on ``world`` ranks.

    Raises (fails the test) if a rank fails or hangs.
    """
    import pytest

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch.distributed", "pruneplug"])
    port = _free_port()
    ranks = [
        context.Process(
            target=runpy.run_path,
            args=(__file__,),
            kwargs={"run_name": RANK_MAIN, "init_globals": {"RANK": (str(file), scenario, rank, world, port, args)}},
        )
        for rank in range(world)
    ]
    for process in ranks:
        process.start()
    deadline = time.monotonic() + DEADLINE_S
    hung = []
    for rank, process in enumerate(ranks):
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
            hung.append(rank)
    failed = [rank for rank, process in enumerate(ranks) if process.exitcode != 0 and rank not in hung]
    if hung or failed:
        pytest.fail(f"{scenario} on {world} ranks: hung {hung}, failed {failed} (tracebacks in the captured output)")


def _rank_main(file: str, scenario: str, rank: int, world: int, port: int, args: tuple[str, ...]) -> int:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        runpy.run_path(file, run_name="__pruneplug_scenarios__")["SCENARIOS"][scenario](rank, world, *args)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0  # the group goes with the process (a scenario may leave it unusable: a timed-out all-reduce)


if __name__ == RANK_MAIN:  # this file run by runpy in a rank's process, with RANK set
    sys.exit(_rank_main(*RANK))  # type: ignore[name-defined]  # noqa: F821
