"""The one seed scheme of frogcore: every random stream is seeded by :func:`derive`.

``derive(seed, *parts)`` hashes the run seed together with the identifiers of the stream (a chapter's
name, a model, an approach, a cell of a grid, ...), so streams are independent of each other, stable
across Python processes and machines, and independent of which other runs share a batch or a process.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["derive", "generator"]


def derive(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and the stream's identifiers (SHA-256 of their JSON form)."""
    h = hashlib.sha256(json.dumps([int(seed), *parts], default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") % (2**63 - 1)


def generator(seed: int, *parts: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive`."""
    return torch.Generator(device=device).manual_seed(derive(seed, *parts))
