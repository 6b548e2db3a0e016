"""CalibrationReport: the overall sparsity counts entries, so a big layer weighs what it holds."""

from __future__ import annotations

from pruneplug.calibration import CalibrationReport, LayerResult


def test_the_overall_sparsity_weights_each_layer_by_its_entries() -> None:
    layers = {
        "small": LayerResult(amount=1.0, sparsity=1.0, rows=4, block=None, entries=10),
        "big": LayerResult(amount=0.0, sparsity=0.0, rows=4, block=None, entries=90),
    }
    report = CalibrationReport(strategy="wanda", layers=layers, blocks=(), skipped=(), batches=1, rows=4, seconds=0.0)
    assert report.sparsity == 0.1
    assert CalibrationReport("wanda", {}, (), (), 0, 0, 0.0).sparsity == 0.0
