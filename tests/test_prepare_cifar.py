"""scripts/prepare_cifar.py on both CIFAR-10 forms a user may have: the official python batches and a JPEG copy."""

from __future__ import annotations

import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.data.config import DataConfig
from trainers.data.loading import read_dataset
from trainers.data.readers import CIFAR10_CLASSES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import prepare_cifar  # noqa: E402


def _batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    y = np.arange(n) % 10
    with open(path, "wb") as fh:
        pickle.dump({b"data": x, b"labels": y.tolist()}, fh)
    return x.reshape(n, 3, 32, 32), y


def test_official_python_archive(tmp_path):
    folder = tmp_path / "src" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [_batch(folder / f"data_batch_{i}", 20, i) for i in range(1, 6)]
    test = _batch(folder / "test_batch", 30, 9)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    assert prepare_cifar.main([str(archive), str(tmp_path / "out")]) == 0
    with np.load(tmp_path / "out" / "cifar10-train.npz") as z:
        assert np.array_equal(z["x"], np.concatenate([b[0] for b in train])) and len(z["y"]) == 100
    with np.load(tmp_path / "out" / "cifar10-test.npz") as z:
        assert np.array_equal(z["x"], test[0]) and np.array_equal(z["y"], test[1])
        assert tuple(z["classes"]) == CIFAR10_CLASSES
    # the npz source reads the class names back, so a trained model names its classes
    ds = read_dataset(DataConfig(name="npz", path=str(tmp_path / "out" / "cifar10-test.npz")), 32, 3)
    assert ds.class_names == CIFAR10_CLASSES


def test_jpeg_folders(tmp_path):
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            d = tmp_path / "cifar10" / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (32, 32), (10, 200, 30)).save(d / "0001.png")
    assert prepare_cifar.main([str(tmp_path), str(tmp_path / "out")]) == 0
    with np.load(tmp_path / "out" / "cifar10-train.npz") as z:
        assert z["x"].shape == (10, 3, 32, 32) and z["x"][0, 1, 0, 0] == 200


def test_npz_class_names_are_checked(tmp_path):
    from nas.errors import UserError

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 8, 8), np.uint8), y=np.array([0, 1, 0, 1]), classes=np.array(["a"]))
    with pytest.raises(UserError, match="`classes` must be 2 or more distinct"):
        read_dataset(DataConfig(name="npz", path=str(tmp_path / "d.npz")), 8, 3)
