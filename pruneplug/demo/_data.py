"""The demo's data: scikit-learn's handwritten digits, shaped for the tutorial's LeNet.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grey-scale digits inside
scikit-learn itself, so the demo needs no download. LeNet expects 1x28x28
inputs (MNIST's size), so each image is scaled to [0, 1] and upsampled
bilinearly to 28x28, then standardised with the training images' mean and
standard deviation.

The held-out test split is stratified and fixed (it does not follow the
demo's ``--seed``), so runs with different seeds are scored on the same
images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Digits", "load_digits_data", "IMAGE_SIZE", "NUM_CLASSES"]

IMAGE_SIZE = 28
NUM_CLASSES = 10
_SPLIT_SEED = 0
_PIXEL_MAX = 16.0  # load_digits' pixels are counts 0..16


@dataclass(frozen=True)
class Digits:
    """Train and test tensors: images ``(N, 1, 28, 28)`` float32, labels ``(N,)`` int64."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    @property
    def sizes(self) -> tuple[int, int]:
        """``(training images, test images)``."""
        return len(self.train_labels), len(self.test_labels)


def load_digits_data(test_fraction: float = 0.25) -> Digits:
    """Load the digits, upsample them to 28x28 and split off a stratified test set.

    Args:
        test_fraction: the share of images held out for testing, in (0, 1).

    Raises:
        ValueError: ``test_fraction`` is not strictly between 0 and 1.
        ImportError: scikit-learn is missing (see :func:`~pruneplug.demo.require_extra`).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from sklearn.model_selection import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        train_test_split,
    )

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / _PIXEL_MAX
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    train_index, test_index = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=test_fraction,
        stratify=labels.numpy(),
        random_state=_SPLIT_SEED,
    )
    train_index_t, test_index_t = torch.as_tensor(train_index), torch.as_tensor(test_index)
    train_images = images[train_index_t]
    mean, std = train_images.mean(), train_images.std()
    return Digits(
        train_images=(train_images - mean) / std,
        train_labels=labels[train_index_t],
        test_images=(images[test_index_t] - mean) / std,
        test_labels=labels[test_index_t],
    )
