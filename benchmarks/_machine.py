"""What a benchmark ran on: the CPU's name, installed versions, and the facts of its machine line."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from contextlib import suppress
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return name


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` if it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(threads: int) -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, memory, versions, the load average at the start."""
    total = None
    with suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "memory_bytes": total,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "pruneplug": version("pruneplug"),
        "load_average": os.getloadavg()[0],
    }
