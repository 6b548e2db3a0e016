"""The demo's files: the raw numbers as JSON and the curves as a PNG, written atomically.

Each file is written under a temporary name in the output folder and
renamed into place, so a reader (or an interrupted run) never sees half a
file: the folder holds either the previous complete file or the new one.
The plot is drawn on a bare :class:`matplotlib.figure.Figure` (rendered by
Agg) -- no pyplot, no GUI backend, no global state.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import torch

from ._data import IMAGE_SIZE, NUM_CLASSES
from ._extra import DemoError
from ._run import DemoResult, fine_tune_text

__all__ = [
    "RESULTS_FILE",
    "PLOT_FILE",
    "FORMAT",
    "result_payload",
    "prepare_output_folder",
    "write_outputs",
    "atomic_write",
]

RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy-vs-sparsity.png"
FORMAT = "pruneplug-demo/1"
"""The ``format`` field of the JSON file; bumped when its layout changes."""


def result_payload(result: DemoResult) -> dict[str, Any]:
    """The JSON document for ``result``: settings, data, baseline, curves, skipped strategies, timings."""
    from .. import __version__

    train_size, test_size = result.data_sizes
    return {
        "format": FORMAT,
        "versions": {"pruneplug": __version__, "torch": torch.__version__},
        "settings": asdict(result.config),
        "data": {
            "source": "sklearn.datasets.load_digits, upsampled to 28x28",
            "image_size": IMAGE_SIZE,
            "classes": NUM_CLASSES,
            "train": train_size,
            "test": test_size,
        },
        "model": "pruneplug.models:LeNet",
        "baseline": {"accuracy": result.baseline_accuracy},
        "curves": [asdict(curve) for curve in result.curves],
        "skipped": [asdict(skipped) for skipped in result.skipped],
        "seconds": result.seconds,
    }


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` through ``write(file)`` under a temporary name, then rename it into place."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0o600 would hide the results from other users
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")


def _draw_plot(result: DemoResult, file: IO[bytes]) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12.0, 6.0), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    colours = matplotlib.colormaps["tab10"]
    panels = (("accuracy", "right after pruning"), ("accuracy_fine_tuned", f"after {fine_tune_text(result)}"))
    for ax, (key, title) in zip(axes, panels):
        for index, curve in enumerate(result.curves):
            xs = [100.0 * point.sparsity for point in curve.points]
            ys = [100.0 * getattr(point, key) for point in curve.points]
            is_global = curve.scope == "global"
            ax.plot(
                xs,
                ys,
                label=curve.label,
                color="black" if is_global else colours(index % colours.N),
                linestyle="--" if curve.kind == "structured" else "-",
                # Hollow markers of different shapes: curves that coincide (two strategies ranking
                # alike) stay visible under each other.
                marker="*" if len(xs) == 1 else _MARKERS[index % len(_MARKERS)],
                markersize=11 if len(xs) == 1 else 5,
                markerfacecolor="none",
                linewidth=2.4 if is_global else 1.3,
            )
        ax.axhline(100.0 * result.baseline_accuracy, color="grey", linestyle="--", linewidth=1, label="dense network")
        ax.axhline(100.0 / NUM_CLASSES, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_title(title)
        ax.set_xlabel("sparsity of the conv and linear weights (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=5, fontsize="small", frameon=False)
    figure.suptitle(
        f"LeNet on scikit-learn's digits: test accuracy against sparsity (seed {result.config.seed}; "
        "dashed: structured)"
    )
    figure.savefig(file, format="png", dpi=110)


def prepare_output_folder(out: Path) -> Path:
    """Create ``out`` (and its parents) if needed and check it is a writable folder; returns it.

    Called before the demo runs, so a bad ``--out`` fails at once, not after the sweep.

    Raises:
        DemoError: ``out`` is a file, or cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DemoError(f"cannot write the demo's results into {out}: it is a file, not a folder") from None
    except OSError as error:
        raise DemoError(f"cannot create the output folder {out}: {error.strerror or error}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DemoError(f"cannot write the demo's results into {out}: permission denied")
    return out


def write_outputs(result: DemoResult, out: Path) -> dict[str, Path]:
    """Write ``results.json`` and ``accuracy-vs-sparsity.png`` into ``out`` (created if needed).

    Returns the paths by kind (``"json"``, ``"plot"``).

    Raises:
        DemoError: ``out`` cannot be created or written (it is a file, permissions, ...).
    """
    prepare_output_folder(out)
    payload = json.dumps(result_payload(result), indent=2, ensure_ascii=False).encode() + b"\n"
    try:
        return {
            "json": atomic_write(out / RESULTS_FILE, lambda file: file.write(payload)),
            "plot": atomic_write(out / PLOT_FILE, lambda file: _draw_plot(result, file)),
        }
    except OSError as error:
        raise DemoError(f"cannot write the demo's results into {out}: {error.strerror or error}") from None
