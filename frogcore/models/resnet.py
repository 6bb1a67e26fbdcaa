"""ResNet18 (He et al. 2016) with the layout and initialisation of torchvision's ``resnet18``.

The architecture is torchvision's unmodified ResNet18 (7×7 stride-2 stem with max-pooling, four
stages of two BasicBlocks, global average pooling, linear head); only the number of input channels
follows the data (1 for MNIST/digits, 3 for CIFAR-10) and the stem's four modules are grouped into
one ``stem`` submodule so that its output can be an activity-perturbation point. Parameter counts
are therefore identical to torchvision's (11,181,642 for 3 input channels and 10 classes).

Initialisation: torchvision's (He-normal, fan-out convolutions; BatchNorm weight 1, bias 0; PyTorch's default
for the linear head). With a number of input channels other than 3 the first convolution keeps PyTorch's
default ``Conv2d`` initialisation (uniform with bound ``1/√(in_ch·7·7)``), as in the authors' code, which
replaces torchvision's 3-channel first convolution by a freshly built one (Helmholtz-AI-Energy/frog,
``nn_training/models.py:133–134``).

``width`` (default 64, the standard) scales the channel counts of every stage (``width·{1,2,4,8}``)
for cheap CPU runs; any other value is *not* ResNet18 any more and is reported as such.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_positive_int


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision-compatible ResNet18; ``block_names = [stem, layer1..layer4, fc]``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, width: int = 64):
        super().__init__()
        width = check_positive_int("width", width)
        num_classes = check_positive_int("num_classes", num_classes)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width); got {tuple(input_shape)}")
        in_ch = input_shape[0]
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", nn.Conv2d(in_ch, width, 7, stride=2, padding=3, bias=False))
        self.stem.add_module("bn1", nn.BatchNorm2d(width))
        self.stem.add_module("relu", nn.ReLU())
        self.stem.add_module("maxpool", nn.MaxPool2d(3, stride=2, padding=1))
        chans = [width, 2 * width, 4 * width, 8 * width]
        prev = width
        for i, ch in enumerate(chans):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(prev, ch, stride), BasicBlock(ch, ch)))
            prev = ch
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(prev, num_classes)
        self.block_names = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
        self._init_weights()
        if in_ch != 3:
            # the authors build torchvision's 3-channel resnet18 and then replace its first convolution by a
            # new nn.Conv2d (Helmholtz-AI-Energy/frog, nn_training/models.py:133-134), which keeps PyTorch's
            # default initialisation (uniform, bound 1/sqrt(in_ch*7*7)) instead of torchvision's He-normal one
            self.stem.conv1.reset_parameters()

    def _init_weights(self) -> None:
        # torchvision's initialisation: He-normal (fan-out) convolutions, BatchNorm γ=1 β=0,
        # PyTorch's default for the linear head.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)
