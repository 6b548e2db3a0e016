"""Layer 6 (beside :mod:`pruneplug.compaction`): data-aware pruning driven by calibration data.

* :mod:`.driver` -- :func:`~.driver.prune_calibrated`, block by block or in one pass, all or nothing;
* :mod:`.owl` -- :func:`~.owl.owl_amounts`, OWL's per-block amounts;
* :mod:`.report` -- :class:`~.report.CalibrationReport`;
* below them: :mod:`.blocks` (which blocks), :mod:`.targets` (which layers), :mod:`.running`
  (running batches, capturing and replaying a block's inputs), :mod:`.collect` (statistics
  through forward hooks), :mod:`.gradients` (the taylor score's gradients), :mod:`.state`
  (eval mode and rollback), :mod:`.progress` (rich, optional).
"""

from .driver import prune_calibrated
from .owl import owl_amounts
from .report import BlockResult, CalibrationReport, LayerResult

__all__ = ["prune_calibrated", "owl_amounts", "CalibrationReport", "LayerResult", "BlockResult"]
