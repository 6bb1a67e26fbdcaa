"""Datasets as tensors: train / validation / test splits.

``load_splits(name, seed=0, root=None, download=False)`` returns a :class:`Splits` of ``(X, y)``
pairs with ``X`` float32 of shape ``(N, C, H, W)`` (standardised per channel with training-split
statistics) and ``y`` int64 class labels. No augmentation.

* ``"digits"`` — scikit-learn's handwritten digits (1797 images, 1×8×8, 10 classes), shipped with
  scikit-learn and therefore always available offline: the data of the ``default`` profiles.
  Split 1077 / 360 / 360 by ``seed``.
* ``"mnist"`` — MNIST (1×28×28): the 60k training images are split 50k train / 10k validation by
  ``seed``; the official 10k test images are the test split.
* ``"cifar10"`` — CIFAR-10 (3×32×32): the 50k training images are split 40k / 10k by ``seed``;
  the official 10k test images are the test split.

MNIST and CIFAR-10 are read from their standard files in torchvision's folder layout, so existing
torchvision downloads are reused::

    <root>/MNIST/raw/train-images-idx3-ubyte   (or .gz)   <root>/cifar-10-batches-py/data_batch_1
    <root>/MNIST/raw/train-labels-idx1-ubyte   (or .gz)   ...
    <root>/MNIST/raw/t10k-images-idx3-ubyte    (or .gz)   <root>/cifar-10-batches-py/data_batch_5
    <root>/MNIST/raw/t10k-labels-idx1-ubyte    (or .gz)   <root>/cifar-10-batches-py/test_batch

``root`` defaults to ``$FROG_DATA_DIR`` or ``data/`` at the repository root. Reading needs only
numpy; ``download=True`` fetches missing files through torchvision (the optional ``vision`` extra:
``pip install -e .[vision]``), and only when asked.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import check_choice

DATASETS = ("digits", "mnist", "cifar10")

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
# fraction of the official training set held out for validation: 10k of 60k (MNIST), 10k of 50k (CIFAR-10)
VAL_FRACTION = {"mnist": 1 / 6, "cifar10": 1 / 5}


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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says where to put them."""


def default_root() -> Path:
    """``$FROG_DATA_DIR`` if set, else ``data/`` at the repository root (or the current directory)."""
    env = os.environ.get("FROG_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    return (repo if (repo / "pyproject.toml").exists() else Path.cwd()) / "data"


def _split_indices(n: int, sizes: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    a, b, _ = sizes
    return [perm[:a], perm[a:a + b], perm[a + b:]]


def _standardise(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Standardise every part with the per-channel mean and std of ``parts[0]`` (N, C, H, W)."""
    mean = parts[0].mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = parts[0].std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std[std == 0] = 1.0
    return [((p - mean) / std).astype(np.float32) for p in parts]


def _to_splits(parts: list[tuple[np.ndarray, np.ndarray]], name: str, num_classes: int = 10) -> Splits:
    xs = _standardise([x for x, _ in parts])
    tensors = [(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))
               for x, (_, y) in zip(xs, parts)]
    return Splits(*tensors, num_classes=num_classes, name=name)


def _train_val(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    n_val = int(round(len(x) * fraction))
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, va = perm[n_val:], perm[:n_val]
    return (x[tr], y[tr]), (x[va], y[va])


# ----------------------------------------------------------------------------- digits

def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 ``(N, 1, 8, 8)`` and int64 labels.

    Read straight from the CSV file that scikit-learn ships (what ``sklearn.datasets.load_digits``
    parses), which avoids importing scikit-learn — seconds on a busy machine; falls back to
    ``load_digits`` if the file is not where scikit-learn keeps it.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
            if raw.shape == (1797, 65):
                return raw[:, :-1].reshape(-1, 1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32)[:, None], data.target.astype(np.int64)


def load_digits_splits(seed: int = 0) -> Splits:
    """scikit-learn digits: 1797 images split 1077 / 360 / 360 (train / val / test) by ``seed``."""
    x, y = _digits_arrays()
    idx = _split_indices(len(x), (1077, 360, 360), seed)
    return _to_splits([(x[i], y[i]) for i in idx], "digits")


# ----------------------------------------------------------------------------- MNIST (IDX files)

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {arr.size} values")
    return arr.reshape(shape)


def _find_mnist_file(raw: Path, stem: str) -> Path | None:
    for cand in (raw / stem, raw / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def _missing_message(name: str, folder: Path, files: list[str]) -> str:
    listed = "\n".join(f"    {folder / f}" for f in files)
    return (f"{name} files not found. Put the standard files here (torchvision's layout; MNIST files may "
            f"be .gz):\n{listed}\nor let the companion download them (needs torchvision: pip install -e '.[vision]'): "
            f"download=True in Python, `-p download True` for papermill, `--param download=true` for "
            f"`python -m frogcore.pipeline`, `make book PARAMS=download=true`; "
            f"or point root= / $FROG_DATA_DIR to a folder that has them.")


def _download(name: str, root: Path) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ImportError(f"download=True for {name!r} needs torchvision: pip install -e '.[vision]'") from e
    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_mnist_arrays(root: str | os.PathLike | None = None, download: bool = False):
    """``(train_x, train_y, test_x, test_y)`` as uint8 ``(N, 1, 28, 28)`` and int64 arrays."""
    root = Path(root) if root is not None else default_root()
    raw = root / "MNIST" / "raw"
    paths = {k: _find_mnist_file(raw, v) for k, v in MNIST_FILES.items()}
    if any(p is None for p in paths.values()):
        if not download:
            raise DatasetNotFoundError(_missing_message("MNIST", raw, list(MNIST_FILES.values())))
        _download("mnist", root)
        paths = {k: _find_mnist_file(raw, v) for k, v in MNIST_FILES.items()}
    arr = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arr[f"{split}_images"], arr[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"MNIST {split} files have inconsistent shapes {x.shape} and {y.shape}")
    return (arr["train_images"][:, None], arr["train_labels"].astype(np.int64),
            arr["test_images"][:, None], arr["test_labels"].astype(np.int64))


def load_mnist_splits(seed: int = 0, root: str | os.PathLike | None = None, download: bool = False) -> Splits:
    """MNIST: 50k / 10k split of the training files by ``seed``, official 10k test set."""
    trx, try_, tex, tey = load_mnist_arrays(root, download)
    train, val = _train_val(trx.astype(np.float32) / 255.0, try_, VAL_FRACTION["mnist"], seed)
    return _to_splits([train, val, (tex.astype(np.float32) / 255.0, tey)], "mnist")


# ----------------------------------------------------------------------------- CIFAR-10 (pickles)

def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 batch (no 'data'/'labels' entries)")
    x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)


def load_cifar10_arrays(root: str | os.PathLike | None = None, download: bool = False):
    """``(train_x, train_y, test_x, test_y)`` as uint8 ``(N, 3, 32, 32)`` and int64 arrays."""
    root = Path(root) if root is not None else default_root()
    folder = root / CIFAR10_DIR
    files = [*CIFAR10_TRAIN, CIFAR10_TEST]
    if not all((folder / f).exists() for f in files):
        if not download:
            raise DatasetNotFoundError(_missing_message("CIFAR-10", folder, files))
        _download("cifar10", root)
    train = [_read_cifar_batch(folder / f) for f in CIFAR10_TRAIN]
    tex, tey = _read_cifar_batch(folder / CIFAR10_TEST)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), tex, tey)


def load_cifar10_splits(seed: int = 0, root: str | os.PathLike | None = None, download: bool = False) -> Splits:
    """CIFAR-10: 40k / 10k split of the training batches by ``seed``, official 10k test batch."""
    trx, try_, tex, tey = load_cifar10_arrays(root, download)
    train, val = _train_val(trx.astype(np.float32) / 255.0, try_, VAL_FRACTION["cifar10"], seed)
    return _to_splits([train, val, (tex.astype(np.float32) / 255.0, tey)], "cifar10")


def load_splits(name: str, *, seed: int = 0, root: str | os.PathLike | None = None,
                download: bool = False) -> Splits:
    """Load a dataset by name; see the module docstring for the names, splits and file layout."""
    check_choice("dataset", name, DATASETS)
    if name == "digits":
        return load_digits_splits(seed)
    if name == "mnist":
        return load_mnist_splits(seed, root, download)
    return load_cifar10_splits(seed, root, download)
