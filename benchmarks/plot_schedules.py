"""The plot of the built-in pruning schedules on docs/schedules.md: docs/images/schedules.svg.

Each schedule is drawn from its own ``at(step)`` over 1000 training steps,
pruning from step 100 to step 900 every 50 steps towards a final sparsity of
0.9 (milestones and one-shot with steps of their own), as a step function:
the target changes only at pruning steps. The SVG is written reproducibly
(no date, fixed ids, text as text), so regenerating it changes the file only
when a schedule or this script changes; ``tests/benchmarks`` checks that the
committed file is up to date.

Usage::

    python benchmarks/plot_schedules.py            # rewrites docs/images/schedules.svg
    python benchmarks/plot_schedules.py -o x.svg   # writes elsewhere
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

import pruneplug

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "schedules.svg"
STEPS = 1000
RAMP = {"initial": 0.0, "final": 0.9, "start": 100, "end": 900, "every": 50}
SCHEDULES: dict[str, dict[str, object]] = {
    "cubic": {"name": "cubic", **RAMP},
    "linear": {"name": "linear", **RAMP},
    "exponential": {"name": "exponential", **RAMP},
    "milestones": {"name": "milestones", "milestones": [[100, 0.3], [400, 0.6], [700, 0.8], [900, 0.9]]},
    "constant": {"name": "constant", "final": 0.9},
    "one_shot (start=500)": {"name": "one_shot", "final": 0.9, "start": 500},
}


def points(schedule: pruneplug.Schedule) -> tuple[list[int], list[float]]:
    """The schedule as a step function: its value at step 0, at each pruning step and at the last step."""
    steps = sorted({0, *schedule.steps(), STEPS})
    return steps, [schedule.at(step) for step in steps]


def plot(out: Path = OUT) -> Path:
    """Draw every schedule of :data:`SCHEDULES` into ``out`` (an SVG); returns ``out``."""
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)):
        schedules = {label: pruneplug.make_schedule(spec) for label, spec in SCHEDULES.items()}
    with plt.rc_context({"svg.hashsalt": "pruneplug-schedules", "svg.fonttype": "none", "font.size": 10}):
        figure, axes = plt.subplots(figsize=(8.5, 4.2))
        styles = ["-", "-", "-", "--", ":", "-."]
        for (label, schedule), style in zip(schedules.items(), styles):
            steps, values = points(schedule)
            axes.step(steps, values, where="post", linestyle=style, linewidth=1.8, label=label)
        axes.set_xlabel("training step")
        axes.set_ylabel("target sparsity: schedule.at(step)")
        axes.set_xlim(0, STEPS)
        axes.set_ylim(-0.02, 1.0)
        axes.grid(alpha=0.3)
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        axes.set_title("start=100, end=900, every=50, final=0.9", fontsize=10)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="svg", metadata={"Date": None})
        plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT, help=f"the SVG to write (default: {OUT})")
    print(plot(parser.parse_args().out))


if __name__ == "__main__":
    main()
