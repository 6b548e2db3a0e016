"""What pytest leaves out of the package's doctests: the modules of an optional extra that is not installed.

``--doctest-modules`` imports every module of ``pruneplug``; the trainer
callbacks import their library (the ``lightning`` and ``hf`` extras) when
imported, so without it they are not collected. Their tests skip themselves
(``pytest.importorskip``); CI installs both extras.
"""

from __future__ import annotations

import importlib.util

_EXTRAS = {"pruneplug/training/lightning.py": "lightning", "pruneplug/training/hf.py": "transformers"}

collect_ignore = [path for path, package in _EXTRAS.items() if importlib.util.find_spec(package) is None]
