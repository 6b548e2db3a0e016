"""Small reference models: the tutorial's LeNet.

``LeNet`` is the network the tutorial prunes (conv1 1->6 5x5, conv2 6->16
5x5, max-pool 2, fc1 256->120, fc2 120->84, fc3 84->10; 44,426 parameters
on a 1x28x28 input). The CLI and the demo build it as
``pruneplug.models:LeNet``.

>>> model = LeNet()
>>> sum(p.numel() for p in model.parameters())
44426
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeNet"]


class LeNet(nn.Module):
    """The classic LeNet of the tutorial, for 1x28x28 inputs.

    Args:
        num_classes: size of the output layer.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(in_features=16 * 4 * 4, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=84)
        self.fc3 = nn.Linear(in_features=84, out_features=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.conv1(x)))
        x = self.maxpool(F.relu(self.conv2(x)))
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        logits: Tensor = self.fc3(x)
        return logits
