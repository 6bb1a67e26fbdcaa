"""LeNet5 as in the FROG authors' network code (``nn_training/models.py`` of Helmholtz-AI-Energy/frog).

LeCun et al.'s LeNet-5 layout with BatchNorm after each convolution::

    conv1: Conv(C→6, 5×5) → BatchNorm → ReLU → MaxPool(2)
    conv2: Conv(6→16, 5×5) → BatchNorm → ReLU → MaxPool(2)
    fc1:   Flatten → Linear(16·h·w → 120) → ReLU
    fc2:   Linear(120 → 84) → ReLU
    fc3:   Linear(84 → classes)

On 1×28×28 MNIST the flattened features are 16·4·4 = 256 and the network has 44,426 parameters
(the authors' configuration); on 3×32×32 they are 16·5·5 = 400 (the classic LeNet-5 size). Inputs smaller
than 28×28 (scikit-learn's 8×8 digits of the default profiles) get zero-padded ("same") convolutions,
``padding=2``, so that both poolings still fit (8×8 → 8 → 4 → 4 → 2; 16·2·2 = 64 features).

``block_names`` are the five stages above (the authors' activity-perturbation layers); their outputs are
plain tensors. The BatchNorm layers make forward mode couple the samples of a batch in training mode
(see :mod:`frogcore.engines`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_positive_int


def _check_image(name: str, input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width) for {name}; got {tuple(input_shape)}")
    return tuple(int(s) for s in input_shape)


class LeNet5(nn.Module):
    """LeNet5 with BatchNorm (module docstring); ``block_names = [conv1, conv2, fc1, fc2, fc3]``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        num_classes = check_positive_int("num_classes", num_classes)
        c, h, w = _check_image("LeNet5", input_shape)
        pad = 0 if min(h, w) >= 28 else 2
        side_h, side_w = h, w
        for _ in range(2):
            side_h, side_w = (side_h + 2 * pad - 4) // 2, (side_w + 2 * pad - 4) // 2
        if min(side_h, side_w) < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for LeNet5")
        self.padding = pad
        self.conv1 = nn.Sequential(nn.Conv2d(c, 6, 5, padding=pad), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5, padding=pad), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(16 * side_h * side_w, 120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.fc3 = nn.Linear(84, num_classes)
        self.block_names = ["conv1", "conv2", "fc1", "fc2", "fc3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.fc2(self.fc1(self.conv2(self.conv1(x)))))
