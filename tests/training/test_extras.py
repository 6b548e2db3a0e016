"""The trainer callbacks are optional: pruneplug imports neither library, and a missing one names its extra."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_importing_pruneplug_and_its_training_package_imports_no_trainer_library() -> None:
    code = (
        "import sys, pruneplug, pruneplug.training; "
        "print(sorted(m for m in ('lightning', 'transformers', 'accelerate') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [("pruneplug.training.lightning", "lightning", "lightning"), ("pruneplug.training.hf", "transformers", "hf")],
)
def test_a_missing_library_raises_an_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # what `import library` then raises: ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'pruneplug\[{extra}\]'"):
        importlib.import_module(module)
