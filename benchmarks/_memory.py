"""The resident memory of this process, and its kernel-kept peak (Linux), for the benchmarks that measure memory.

``proc_status("VmRSS")`` is the resident memory now, ``proc_status("VmHWM")``
its peak; :func:`reset_peak` sets the peak back to the current resident
memory, and :func:`peak_reset_works` checks that this machine allows it.
"""

from __future__ import annotations

import torch

__all__ = ["proc_status", "reset_peak", "peak_reset_works"]


def proc_status(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status``, in bytes; None where there is no such file."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field_name}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak RSS of this process (``VmHWM``) to the current RSS; False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def peak_reset_works() -> bool:
    """Whether ``VmHWM`` can be read and reset here: touch 64 MiB, free it, reset, and see the peak fall."""
    if proc_status("VmHWM") is None or not reset_peak():
        return False
    block = torch.ones(16 << 20)  # 64 MiB, returned to the system when freed (mmap)
    del block
    high = proc_status("VmHWM")
    reset_peak()
    low = proc_status("VmHWM")
    return high is not None and low is not None and high - low >= 32 << 20


# --- the model and its calibration ----------------------------------------------------------------
