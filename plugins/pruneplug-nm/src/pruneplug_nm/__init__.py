"""N:M semi-structured sparsity for pruneplug: keep the N largest of every M consecutive entries.

After ``pip install pruneplug-nm``::

    import pruneplug
    pruneplug.prune(model.fc1, "weight", "nm")              # 2:4 along the inputs (dim 1)
    pruneplug.prune(model.fc1, "weight", "nm", n=1, m=4)    # 1:4

The masks have the layout NVIDIA's sparse tensor cores (and
``torch.sparse.to_sparse_semi_structured``) expect for 2:4 sparsity.
"""

from __future__ import annotations

from ._strategy import NMParams, NMSparsity

__all__ = ["NMParams", "NMSparsity", "__version__"]

__version__ = "0.1.0"
