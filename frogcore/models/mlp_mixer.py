"""MLP-Mixer (Tolstikhin et al. 2021) in the configuration of the FROG authors' network code.

Non-overlapping ``patch×patch`` patches are embedded linearly into ``dim`` channels (``T`` tokens); each of
``depth`` mixer blocks applies

    x ← x + W₂ σ(W₁ LN(x)ᵀ)ᵀ        (token mixing: an MLP over the T tokens, hidden size ``token_mlp_dim``)
    x ← x + σ(LN(x) W₃) W₄          (channel mixing: an MLP over the channels, hidden size ``channel_mlp_dim``)

with σ = GELU (and optional dropout after each activation and each MLP); the head is LayerNorm → mean over
the tokens → linear. The defaults are the authors' (``nn_training/configs/defaults.ini`` of
Helmholtz-AI-Energy/frog): ``dim`` 512, ``token_mlp_dim`` 256, ``channel_mlp_dim`` 2048, ``depth`` 8, patch 4
for images smaller than 64 pixels (16 otherwise), no dropout; their ``block_wise`` grouping gives
``block_names = [patch_embed, blocks.0, ..., blocks.{depth-1}, head]``. The patch embedding is a strided
convolution, the same linear map (and parameter count) as their rearrange-then-linear.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_positive_int
from .lenet import _check_image


class PatchEmbedding(nn.Module):
    """``(B, C, H, W) → (B, T, dim)`` with ``T = (H/patch)·(W/patch)``."""

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class MixerBlock(nn.Module):
    def __init__(self, dim: int, tokens: int, token_mlp_dim: int, channel_mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(token_mlp_dim, tokens), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                         nn.Linear(channel_mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MixerHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).mean(dim=1))


class MLPMixer(nn.Module):
    """MLP-Mixer classifier (module docstring)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, *, dim: int = 512, depth: int = 8,
                 token_mlp_dim: int = 256, channel_mlp_dim: int = 2048, patch: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        c, h, w = _check_image("MLPMixer", input_shape)
        if patch is None:
            patch = 4 if min(h, w) < 64 else 16
        dim, depth, token_mlp_dim, channel_mlp_dim, patch = (
            check_positive_int(n, v) for n, v in (("dim", dim), ("depth", depth), ("token_mlp_dim", token_mlp_dim),
                                                  ("channel_mlp_dim", channel_mlp_dim), ("patch", patch)))
        num_classes = check_positive_int("num_classes", num_classes)
        if h % patch or w % patch:
            raise ValueError(f"patch={patch} must divide the image size {h}×{w}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")
        tokens = (h // patch) * (w // patch)
        self.patch_embed = PatchEmbedding(c, dim, patch)
        self.blocks = nn.ModuleList(MixerBlock(dim, tokens, token_mlp_dim, channel_mlp_dim, float(dropout))
                                    for _ in range(depth))
        self.head = MixerHead(dim, num_classes)
        self.block_names = ["patch_embed"] + [f"blocks.{i}" for i in range(depth)] + ["head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
