"""Datasets as tensors: train / validation / test splits.

``load_splits(name)`` returns a :class:`Splits` of ``(X, y)`` pairs with ``X`` float32 of shape
``(N, C, H, W)`` (standardised with training-set statistics) and ``y`` int64 class labels.

* ``"digits"`` — scikit-learn's handwritten digits (1797 images, 1×8×8, 10 classes), shipped with
  scikit-learn and therefore always available offline: the data of the ``default`` profiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import check_choice

DATASETS = ("digits",)


@dataclass
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


def _split_indices(n: int, sizes: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    a, b, _ = sizes
    return [perm[:a], perm[a:a + b], perm[a + b:]]


def _standardise(parts: list[np.ndarray]) -> list[np.ndarray]:
    mean, std = parts[0].mean(), parts[0].std()
    return [(p - mean) / std for p in parts]


def load_digits_splits(seed: int = 0) -> Splits:
    """scikit-learn digits: 1797 images split 1077 / 360 / 360 (train / val / test) by ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = data.target.astype(np.int64)
    idx = _split_indices(len(x), (1077, 360, 360), seed)
    xs = _standardise([x[i] for i in idx])
    parts = [(torch.from_numpy(np.ascontiguousarray(xi)), torch.from_numpy(y[i])) for xi, i in zip(xs, idx)]
    return Splits(*parts, num_classes=10, name="digits")


def load_splits(name: str, *, seed: int = 0) -> Splits:
    """Load a dataset by name; see the module docstring for the available names."""
    check_choice("dataset", name, DATASETS)
    return load_digits_splits(seed)
