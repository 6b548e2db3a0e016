"""CalibrationReport: the overall sparsity counts entries, so a big layer weighs what it holds; it as JSON."""

from __future__ import annotations

import json

from pruneplug.calibration import CalibrationReport, LayerResult
from pruneplug.calibration.report import BlockResult


def test_the_overall_sparsity_weights_each_layer_by_its_entries() -> None:
    layers = {
        "small": LayerResult(amount=1.0, sparsity=1.0, rows=4, block=None, entries=10),
        "big": LayerResult(amount=0.0, sparsity=0.0, rows=4, block=None, entries=90),
    }
    report = CalibrationReport(strategy="wanda", layers=layers, blocks=(), skipped=(), batches=1, rows=4, seconds=0.0)
    assert report.sparsity == 0.1
    assert CalibrationReport("wanda", {}, (), (), 0, 0, 0.0).sparsity == 0.0


def test_to_dict_is_plain_json_with_every_field() -> None:
    """Layers a dict (not the read-only mapping, which json cannot write), blocks a list; the same values."""
    layers = {
        "blocks.0.fc1": LayerResult(amount=0.5, sparsity=0.5, rows=12, block="blocks.0", entries=128),
        "blocks.0.fc2": LayerResult(amount=None, sparsity=0.5, rows=12, block="blocks.0", entries=128),
    }
    blocks = (BlockResult("blocks.0", 0.25, 0.01),)
    report = CalibrationReport("wanda", layers, blocks, ("head",), batches=3, rows=12, seconds=0.5)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "strategy": "wanda",
        "layers": {
            "blocks.0.fc1": {"amount": 0.5, "sparsity": 0.5, "rows": 12, "block": "blocks.0", "entries": 128},
            "blocks.0.fc2": {"amount": None, "sparsity": 0.5, "rows": 12, "block": "blocks.0", "entries": 128},
        },
        "blocks": [{"name": "blocks.0", "relative_error": 0.25, "seconds": 0.01}],
        "skipped": ["head"],
        "batches": 3,
        "rows": 12,
        "seconds": 0.5,
    }
    assert list(data["layers"]) == list(report.layers)  # the model's order
    rebuilt = {
        **data,
        "layers": {name: LayerResult(**layer) for name, layer in data["layers"].items()},
        "blocks": tuple(BlockResult(**block) for block in data["blocks"]),
        "skipped": tuple(data["skipped"]),
    }
    assert CalibrationReport(**rebuilt) == report
