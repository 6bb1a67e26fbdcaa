"""The networks of the FoMoH experiments (Cobb et al., arXiv 2408.10419).

* :func:`logistic_regression` — one linear layer; 7,850 parameters on 28×28 MNIST.
* :class:`FomohCNN` — the paper's CNN: conv 1→20 (5×5), max-pool 2, conv 20→50 (5×5), max-pool 2,
  dense 800→500→10, ReLU; 431,080 parameters on 28×28 inputs.
* :func:`mlp` — 784-128-10 with ReLU (101,770 parameters): the network of the step-cost benchmark.
* :func:`cifar10_cnn` (:class:`FomohCifarCNN`) — the CIFAR-10 CNN of the FoMoH authors' code: three blocks
  of two 3×3 convolutions (32, 64, 128 channels, "same" padding) each followed by BatchNorm and ReLU, a 2×2
  max-pool after each block, then dropout 0.5, dense 2048→1024, ReLU, dropout 0.5, dense 1024→10;
  2,396,330 parameters on 3×32×32.

All take the input shape, so that the same architectures run on scikit-learn's 8×8 digits (the
offline data of the default profiles). Adaptation for inputs smaller than 28×28: the convolutions of
:class:`FomohCNN` are zero-padded (``padding=2``, "same" size) so that two 5×5 convolutions and two
poolings still fit (8×8 → 8×8 → 4×4 → 4×4 → 2×2, dense 200→500→10; 131,080 parameters); on 28×28
inputs there is no padding and the network is exactly the paper's. The linear models simply see
``C·H·W`` inputs (64 for digits: 650 parameters for logistic regression).

The MNIST models have no BatchNorm or dropout: they are pure functions of their parameters. The CIFAR-10
CNN's BatchNorm keeps no running statistics (``track_running_stats=False``, as the authors'): it always
normalises with the statistics of the batch, so the loss is still a function of the parameters and the
batch (hyper-dual evaluation handles it, :func:`frogcore.hyperdual.second_order_safe`); its dropout is
active in ``train()`` mode (one mask per evaluation) and off in ``eval()`` mode.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import check_choice

MODELS = ("logreg", "cnn", "mlp", "cnn_cifar10")


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


class FomohCifarCNN(nn.Module):
    """The CIFAR-10 CNN of the FoMoH authors' code (SRI-CSL/fomoh, ``CNN_CIFAR10_torch``; module docstring).

    ``input_shape`` ``(C, H, W)`` with ``H`` and ``W`` divisible by 8 (three 2×2 poolings); the first dense
    layer has ``128·(H/8)·(W/8)`` inputs (2048 on 32×32). ``dropout``: the probability of both dropout layers.
    """

    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width); got {tuple(input_shape)}")
        c, h, w = (int(v) for v in input_shape)
        if h % 8 or w % 8 or h < 8 or w < 8:
            raise ValueError(f"FomohCifarCNN needs height and width divisible by 8; got {tuple(input_shape)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")
        layers, width = [], c
        for out in (32, 64, 128):
            for _ in range(2):
                layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out, track_running_stats=False),
                           nn.ReLU()]
                width = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(128 * (h // 8) * (w // 8), 1024), nn.ReLU(),
                                        nn.Dropout(dropout), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def cifar10_cnn(input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.5) -> nn.Module:
    """The FoMoH authors' CIFAR-10 CNN (:class:`FomohCifarCNN`; 2,396,330 parameters on 3×32×32)."""
    return FomohCifarCNN(input_shape, num_classes, dropout)


def build_model(name: str, input_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """One of ``MODELS`` for the given input shape, built by the unified registry
    :func:`frogcore.models.build_model` (which also attaches ``block_names``)."""
    from . import build_model as _build  # the package imports this module: import at call time

    check_choice("model", name, MODELS)
    return _build(name, input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
