"""Layer 2 (beside :mod:`pruneplug.selection`): statistics of calibration data, and how strategies read them.

* :mod:`.spec` -- :class:`~.spec.Statistic` and its :class:`~.spec.Accumulator`, the built-ins
  (``input_sq_norms``, ``input_hessian``), and the :class:`~.spec.NeedsStatistics` contract;
* :mod:`.context` -- :func:`~.context.using_statistics` and :func:`~.context.statistics_for`.

Collecting them from a model is :mod:`pruneplug.calibration`'s job. Internal: the public names are
exported by :mod:`pruneplug`.
"""
