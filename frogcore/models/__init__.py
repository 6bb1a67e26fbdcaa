"""Every network of the book, built by name: one registry for the FROG and the FoMoH experiments.

``build_model(name, input_shape, num_classes, **kw)``:

FROG (Sections 4.4/4.5, and the further models of the authors' network code):

* ``"fc"`` — two hidden ReLU layers of width ``width`` (256 | 1024 | 4096 in the paper);
* ``"resnet18"`` — torchvision's ResNet18 architecture (``width`` = 64 is the standard one);
* ``"vit"`` — Vision Transformer (``depth`` 6, ``heads`` 4, ``dim`` 256, ``mlp_dim`` 512, ``patch`` 4);
* ``"lenet5"`` — LeNet5 with BatchNorm (:mod:`frogcore.models.lenet`);
* ``"convnet"`` — 4 × [3×3 conv, 64 channels, ReLU] → 1024 → classes (:mod:`frogcore.models.convnet`;
  ``channels``, ``depth``, ``hidden``);
* ``"mlpmixer"`` — MLP-Mixer (:mod:`frogcore.models.mlp_mixer`; ``dim`` 512, ``depth`` 8, ``token_mlp_dim``
  256, ``channel_mlp_dim`` 2048, ``patch``, ``dropout``);

FoMoH (:mod:`frogcore.models.fomoh_nets`):

* ``"logreg"`` — logistic regression; ``"mlp"`` — one hidden ReLU layer (``hidden`` = 128);
  ``"cnn"`` — the FoMoH paper's CNN.

Every model has ``block_names``: the names (as in ``named_modules()``) of the submodules whose
outputs are the activity-perturbation points, in forward order, the last one being the head. Their
outputs are plain tensors. For the FoMoH models (whose builders live in ``fomoh_nets``) the registry
attaches them: the outputs of the linear and convolutional layers (their pre-activations; ``"fc"`` perturbs its
post-ReLU hidden activations, as the FROG authors).

``MODELS`` maps every name to its builder ``builder(input_shape, num_classes, **kw) -> nn.Module``;
:func:`frogcore.models.fomoh_nets.build_model` delegates here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import check_choice, check_positive_int
from . import fomoh_nets
from .convnet import ConvNet
from .fc import FCNet
from .lenet import LeNet5
from .mlp_mixer import MLPMixer
from .resnet import ResNet18
from .vit import ViT


def _with_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    model.block_names = names
    return model


def _logreg(input_shape, num_classes: int = 10) -> nn.Module:
    """``fomoh_nets.logistic_regression``; block: the linear layer ``"1"``."""
    return _with_blocks(fomoh_nets.logistic_regression(input_shape, num_classes), ["1"])


def _mlp(input_shape, num_classes: int = 10, hidden: int = 128) -> nn.Module:
    """``fomoh_nets.mlp``; blocks: the two linear layers ``"1"``, ``"3"``."""
    hidden = check_positive_int("hidden", hidden)
    return _with_blocks(fomoh_nets.mlp(input_shape, hidden=hidden, num_classes=num_classes), ["1", "3"])


def _cnn(input_shape, num_classes: int = 10) -> nn.Module:
    """``fomoh_nets.FomohCNN``; blocks: both convolutions and both linear layers."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width) for 'cnn'; got {tuple(input_shape)}")
    return _with_blocks(fomoh_nets.FomohCNN(input_shape, num_classes),
                        ["features.0", "features.3", "classifier.0", "classifier.2"])


def _cnn_cifar10(input_shape, num_classes: int = 10, dropout: float = 0.5) -> nn.Module:
    """``fomoh_nets.cifar10_cnn`` (the FoMoH authors' CIFAR-10 CNN); blocks: the six convolutions and the two
    hidden linear layers."""
    return _with_blocks(fomoh_nets.cifar10_cnn(input_shape, num_classes, dropout),
                        ["features.0", "features.3", "features.7", "features.10", "features.14", "features.17",
                         "classifier.1", "classifier.4"])


FROG_MODELS = ("fc", "resnet18", "vit", "lenet5", "convnet", "mlpmixer")
FOMOH_MODELS = tuple(fomoh_nets.MODELS)
MODELS = {"fc": FCNet, "resnet18": ResNet18, "vit": ViT, "lenet5": LeNet5, "convnet": ConvNet,
          "mlpmixer": MLPMixer, "logreg": _logreg, "mlp": _mlp, "cnn": _cnn, "cnn_cifar10": _cnn_cifar10}


def build_model(name: str, input_shape: Sequence[int], num_classes: int = 10, **kw) -> nn.Module:
    """Build a model by name (see the module docstring); ``kw`` are the model's size options."""
    check_choice("model", name, tuple(MODELS))
    shape = tuple(int(s) for s in input_shape)
    num_classes = check_positive_int("num_classes", num_classes)
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


__all__ = ["MODELS", "FROG_MODELS", "FOMOH_MODELS", "build_model", "num_parameters", "activity_dims",
           "FCNet", "ResNet18", "ViT", "LeNet5", "ConvNet", "MLPMixer"]
