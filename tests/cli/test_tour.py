"""``python -m pruneplug``: the main job until the demo lands."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_pruneplug_lists_strategies_and_prunes_lenet() -> None:
    result = subprocess.run([sys.executable, "-m", "pruneplug"], capture_output=True, text=True, check=True)
    out = result.stdout
    for name in ("identity", "random_unstructured", "l1_unstructured", "random_structured", "ln_structured"):
        assert name in out
    assert "conv1.weight: random_structured(amount=2, dim=0) -> ln_structured(amount=0.5, n=2, dim=0)" in out
    assert "global sparsity: 20.00%" in out
    assert "after remove(model): pruned=False" in out
    assert result.stderr == ""
