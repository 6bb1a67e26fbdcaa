"""The plain convolutional network of the FROG authors' forward-gradient configuration.

Their ``nn_training/configs/forward_gradient.ini`` (Helmholtz-AI-Energy/frog) describes it as
``Conv64,3-ReLU--Conv64,3-ReLU--Conv64,3-ReLU--Conv64,3-ReLU--F-FC1024-ReLU--FC10``: ``depth`` = 4 blocks
of a 3×3 convolution with ``channels`` = 64 output channels (stride 1, no padding) and ReLU, then a
flatten → ``Linear(→ hidden = 1024)`` → ReLU block and the linear head. On 1×28×28 MNIST the spatial
size shrinks 28 → 20, and the network has 26,337,098 parameters (almost all in the first linear layer).

Inputs smaller than 28×28 (scikit-learn's 8×8 digits) get zero-padded ("same") convolutions,
``padding=1``, so that four 3×3 convolutions do not shrink the image to nothing. ``block_names`` are the
``depth + 2`` blocks (``conv1..conv{depth}``, ``fc1``, ``fc2``), the authors' ``--``-separated groups.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_positive_int
from .lenet import _check_image


class ConvNet(nn.Module):
    """``depth × [Conv(3×3) → ReLU] → Flatten → Linear(hidden) → ReLU → Linear(classes)``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, *, channels: int = 64, depth: int = 4,
                 hidden: int = 1024):
        super().__init__()
        channels, depth, hidden = (check_positive_int(n, v) for n, v in
                                   (("channels", channels), ("depth", depth), ("hidden", hidden)))
        num_classes = check_positive_int("num_classes", num_classes)
        c, h, w = _check_image("ConvNet", input_shape)
        pad = 0 if min(h, w) >= 28 else 1
        side_h, side_w = h - depth * (2 - 2 * pad), w - depth * (2 - 2 * pad)
        if min(side_h, side_w) < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for {depth} unpadded 3x3 convolutions")
        self.padding = pad
        prev = c
        self.block_names = []
        for i in range(depth):
            self.add_module(f"conv{i + 1}", nn.Sequential(nn.Conv2d(prev, channels, 3, padding=pad), nn.ReLU()))
            self.block_names.append(f"conv{i + 1}")
            prev = channels
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(channels * side_h * side_w, hidden), nn.ReLU())
        self.fc2 = nn.Linear(hidden, num_classes)
        self.block_names += ["fc1", "fc2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.block_names:
            x = getattr(self, name)(x)
        return x
