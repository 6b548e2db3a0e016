"""The pruning tutorial's custom strategy as an installable pruneplug plugin.

After ``pip install pruneplug-alternating``::

    import pruneplug
    pruneplug.prune(model.fc1, "bias", "alternating")   # no registration code

masks every other entry of the flattened tensor, starting with the first.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

import pruneplug

__all__ = ["Alternating", "__version__"]

__version__ = "0.1.0"


class Alternating(pruneplug.BasePruningMethod):
    """Mask every other entry of the flattened tensor (the first, the third, ...).

    Written exactly as the tutorial writes its ``torch.nn.utils.prune`` method,
    plus a registry ``name``. Pruned again, it masks every other entry of what
    is still unpruned (pruneplug hands an unstructured strategy only the
    surviving entries). Takes no parameters.
    """

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    name: ClassVar[str | None] = "alternating"
    uses_importance_scores: ClassVar[bool] = False

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with every other entry (of the flattened tensor) set to 0."""
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask
