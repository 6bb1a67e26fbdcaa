"""Fully connected network of FROG Section 4.4: two hidden layers of width W with ReLU."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import check_positive_int

WIDTHS = (256, 1024, 4096)


class FCNet(nn.Module):
    """``flatten → Linear(d, W) → ReLU → Linear(W, W) → ReLU → Linear(W, C)``, PyTorch's default initialisation.

    The activity-perturbation points (``block_names = ["act1", "act2", "fc3"]``) are the outputs of the
    authors' three blocks ``[Flatten, Linear, ReLU]``, ``[Linear, ReLU]``, ``[Linear]``: the two hidden
    activations **after** their ReLU (modules ``act1``, ``act2``) and the logits (``fc3``), i.e. ``2W + C``
    values per sample (Helmholtz-AI-Energy/frog, ``nn_training/models.py:44–46`` builds the blocks,
    ``nn_training/simfg_models.py:227`` wraps each block and ``:202`` perturbs its output). The block-local
    backward of block 1 therefore runs through ``act1`` and ``fc1``: the ReLU mask is applied to the
    *estimated* activation gradient, so a hidden unit that is inactive for a sample passes no gradient to
    ``fc1`` from that sample, whatever the tangents.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, width: int = 256):
        super().__init__()
        width = check_positive_int("width", width)
        num_classes = check_positive_int("num_classes", num_classes)
        d = math.prod(input_shape)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(d, width)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(width, width)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(width, num_classes)
        self.block_names = ["act1", "act2", "fc3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(self.flatten(x)))
        x = self.act2(self.fc2(x))
        return self.fc3(x)
