"""The networks of the FoMoH experiments (Cobb et al., arXiv 2408.10419).

* :func:`logistic_regression` — one linear layer; 7,850 parameters on 28×28 MNIST.
* :class:`FomohCNN` — the paper's CNN: conv 1→20 (5×5), max-pool 2, conv 20→50 (5×5), max-pool 2,
  dense 800→500→10, ReLU; 431,080 parameters on 28×28 inputs.
* :func:`mlp` — 784-128-10 with ReLU (101,770 parameters): the network of the step-cost benchmark.

All take the input shape, so that the same architectures run on scikit-learn's 8×8 digits (the
offline data of the default profiles). Adaptation for inputs smaller than 28×28: the convolutions of
:class:`FomohCNN` are zero-padded (``padding=2``, "same" size) so that two 5×5 convolutions and two
poolings still fit (8×8 → 8×8 → 4×4 → 4×4 → 2×2, dense 200→500→10; 131,080 parameters); on 28×28
inputs there is no padding and the network is exactly the paper's. The linear models simply see
``C·H·W`` inputs (64 for digits: 650 parameters for logistic regression).

No BatchNorm or dropout: every model is a pure function of its parameters, as forward mode with
``torch.func`` needs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import check_choice

MODELS = ("logreg", "cnn", "mlp")


def _features(input_shape) -> int:
    return int(math.prod(input_shape))


def logistic_regression(input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """Multinomial logistic regression: flatten → linear (``(C·H·W + 1) · classes`` parameters)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_features(input_shape), num_classes))


def mlp(input_shape=(1, 28, 28), hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """One hidden ReLU layer: 784-128-10 on MNIST (101,770 parameters)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(_features(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


class FomohCNN(nn.Module):
    """The FoMoH paper's CNN (431,080 parameters on 1×28×28; see the module docstring for 8×8)."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = input_shape
        if h != w:
            raise ValueError(f"FomohCNN expects square inputs; got {input_shape}")
        pad = 0 if h >= 28 else 2
        self.features = nn.Sequential(
            nn.Conv2d(c, 20, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = h
        for _ in range(2):
            side = (side + 2 * pad - 4) // 2
        if side < 1:
            raise ValueError(f"input {input_shape} is too small for FomohCNN")
        self.padding = pad
        self.classifier = nn.Sequential(nn.Linear(50 * side * side, 500), nn.ReLU(), nn.Linear(500, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(name: str, input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """``"logreg"`` | ``"cnn"`` | ``"mlp"`` for the given input shape."""
    check_choice("model", name, MODELS)
    if name == "logreg":
        return logistic_regression(input_shape, num_classes)
    if name == "mlp":
        return mlp(input_shape, num_classes=num_classes)
    return FomohCNN(input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
