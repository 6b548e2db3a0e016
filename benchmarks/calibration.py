"""Data-aware pruning of a small language model: held-out perplexity after magnitude, Wanda, SparseGPT and OWL.

The papers' table (Wanda, Sun et al. 2023; SparseGPT, Frantar & Alistarh
2023; OWL, Yin et al. 2023) at a scale that runs on a laptop CPU: a
character-level transformer (``benchmarks/_charlm.py``: 4 pre-norm decoder
blocks, d_model 128, 4 heads, MLP 512, context 128; 0.84 M parameters)
trained here on the CPython documentation text that ships with Python
(``pydoc_data.topics``, 465 K characters, nothing downloaded; 90 % to train
on, the next 5 % to draw calibration sequences from, the last 5 % held out).
Training (800 steps of 32 windows of 128 characters, 7.8 passes over the
training text; under 4 minutes on 2 idle cores) is done once and the weights
are kept in ``benchmarks/results/`` (3.4 MB; ``--no-cache`` retrains).

Every row starts from a deep copy of the same trained weights and prunes the
24 ``nn.Linear`` weights inside the blocks (attention ``q``/``k``/``v``/``o``,
MLP ``fc1``/``fc2``; embeddings, LayerNorms and the LM head stay dense), with
``pruneplug.prune_calibrated`` on the same 128 calibration sequences of 128
characters (as the papers take 128 sequences of their context length), block
by block unless the row says otherwise. The rows: dense; at 50 % and at 70 %
unstructured, the papers' three (magnitude per tensor, Wanda per row,
SparseGPT), magnitude per row and Wanda per tensor (to tell the criterion
from the group it is compared in), global Wanda and OWL + Wanda; at 2:4,
magnitude, Wanda and SparseGPT. Each row reports the perplexity on the whole
held-out split (non-overlapping windows of 128), the sparsity reached over
those 24 weights (all together, and the least and most of one), and the
seconds the pruning took (calibration forwards included; OWL's rows include
``pruneplug.owl_amounts``). Under the table, the papers' three rows of each
pattern sorted by perplexity, and whether that is the papers' order.

On a machine shared with busy processes, ``--threads 1`` is much faster than
two threads: torch's threads wait for each other at every operation, and one
that shares its CPU holds up the rest.

Usage::

    python benchmarks/calibration.py                # train once (about 4 min on 2 idle cores), then every row
    python benchmarks/calibration.py --quick        # a tiny model trained for a few steps, seconds
    python benchmarks/calibration.py --threads 2    # torch's intra-op threads (default: the CPUs it may use)
    python benchmarks/calibration.py --no-cache     # train afresh and keep nothing
    python benchmarks/calibration.py --write-docs   # also rewrite its table in docs/benchmarks.md, data-aware.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/calibration.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from _charlm import (  # benchmarks/ is the script's folder, first on sys.path
    CharLMConfig,
    Corpus,
    TrainConfig,
    calibration_batches,
    corpus,
    load_or_train,
    perplexity,
    unigram_perplexity,
)
from _docs import write_between
from _machine import machine
from torch import Tensor, nn

import pruneplug

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DATA_AWARE = ROOT / "docs" / "data-aware.md"
MARKERS = ("<!-- table:calibration:start -->", "<!-- table:calibration:end -->")
CACHE = HERE / "results" / "calibration-charlm.pt"
SKIP = "this pruneplug has no prune_calibrated/owl_amounts (data-aware pruning, issue #15): the row is skipped."


@dataclass(frozen=True)
class Setup:
    """The model, its training and the calibration data of one run."""

    model: dict[str, int]  # CharLMConfig's fields but the vocabulary size
    train: TrainConfig
    calibration_sequences: int
    calibration_batch: int
    calibration_seed: int = 1


FULL = Setup({"context": 128, "d_model": 128, "heads": 4, "blocks": 4}, TrainConfig(), 128, 16)
QUICK = Setup({"context": 32, "d_model": 64, "heads": 2, "blocks": 2}, TrainConfig(steps=30, batch=16, warmup=5), 16, 8)


# --- the rows -------------------------------------------------------------------------------------

Prune = Callable[[nn.Module, Sequence[Tensor], list[str]], Any]


@dataclass(frozen=True)
class Method:
    """One row of the table: how a fresh copy of the dense model is pruned."""

    key: str
    label: str
    setting: str  # the rows are grouped by it: "—" (dense), "50 %", "2:4", "70 %"
    call: str  # what is passed to prune_calibrated, as the table shows it
    prune: Prune | None  # None: the dense model


def shown(strategy: str, params: dict[str, Any]) -> str:
    """The arguments after ``model`` as a row's call shows them: ``"wanda", amount=0.5, compare="tensor"``."""
    return ", ".join([f'"{strategy}"', *(f"{key}={_literal(value)}" for key, value in params.items())])


def _literal(value: Any) -> str:
    """``value`` as Python source, strings in double quotes."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def calibrated(strategy: str, **params: Any) -> Prune:
    """A row's pruning: ``prune_calibrated(model, strategy, calibration=..., targets=..., **params)``."""

    def prune(model: nn.Module, calibration: Sequence[Tensor], targets: list[str]) -> Any:
        return pruneplug.prune_calibrated(
            model, strategy, calibration=calibration, targets=targets, progress=False, **params
        )

    return prune


def owl(strategy: str, amount: float) -> Prune:
    """OWL: per-block amounts from ``owl_amounts`` on the dense model (mean ``amount``), then ``strategy``."""

    def prune(model: nn.Module, calibration: Sequence[Tensor], targets: list[str]) -> Any:
        amounts = pruneplug.owl_amounts(model, calibration, amount=amount, targets=targets)
        return pruneplug.prune_calibrated(
            model, strategy, amount=amounts, calibration=calibration, targets=targets, progress=False
        )

    return prune


NAMES = {"magnitude": "magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}  # the papers' three criteria
SETTINGS = {"50 %": "50", "2:4": "2of4", "70 %": "70"}  # each pattern's suffix in the row keys


def methods() -> list[Method]:
    """Every row, in the table's order: dense, then 50 % unstructured, 2:4, and 70 % unstructured.

    Each unstructured setting has the papers' rows (magnitude per tensor,
    Wanda per row, SparseGPT), the two other ways to compare (magnitude per
    row, Wanda per tensor: which of criterion and comparison makes a
    difference), global Wanda and OWL + Wanda.
    """
    rows = [Method("dense", "dense", "—", "—", None)]
    for setting, tag in SETTINGS.items():
        if setting == "2:4":  # N:M compares within groups of 4: neither per tensor nor per row
            for strategy, name in NAMES.items():
                params: dict[str, Any] = {"amount": None, "keep_n": 2, "of_m": 4}
                rows.append(
                    Method(f"{strategy}-{tag}", name, setting, shown(strategy, params), calibrated(strategy, **params))
                )
            continue
        amount = int(tag) / 100
        for key, label, strategy, extra in (
            ("magnitude", "magnitude (per tensor)", "magnitude", {}),
            ("wanda", "Wanda (per row)", "wanda", {}),
            ("sparsegpt", "SparseGPT", "sparsegpt", {}),
            ("magnitude-row", "magnitude (per row)", "magnitude", {"compare": "row"}),
            ("wanda-tensor", "Wanda (per tensor)", "wanda", {"compare": "tensor"}),
            (
                "global-wanda",
                "global Wanda (across layers)",
                "wanda",
                {"scope": "global", "sequential": False, "compare": "tensor"},
            ),
        ):
            params = {"amount": amount, **extra}
            rows.append(Method(f"{key}-{tag}", label, setting, shown(strategy, params), calibrated(strategy, **params)))
        call = f'"wanda", amount=owl_amounts(model, calibration, amount={amount})'
        rows.append(Method(f"owl-wanda-{tag}", "OWL + Wanda (per row)", setting, call, owl("wanda", amount)))
    return rows


def block_linears(model: nn.Module) -> list[str]:
    """The qualified names of the ``nn.Linear`` modules inside ``model.blocks``: what every row prunes."""
    return [
        name for name, module in model.named_modules() if name.startswith("blocks.") and isinstance(module, nn.Linear)
    ]


def sparsity(model: nn.Module, targets: list[str]) -> tuple[float, dict[str, float]]:
    """The fraction of zeros in the (masked) weights of ``targets`` all counted together, and that of each."""
    zeros = total = 0
    each: dict[str, float] = {}
    with torch.no_grad():
        for name in targets:
            weight = model.get_submodule(name).weight
            found = int((weight == 0).sum())
            each[name] = found / weight.numel()
            zeros += found
            total += weight.numel()
    return zeros / total, each


def has_calibration_api() -> bool:
    """Whether this pruneplug has data-aware pruning."""
    return all(hasattr(pruneplug, name) for name in ("prune_calibrated", "owl_amounts"))


def plain(value: Any) -> Any:
    """``value`` (a report: dataclasses, mappings, tensors) as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in fields(value)}
    if isinstance(value, Mapping):  # the report's layers are a read-only mappingproxy
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


@dataclass
class Row:
    """One row's measurements."""

    key: str
    label: str
    setting: str
    call: str
    perplexity: float | None = None
    sparsity: float | None = None
    layer_sparsity: dict[str, float] | None = None  # per pruned weight
    seconds: float | None = None
    report: Any = None  # the CalibrationReport, as plain values
    skipped: str | None = None


def run_row(
    method: Method, dense: nn.Module, calibration: Sequence[Tensor], test: Tensor, context: int, targets: list[str]
) -> Row:
    """Prune a deep copy of ``dense`` as ``method`` says, timed; then its perplexity on ``test`` and sparsity."""
    row = Row(method.key, method.label, method.setting, method.call)
    model = copy.deepcopy(dense)
    if method.prune is not None:
        start = time.perf_counter()
        report = method.prune(model, calibration, targets)
        row.seconds = time.perf_counter() - start
        row.report = plain(report)
    row.perplexity = perplexity(model, test, context)
    row.sparsity, row.layer_sparsity = sparsity(model, targets)
    seconds = "" if row.seconds is None else f", {row.seconds:.1f} s"
    print(f"  {method.key}: perplexity {row.perplexity:.3f}, sparsity {row.sparsity:.1%}{seconds}", file=sys.stderr)
    return row


# --- the run --------------------------------------------------------------------------------------


def run(setup: Setup, cache: Path | None, only: set[str] | None) -> dict[str, Any]:
    """Train (or load) the model, then prune and evaluate every row (those in ``only``, if given)."""
    data: Corpus = corpus()
    model_config = CharLMConfig(vocab_size=len(data.vocab), **setup.model)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    dense, training = load_or_train(model_config, data, setup.train, cache, log)
    context = model_config.context
    calibration = calibration_batches(
        data.calibration, setup.calibration_sequences, context, setup.calibration_batch, setup.calibration_seed
    )
    targets = block_linears(dense)
    available = has_calibration_api()
    if not available:
        print(SKIP, file=sys.stderr)
    rows: list[Row] = []
    for method in methods():
        if only is not None and method.key not in only:
            continue
        if method.prune is not None and not available:
            rows.append(Row(method.key, method.label, method.setting, method.call, skipped=SKIP))
            continue
        rows.append(run_row(method, dense, calibration, data.test, context, targets))
    return {
        "model": asdict(model_config),
        "parameters": sum(p.numel() for p in dense.parameters()),
        "pruned_parameters": sum(dense.get_submodule(name).weight.numel() for name in targets),
        "targets": targets,
        "train": {**asdict(setup.train), **training},
        "data": {
            "characters": len(data.train) + len(data.calibration) + len(data.test),
            "vocabulary": len(data.vocab),
            "train": len(data.train),
            "calibration": len(data.calibration),
            "test": len(data.test),
        },
        "calibration": {
            "sequences": setup.calibration_sequences,
            "length": context,
            "batch": setup.calibration_batch,
            "seed": setup.calibration_seed,
        },
        "unigram_perplexity": unigram_perplexity(data.train, data.test, len(data.vocab)),
        "rows": [asdict(row) for row in rows],
    }


# --- reporting ------------------------------------------------------------------------------------

PAPERS_ORDER = "magnitude worst, SparseGPT at or below Wanda"


def ordering(rows: list[dict[str, Any]]) -> list[str]:
    """Per setting, the papers' three rows sorted by perplexity, and whether that is the papers' order."""
    perplexities = {row["key"]: row["perplexity"] for row in rows if row["perplexity"] is not None}
    lines = []
    for setting, tag in SETTINGS.items():
        found = {name: perplexities[f"{name}-{tag}"] for name in NAMES if f"{name}-{tag}" in perplexities}
        if len(found) < len(NAMES):
            continue
        ranked = sorted(found, key=lambda name: found[name])
        papers = ranked[-1] == "magnitude" and found["sparsegpt"] <= found["wanda"]
        chain = " < ".join(f"{NAMES[name]} {found[name]:.3f}" for name in ranked)
        lines.append(f"* {setting}: {chain} — {'the papers’ order' if papers else 'not the papers’ order'}.")
    return lines


def _threads(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def _training_load(train: dict[str, Any]) -> str:
    """`` on 2 threads, load average 0.3 to 0.5`` where the training info says (older caches do not)."""
    if "threads" not in train:
        return ""
    start, end = train["load_average"]
    return f" on {_threads(train['threads'])}, load average {start:.1f} to {end:.1f}"


def render(result: dict[str, Any], about: dict[str, Any], quick: bool) -> str:
    model, train, data = result["model"], result["train"], result["data"]
    dense = next((row["perplexity"] for row in result["rows"] if row["key"] == "dense"), None)
    trained = "loaded from the cache" if train["cached"] else "trained in this run"
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}), torch on {_threads(about['threads'])}, "
        f"Python {about['python']}, torch {about['torch']}; load average {about['load_average']:.1f} when the run "
        f"started, {about['load_average_end']:.1f} when it ended" + ("; --quick." if quick else "."),
        "",
        f"Model: {model['blocks']} blocks, d_model {model['d_model']}, {model['heads']} heads, MLP "
        f"{model['mlp_ratio'] * model['d_model']}, context {model['context']}, vocabulary {model['vocab_size']} "
        f"characters: {result['parameters'] / 1e6:.2f} M parameters, "
        f"{result['pruned_parameters'] / 1e6:.2f} M of them in the pruned Linear weights. "
        f"Trained {train['steps']} steps of {train['batch']} windows "
        f"({train['steps'] * train['batch'] * model['context'] / data['train']:.2g} passes over the "
        f"{data['train']:,} training characters) in {train['seconds']:.0f} s{_training_load(train)} ({trained}). "
        "Held out: "
        f"{data['test']:,} characters; a unigram model (character frequencies) has perplexity "
        f"{result['unigram_perplexity']:.2f} there. Calibration: {result['calibration']['sequences']} sequences of "
        f"{result['calibration']['length']} characters.",
        "",
        "| pattern | method | `prune_calibrated(model, ...)` | held-out perplexity | × dense | sparsity "
        "| layers' sparsity (least to most) | time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        if row["skipped"] is not None:
            lines.append(f"| {row['setting']} | {row['label']} | `{row['call']}` | skipped | | | | |")
            continue
        ratio = "—" if dense is None or row["key"] == "dense" else f"{row['perplexity'] / dense:.2f}×"
        seconds = "—" if row["seconds"] is None else f"{row['seconds']:.1f} s"
        call = "—" if row["call"] == "—" else f"`{row['call']}`"
        each = row["layer_sparsity"].values()
        lines.append(
            f"| {row['setting']} | {row['label']} | {call} | {row['perplexity']:.3f} | {ratio} "
            f"| {row['sparsity']:.1%} | {min(each):.0%}–{max(each):.0%} | {seconds} |"
        )
    order = ordering(result["rows"])
    if order:
        lines += ["", f"Ordering of the three criteria by perplexity (the papers’: {PAPERS_ORDER}):", "", *order]
    skipped = [row for row in result["rows"] if row["skipped"] is not None]
    if skipped:
        lines += ["", skipped[0]["skipped"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny model trained for a few steps (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"where the trained weights are kept (default {CACHE}; --quick: none)"
    )
    parser.add_argument("--no-cache", action="store_true", help="train afresh and keep nothing")
    parser.add_argument("--rows", default=None, help="only these rows, by key, comma-separated (e.g. dense,wanda-50)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "calibration.json", help="where the raw numbers go"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md and docs/data-aware.md"
    )
    args = parser.parse_args(argv)
    keys = {method.key for method in methods()}
    only = None if args.rows is None else set(args.rows.split(","))
    if only is not None and only - keys:
        raise SystemExit(f"--rows: no row {', '.join(sorted(only - keys))}; the rows are {', '.join(sorted(keys))}")
    cache = None if args.no_cache else args.cache or (None if args.quick else CACHE)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    about = machine(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)

    result = run(QUICK if args.quick else FULL, cache, only)
    about["load_average_end"] = os.getloadavg()[0]
    text = render(result, about, args.quick)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": about, "quick": args.quick, **result}, indent=2) + "\n")
    if args.write_docs:
        write_between(MARKERS, text, DOCS)
        write_between(MARKERS, text, DATA_AWARE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
