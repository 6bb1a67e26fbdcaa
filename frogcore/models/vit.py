"""Vision Transformer (Dosovitskiy et al. 2021) in the size and form used by FROG Section 4.5.

Pre-norm encoder blocks (LayerNorm → multi-head self-attention → residual, LayerNorm → MLP with
GELU → residual) on non-overlapping ``patch×patch`` patches plus a learned class token and learned
position embeddings; the class token goes through a final LayerNorm and a linear head. The paper's
configuration is the default: 6 blocks, 4 heads, hidden size 256, MLP size 512, patch 4. Every
LayerNorm uses ``eps = 1e-6``, as torchvision's ViT and the authors' copy of it
(Helmholtz-AI-Energy/frog, ``nn_training/vision_transformer.py:184``, ``:234``).

Initialisation (torchvision's ``VisionTransformer``, as the authors use it; their file and line):

* patch embedding (a ``patch×patch`` stride-``patch`` convolution): weight truncated normal with
  ``std = √(1/fan_in)``, ``fan_in = c·patch²``, bias 0 (``vision_transformer.py:91``, ``:93``);
* class token 0 (``:130``); position embedding ``N(0, 0.02²)`` (``:145``);
* attention (``nn.MultiheadAttention``, ``:158``): the stacked ``(3d, d)`` query/key/value projection
  Xavier-uniform (bound ``√(6/(d + 3d))``) with bias 0; the output projection keeps PyTorch's default
  ``Linear`` weight (uniform, bound ``1/√d``) with bias 0;
* MLP (torchvision's ``MLPBlock``, ``:44``, ``:173``): both weights Xavier-uniform, biases ``N(0, 10⁻¹²)``;
* LayerNorms: weight 1, bias 0 (PyTorch's default);
* head ``Linear``: weight and bias 0 (``:219–221``), so the untrained network outputs zero logits.

Activity-perturbation points (``block_names``): the authors' ``grouping_mode = wide_1``
(``nn_training/configs/defaults.ini:60``, ``vision_transformer.py:283–290``) forms one group per encoder
block, with the input processing (patch embedding, class token, position embedding) in the first group
and the output processing (final LayerNorm, head) in the **last** group, together with the last encoder
block. The perturbed activations are the group outputs: the outputs of encoder blocks ``0 … depth−2`` and
the logits, ``block_names = [blocks.0, …, blocks.{depth−2}, head]``. The parameters of the last encoder
block are therefore updated through the head's block-local backward (the engine's block-local VJP runs
from the output of ``blocks.{depth−2}`` through ``blocks.{depth−1}`` and the head). Per sample this is
``(depth−1)·tokens·dim + classes`` values: 5·65·256 + 10 = 83,210 on CIFAR-10 and 5·50·256 + 10 = 64,010
on MNIST at the paper's size.

Attention is computed by :func:`torch.nn.functional.scaled_dot_product_attention`, so PyTorch may
pick a fused kernel; forward-mode code must select the math backend (fused kernels have no forward
AD).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_positive_int

LN_EPS = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parametrisation and initialisation."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # weight (3d, d): rows = query, key, value projections
        self.proj = nn.Linear(dim, dim)  # PyTorch's default weight init, kept
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, d/heads)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        for m in (self.mlp[0], self.mlp[2]):  # torchvision's MLPBlock
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT classifier (module docstring); ``block_names = [blocks.0, ..., blocks.{depth-2}, head]``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, *, depth: int = 6, heads: int = 4,
                 dim: int = 256, mlp_dim: int = 512, patch: int = 4):
        super().__init__()
        depth, heads, dim, mlp_dim, patch = (check_positive_int(n, v) for n, v in
                                             (("depth", depth), ("heads", heads), ("dim", dim),
                                              ("mlp_dim", mlp_dim), ("patch", patch)))
        num_classes = check_positive_int("num_classes", num_classes)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width); got {tuple(input_shape)}")
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"patch={patch} must divide the image size {h}×{w}")
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        num_patches = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, dim, patch, stride=patch)
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1 / (c * patch * patch)))
        nn.init.zeros_(self.patch_embed.bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, num_patches + 1, dim).normal_(std=0.02))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, mlp_dim) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim, eps=LN_EPS), nn.Linear(dim, num_classes))
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)
        # wide_1 grouping: the last encoder block belongs to the head's group (module docstring)
        self.block_names = [f"blocks.{i}" for i in range(depth - 1)] + ["head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (b, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])
