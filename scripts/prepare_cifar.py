"""Turn a CIFAR-10 download into uint8 ``.npz`` files (``x``, ``y``, ``classes``) for the ``npz`` data source.

Studies and benchmarks load 50,000 images per worker; decoding them each time costs ~20 s, reading an ``.npz``
well under a second. The source is the official ``cifar-10-python.tar.gz`` (or the ``cifar-10-batches-py``
folder it unpacks to), read by the ``cifar10`` source's own pickle reader; or a JPEG copy with one folder per
class under ``cifar10/train`` and ``cifar10/test``, read by the ``imagefolder`` source's own decoder. Either
way the arrays are what that source would give.

    python scripts/prepare_cifar.py ~/Downloads/cifar-10-python.tar.gz data/   # -> data/cifar10-{train,test}.npz
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from nas.fsio import atomic_write
from trainers.data.config import DataConfig, Origin
from trainers.data.readers import CIFAR10_CLASSES, read_cifar, read_imagefolder, unpickle_batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "source",
        help="cifar-10-python.tar.gz or its cifar-10-batches-py folder; or a JPEG copy (.tar.gz or folder) holding "
        "cifar10/train/<class>/ and cifar10/test/<class>/",
    )
    p.add_argument("out", help="folder for cifar10-train.npz and cifar10-test.npz")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        if src.is_file():
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
            src = Path(tmp)
        pickles = next((p for p in (src, src / "cifar-10-batches-py") if (p / "data_batch_1").is_file()), None)
        root = src / "cifar10" if (src / "cifar10").is_dir() else src
        for split in ("train", "test"):
            x, y = _pickled(pickles, split) if pickles else _jpegs(root, split)
            buf = io.BytesIO()
            np.savez(buf, x=x, y=y, classes=np.array(CIFAR10_CLASSES))
            dest = atomic_write(out / f"cifar10-{split}.npz", buf.getvalue())
            print(f"{split}: {len(y)} images, {len(CIFAR10_CLASSES)} classes, {x.shape[1:]} uint8 -> {dest}")
    return 0


def _pickled(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The official python batches: the ``cifar10`` source's reader (training) or its test batch."""
    cfg = DataConfig(name="cifar10", path=str(folder))
    origin = Origin(None, "source")
    if split == "train":
        x, y, _ = read_cifar(cfg, folder, 32, 3, origin)
        return x, y
    return unpickle_batch(cfg, folder / "test_batch", origin)


def _jpegs(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A JPEG copy, one folder per class, decoded as the ``imagefolder`` source does (class names checked)."""
    folder = root / split
    x, y, k = read_imagefolder(DataConfig(name="imagefolder", path=str(folder)))
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if tuple(names) != CIFAR10_CLASSES:
        raise SystemExit(f"{folder}: class folders {names}, expected CIFAR-10's {list(CIFAR10_CLASSES)}")
    return x, y


if __name__ == "__main__":
    sys.exit(main())
