"""``benchmarks/distributed_selection.py``: its ``--quick`` run end to end (2 gloo ranks, bool and packed masks,
the selection alone and the whole ``prune_global`` call).

The times depend on the machine; what is checked is that every variant was
timed and that the bytes communicated are the documented formula's: one
agreement check of 14 int64, then 11-bit digits of the float32 keys (11, 11
and 10 bits: 2**11, 2**11 and 2**10 counts of 8 bytes), and tie passes if
the ties at the threshold were split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "distributed_selection.py"


def test_quick_run_times_one_process_and_two_ranks(tmp_path: Path) -> None:
    out = tmp_path / "distributed_selection.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=420,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {
        "one process, bool masks",
        "one process, packed masks",
        "2 ranks, bool masks, bits 11",
        "2 ranks, packed masks, bits 11",
        "one process, prune_global, bool masks",
        "one process, prune_global, packed masks",
        "2 ranks, prune_global, bool masks",
        "2 ranks, prune_global, packed masks",
    }
    assert all(row["seconds"] > 0 and row["per_rank"] == 400_000 for row in rows.values())
    if rows["2 ranks, prune_global, packed masks"]["extra_peak_bytes"] is not None:  # where VmHWM can be reset
        assert all(row["extra_peak_per_shard"] > 0 for row in rows.values())
    for masks in ("bool", "packed"):
        ranks = rows[f"2 ranks, {masks} masks, bits 11"]
        assert ranks["per_rank"] == 400_000
        keys = 14 * 8 + (2**11 + 1 + 2**11 + 1 + 2**10 + 1) * 8 + 8  # the agreement, 3 key passes, the final status
        ties = (2**11 + 1 + 2**9 + 1) * 8  # 20 bits of position for 800 k entries, if the ties were split
        assert (ranks["all_reduces"], ranks["bytes_communicated"]) in {(5, keys), (7, keys + ties)}
        assert ranks["formula_bytes"] == ranks["bytes_communicated"]
