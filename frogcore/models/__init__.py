"""The networks of FROG Sections 4.4 and 4.5, built by name.

``build_model(name, input_shape, num_classes, **kw)``:

* ``"fc"`` — two hidden ReLU layers of width ``width`` (256 | 1024 | 4096 in the paper);
* ``"resnet18"`` — torchvision's ResNet18 architecture (``width`` = 64 is the standard one);
* ``"vit"`` — Vision Transformer (``depth`` 6, ``heads`` 4, ``dim`` 256, ``mlp_dim`` 512, ``patch`` 4).

Every model has ``block_names``: the names (as in ``named_modules()``) of the submodules whose
outputs are the activity-perturbation points, in forward order. Their outputs are plain tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import check_choice
from .fc import FCNet
from .resnet import ResNet18
from .vit import ViT

MODELS = {"fc": FCNet, "resnet18": ResNet18, "vit": ViT}


def build_model(name: str, input_shape: Sequence[int], num_classes: int = 10, **kw) -> nn.Module:
    """Build a model by name (see the module docstring); ``kw`` are the model's size options."""
    check_choice("model", name, tuple(MODELS))
    shape = tuple(int(s) for s in input_shape)
    return MODELS[name](shape, num_classes, **kw)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def activity_dims(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Per-sample size of each block output (the activity-perturbation tangent dimension per block)."""
    modules = dict(model.named_modules())
    sizes: dict[str, int] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, o[0].numel()))
             for n in model.block_names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {n: sizes[n] for n in model.block_names}


__all__ = ["MODELS", "build_model", "num_parameters", "activity_dims", "FCNet", "ResNet18", "ViT"]
