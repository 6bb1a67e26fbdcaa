"""Vision Transformer (Dosovitskiy et al. 2021) in the size used by FROG Section 4.5.

Pre-norm encoder blocks (LayerNorm → multi-head self-attention → residual, LayerNorm → MLP with
GELU → residual) on non-overlapping ``patch×patch`` patches plus a learned class token and learned
position embeddings; the class token goes through a final LayerNorm and a linear head. The paper's
configuration is the default: 6 blocks, 4 heads, hidden size 256, MLP size 512, patch 4.

Attention is computed by :func:`torch.nn.functional.scaled_dot_product_attention`, so PyTorch may
pick a fused kernel; forward-mode code must select the math backend (fused kernels have no forward
AD). ``block_names`` are the encoder blocks and the head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_positive_int


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, d/heads)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT classifier; ``block_names = [blocks.0, ..., blocks.{depth-1}, head]``."""

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
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, mlp_dim) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.block_names = [f"blocks.{i}" for i in range(depth)] + ["head"]
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (b, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])
