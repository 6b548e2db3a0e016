"""CompactionReport: validation, the reductions, and its renderings (text, Markdown, rich, JSON)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pydantic
import pytest
from rich.console import Console

from pruneplug.compaction.report import CompactionReport


def fields(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "params_before": 25_557_032,
        "params_after": 6_390_000,
        "macs_before": 4_089_184_256,
        "macs_after": 1_040_000_000,
        "groups_compacted": 3,
        "channels_removed": {"layer1.0.conv1": 32, "layer1.0.conv2": 32, "layer1.0.conv3|downsample": 128},
        "max_abs_diff": 3.5e-6,
        "tolerance": 1e-4,
        "verified_modes": ("eval", "train"),
        "tracer": "fx",
        "config_sizes": {},
        "per_layer_sizes": {},
        "config_mismatches": [],
    }
    return {**values, **changes}


def test_reductions_are_before_over_after() -> None:
    report = CompactionReport(**fields())
    assert report.param_reduction == 25_557_032 / 6_390_000
    assert report.macs_reduction == 4_089_184_256 / 1_040_000_000
    assert report.total_channels_removed == 192
    nothing = CompactionReport(**fields(params_before=0, params_after=0, macs_before=5, macs_after=0))
    assert (nothing.param_reduction, nothing.macs_reduction) == (1.0, math.inf)


def test_str_reads_as_a_sentence() -> None:
    text = str(CompactionReport(**fields()))
    assert text == (
        "Compacted 3 channel groups (192 channels removed): parameters 25,557,032 -> 6,390,000 (4.00x fewer), "
        "MACs 4,089,184,256 -> 1,040,000,000 (3.93x fewer); outputs match in eval and train modes "
        "(max |diff| 3.5e-06, tolerance 0.0001); traced with fx."
    )
    one = str(CompactionReport(**fields(groups_compacted=1, verified_modes=("eval",))))
    assert "Compacted 1 channel group (" in one
    assert "outputs match in eval mode (" in one
    assert "outputs not compared" in str(CompactionReport(**fields(verified_modes=())))


def test_markdown_is_a_short_table_and_a_line() -> None:
    assert CompactionReport(**fields()).to_markdown().splitlines() == [
        "| | before | after | reduction |",
        "| --- | ---: | ---: | ---: |",
        "| parameters | 25,557,032 | 6,390,000 | 4.00x |",
        "| MACs | 4,089,184,256 | 1,040,000,000 | 3.93x |",
        "",
        "3 channel groups compacted, 192 channels removed; outputs match in eval and train modes "
        "(max |diff| 3.5e-06, tolerance 0.0001); traced with fx.",
    ]


def test_rich_shows_the_table_and_the_line() -> None:
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(CompactionReport(**fields()).to_rich())
    text = out.getvalue()
    assert "Compaction" in text
    assert "25,557,032" in text and "6,390,000" in text and "4.00x" in text and "3.93x" in text
    assert "192 channels removed" in text


def test_the_config_sizes_are_stated_and_per_layer_sizes_point_to_load_compacted() -> None:
    uniform = CompactionReport(**fields(config_sizes={"hidden_size": 48, "num_attention_heads": 2}))
    assert "Config: hidden_size=48, num_attention_heads=2." in str(uniform)
    varying = CompactionReport(**fields(per_layer_sizes={"intermediate_size": [48, 64]}))
    assert "cannot state intermediate_size" in str(varying) and "load_compacted" in varying.to_markdown()
    assert "Config" not in str(CompactionReport(**fields()))


def test_json_round_trips_and_holds_the_fields_only() -> None:
    report = CompactionReport(**fields())
    data = json.loads(report.to_json())
    assert set(data) == set(fields())
    assert CompactionReport.model_validate_json(report.to_json()) == report


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"params_after": -1}, "params_after"),
        ({"macs_before": 1.5}, "macs_before"),
        ({"channels_removed": {"conv1": -2}}, "channels_removed.conv1"),
        ({"max_abs_diff": float("nan")}, "max_abs_diff"),
        ({"tolerance": -1e-5}, "tolerance"),
        ({"verified_modes": ("eval", "training")}, "verified_modes.1"),
        ({"sparsity": 0.5}, "sparsity"),
    ],
)
def test_bad_values_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        CompactionReport(**fields(**change))
    assert [".".join(map(str, error["loc"])) for error in caught.value.errors()] == [field]


def test_it_is_frozen() -> None:
    report = CompactionReport(**fields())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        report.params_after = 1
