"""Plotting helpers shared by the notebooks: one seaborn style and atomic figure files."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .results import atomic_path


def set_style() -> None:
    """The book's figure style (seaborn whitegrid, readable font sizes)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, folder: str | os.PathLike, name: str) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` atomically and return the path.

    ``folder`` is typically ``StoredResult.figures_dir``. The figure stays open so that the
    notebook still displays it.
    """
    path = Path(folder) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
