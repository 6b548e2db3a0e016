"""The demo's files: the raw numbers as JSON, the curves as a PNG, the gradual comparison's table and plot.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from .. import __version__
from ._channels import ChannelSweep
from ._data import IMAGE_SIZE, NUM_CLASSES
from ._extra import DemoError
from ._gradual_output import GRADUAL_PLOT_FILE, GRADUAL_TABLE_FILE, draw_gradual_plot, gradual_markdown
from ._run import DemoResult, fine_tune_text
from ._sweep import Curve

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "RESULTS_FILE",
    "PLOT_FILE",
    "FORMAT",
    "result_payload",
    "prepare_output_folder",
    "write_outputs",
    "atomic_write",
    "CurveStyle",
    "curve_styles",
    "channel_label",
]

RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy-vs-sparsity.png"
FORMAT = "pruneplug-demo/3"
"""The ``format`` field of the JSON file; bumped when its layout changes (2: ``channels``; 3: ``gradual``)."""


def result_payload(result: DemoResult) -> dict[str, Any]:
    """The JSON document for ``result``: settings, data, baseline, curves, skipped, channels, gradual, timings."""
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
        "channels": None if result.channels is None else asdict(result.channels),
        "gradual": None if result.gradual is None else asdict(result.gradual),
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


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "p", "d", "H", "8")
# tab10 without its grey (the reference lines are grey), then five more far from those and from
# each other: every local curve gets a colour of its own up to 14 curves. Black is the global run's.
_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#1a237e",
    "#00a087",
    "#8b0000",
    "#5c5c00",
    "#ff1493",
)
_GLOBAL_COLOUR = "black"
_CHANNEL_COLOUR = "#9400d3"  # dark violet: at least 0.4 from every colour above, black and grey
_REFERENCE_COLOUR = "grey"
_LINE_WIDTH = 1.3
_MARKER_SIZE = 5.0


@dataclass(frozen=True)
class CurveStyle:
    """How one curve is drawn (matplotlib's ``plot`` keywords)."""

    color: str
    linestyle: str
    marker: str
    linewidth: float
    markersize: float


def _series(curve: Curve, key: str) -> list[tuple[float, float]]:
    return [(point.sparsity, getattr(point, key)) for point in curve.points]


def curve_styles(curves: list[Curve]) -> list[CurveStyle]:
    """A style per curve: its own colour and marker, dashed when structured, black and wide when global.

    Two strategies that rank weights alike (``l1_unstructured`` and
    ``scored_unstructured (magnitude)``) draw the very same curve, and the
    one drawn last would hide the other. A curve that a later one coincides
    with (in either panel) is drawn wider, with bigger markers, one step per
    curve on top of it, so each shows as a coloured edge around the next.
    """
    styles = []
    local = 0
    for index, curve in enumerate(curves):
        covering = sum(
            1
            for later in curves[index + 1 :]
            if any(_series(curve, key) == _series(later, key) for key in ("accuracy", "accuracy_fine_tuned"))
        )
        if curve.scope == "global":
            colour, width = _GLOBAL_COLOUR, 2.4
        else:
            colour, width = _COLOURS[local % len(_COLOURS)], _LINE_WIDTH
            local += 1
        single = len(curve.points) == 1
        styles.append(
            CurveStyle(
                color=colour,
                linestyle="--" if curve.kind == "structured" else "-",
                marker="*" if single else _MARKERS[index % len(_MARKERS)],
                linewidth=width + 2.5 * covering,
                markersize=(11.0 if single else _MARKER_SIZE) + 4.0 * covering,
            )
        )
    return styles


def channel_label(channels: ChannelSweep) -> str:
    """What the plot and the tables call the channel pruning run (``"ln_structured channels, compacted"``)."""
    return f"{channels.strategy} channels, compacted"


def _draw_channel_curve(ax: Axes, channels: ChannelSweep, key: str) -> None:
    ax.plot(
        [100.0 * point.sparsity for point in channels.points],
        [100.0 * getattr(point, key) for point in channels.points],
        label=channel_label(channels),
        color=_CHANNEL_COLOUR,
        linestyle="-.",
        marker="o",
        linewidth=2.4,
        markersize=_MARKER_SIZE,  # filled, unlike the sweep's hollow markers
        zorder=3,
    )


def _draw_gains(ax: Axes, channels: ChannelSweep) -> None:
    """The third panel: how much smaller and faster the compacted networks are, against sparsity."""
    sparsity = [100.0 * point.sparsity for point in channels.points]
    gains = (
        ([channels.dense_params / p.params for p in channels.points], "fewer parameters", ":", "s"),
        ([channels.dense_macs_per_image / p.macs_per_image for p in channels.points], "fewer MACs", "--", "^"),
        ([p.speedup for p in channels.points], "measured speed-up", "-", "o"),
    )
    for ratios, label, linestyle, marker in gains:
        ax.plot(
            sparsity,
            ratios,
            label=label,
            color=_CHANNEL_COLOUR,
            linestyle=linestyle,
            marker=marker,
            linewidth=2.4 if label == "measured speed-up" else _LINE_WIDTH,
            markersize=_MARKER_SIZE,
        )
    ax.axhline(1.0, color=_REFERENCE_COLOUR, linewidth=7, alpha=0.35, zorder=1, label="dense network")
    ax.set_yscale("log")
    ax.set_xlim(0, 100)
    ax.set_title(f"{channel_label(channels)}: smaller and faster")
    ax.set_xlabel("sparsity of the conv and linear weights, masked (%)")
    ax.set_ylabel("dense network / compacted network (x)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(
        loc="upper left",
        fontsize="small",
        title=(
            f"latency: median of {channels.repeats} forwards of {channels.batch_size} images,\n"
            f"{channels.threads} thread{'' if channels.threads == 1 else 's'}, CPU"
        ),
        title_fontsize="small",
    )


def _draw_plot(result: DemoResult, file: IO[bytes]) -> None:
    from matplotlib.figure import Figure

    channels = result.channels if result.channels is not None and result.channels.points else None
    figure = Figure(figsize=(12.0 if channels is None else 17.0, 6.0), layout="constrained")
    axes = figure.subplots(1, 2 if channels is None else 3, width_ratios=None if channels is None else (1, 1, 0.85))
    axes[1].sharey(axes[0])
    axes[1].tick_params(labelleft=False)
    styles = curve_styles(result.curves)
    panels = (
        ("accuracy", "accuracy", "right after pruning"),
        ("accuracy_fine_tuned", "accuracy_compacted", f"after {fine_tune_text(result)}"),
    )
    for ax, (key, channel_key, title) in zip(axes, panels):
        for curve, style in zip(result.curves, styles):
            ax.plot(
                [100.0 * point.sparsity for point in curve.points],
                [100.0 * getattr(point, key) for point in curve.points],
                label=curve.label,
                markerfacecolor="none",  # hollow: a marker under another of another shape shows
                **asdict(style),
            )
        if channels is not None:
            _draw_channel_curve(ax, channels, channel_key)
        # The dense network is a wide pale band under the curves: no curve is drawn like it.
        ax.axhline(
            100.0 * result.baseline_accuracy,
            color=_REFERENCE_COLOUR,
            alpha=0.35,
            linewidth=7,
            zorder=1,
            label="dense network",
        )
        ax.axhline(100.0 / NUM_CLASSES, color=_REFERENCE_COLOUR, linestyle=":", linewidth=1, label="chance")
        ax.set_title(title)
        ax.set_xlabel("sparsity of the conv and linear weights (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    if channels is not None:
        _draw_gains(axes[2], channels)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=6, fontsize="small", frameon=False)
    figure.suptitle(
        f"LeNet on scikit-learn's digits: test accuracy against sparsity (seed {result.config.seed}; "
        "dashed: structured; a wide edge: another curve lies on it)"
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

    With the gradual comparison, also ``gradual-vs-one-shot.md`` (its table)
    and ``gradual-vs-one-shot.png`` (accuracy and sparsity against the step).
    Returns the paths by kind (``"json"``, ``"plot"``, ``"gradual_table"``,
    ``"gradual_plot"``).

    Raises:
        DemoError: ``out`` cannot be created or written (it is a file, permissions, ...).
    """
    prepare_output_folder(out)
    payload = json.dumps(result_payload(result), indent=2, ensure_ascii=False).encode() + b"\n"
    gradual = result.gradual
    try:
        written = {
            "json": atomic_write(out / RESULTS_FILE, lambda file: file.write(payload)),
            "plot": atomic_write(out / PLOT_FILE, lambda file: _draw_plot(result, file)),
        }
        if gradual is not None:
            table = gradual_markdown(gradual).encode()
            written["gradual_table"] = atomic_write(out / GRADUAL_TABLE_FILE, lambda file: file.write(table))
            written["gradual_plot"] = atomic_write(
                out / GRADUAL_PLOT_FILE, lambda file: draw_gradual_plot(gradual, file, seed=result.config.seed)
            )
        return written
    except OSError as error:
        raise DemoError(f"cannot write the demo's results into {out}: {error.strerror or error}") from None
