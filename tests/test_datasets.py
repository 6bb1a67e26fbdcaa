"""Datasets: tiny MNIST (IDX) and CIFAR-10 (pickle) files in torchvision's layout, read by the real code."""
import gzip
import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from frogcore.datasets import DatasetNotFoundError, load_cifar10_arrays, load_mnist_arrays, load_splits, read_idx


def write_idx(path, arr, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    data = head + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, a in arrays.items():
        write_idx(raw / name, a, gz=gz)
    return {k: a.astype(np.uint8) for k, a in arrays.items()}


def make_cifar(root, per_batch=2, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)  # rows: 1024 red, 1024 green, 1024 blue
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_are_read_exactly(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    trx, try_, tex, tey = load_mnist_arrays(tmp_path)
    assert trx.shape == (12, 1, 28, 28) and tex.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(trx[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(tey, arrays["t10k-labels-idx1-ubyte"])


def test_mnist_splits_sizes_labels_and_standardisation(tmp_path):
    arrays = make_mnist(tmp_path, n_train=60, n_test=7)
    s = load_splits("mnist", seed=1, root=tmp_path)
    assert (len(s.train[0]), len(s.val[0]), len(s.test[0])) == (50, 10, 7)  # 5/6 : 1/6 like 50k / 10k
    assert s.input_shape == (1, 28, 28) and s.train[0].dtype == torch.float32 and s.train[1].dtype == torch.int64
    # train + val are a partition of the training file; the test split is the test file in order
    labels = np.sort(np.concatenate([s.train[1].numpy(), s.val[1].numpy()]))
    np.testing.assert_array_equal(labels, np.sort(arrays["train-labels-idx1-ubyte"]))
    np.testing.assert_array_equal(s.test[1].numpy(), arrays["t10k-labels-idx1-ubyte"])
    # standardised with training statistics; the test images map back to the raw bytes
    x = s.train[0].double()
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    raw_train = np.stack([a for a in arrays["train-images-idx3-ubyte"]]) / 255.0
    perm = np.random.default_rng(1).permutation(60)
    tr = raw_train[perm[10:]]
    back = s.test[0][:, 0].double().numpy() * tr.std() + tr.mean()
    np.testing.assert_allclose(back, arrays["t10k-images-idx3-ubyte"] / 255.0, atol=1e-5)
    # the same seed gives the same split, another seed another one
    assert torch.equal(load_splits("mnist", seed=1, root=tmp_path).val[0], s.val[0])
    assert not torch.equal(load_splits("mnist", seed=2, root=tmp_path).val[0], s.val[0])


def test_cifar10_pickles_are_read_in_channel_major_layout(tmp_path):
    written = make_cifar(tmp_path)
    trx, try_, tex, tey = load_cifar10_arrays(tmp_path)
    assert trx.shape == (10, 3, 32, 32) and tex.shape == (3, 3, 32, 32)
    data, labels = written["data_batch_2"]
    np.testing.assert_array_equal(trx[2, 1].ravel(), data[0, 1024:2048])  # green plane of batch 2's first image
    np.testing.assert_array_equal(try_[2:4], labels)
    np.testing.assert_array_equal(tey, written["test_batch"][1])


def test_cifar10_splits(tmp_path):
    make_cifar(tmp_path, per_batch=10)
    s = load_splits("cifar10", root=tmp_path)
    assert (len(s.train[0]), len(s.val[0]), len(s.test[0])) == (40, 10, 3)  # 4/5 : 1/5 like 40k / 10k
    assert s.input_shape == (3, 32, 32)
    per_channel = s.train[0].double().mean(dim=(0, 2, 3))
    assert per_channel.abs().max() < 1e-5  # standardised per channel


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("mnist", root=tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(err.value)
    assert "download=True" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(err.value)


def test_download_without_torchvision_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match="vision"):
        load_splits("mnist", root=tmp_path, download=True)


def test_data_root_from_environment(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    monkeypatch.setenv("FROG_DATA_DIR", str(tmp_path))
    assert len(load_splits("mnist").test[0]) == 5


def test_bad_idx_file(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="IDX"):
        read_idx(p)
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header"):
        read_idx(tmp_path / "short")


def test_digits_splits():
    s = load_splits("digits", seed=0)
    assert (len(s.train[0]), len(s.val[0]), len(s.test[0])) == (1077, 360, 360)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    assert abs(s.train[0].mean().item()) < 1e-5
    assert not torch.equal(load_splits("digits", seed=1).test[0], s.test[0])


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset"):
        load_splits("imagenet")
