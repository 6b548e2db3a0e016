"""How tests/io/data/pruned-models-0.1.0.pt was made: whole pruned models pickled by pruneplug 0.1.0

before its modules moved into folders (commit d013836), run as
``PYTHONPATH=<checkout of d013836> python make_pruned_models_0_1_0.py pruned-models-0.1.0.pt``.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import pruneplug
import pruneplug.compat


def main(path: str) -> None:
    torch.manual_seed(0)
    lazy = nn.Linear(4, 3)
    pruneplug.prune(lazy, "weight", "l1_unstructured", amount=5)
    pruneplug.prune(lazy, "weight", "random_structured", amount=1, dim=0)
    packed = nn.Linear(4, 3)
    pruneplug.prune(packed, "weight", "l1_unstructured", amount=4, mask_storage="packed")
    compat = nn.Linear(4, 3)
    pruneplug.compat.l1_unstructured(compat, "weight", amount=3)
    pruneplug.compat.ln_structured(compat, "weight", amount=1, n=2, dim=0)
    rnn = nn.GRU(3, 2)
    pruneplug.prune(rnn, "weight_hh_l0", "l1_unstructured", amount=4)
    x = torch.randn(2, 4)
    seq = torch.randn(5, 1, 3)
    with torch.no_grad():
        expected = {"lazy": lazy(x), "packed": packed(x), "compat": compat(x), "rnn": rnn(seq)[0]}
    torch.save(
        {
            "models": {"lazy": lazy, "packed": packed, "compat": compat, "rnn": rnn},
            "x": x,
            "seq": seq,
            "expected": expected,
        },
        path,
    )


if __name__ == "__main__":
    main(sys.argv[1])
