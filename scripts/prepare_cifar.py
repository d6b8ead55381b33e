"""Decode the CIFAR-10 JPEG folders once into uint8 ``.npz`` files for the ``npz`` data source.

Studies and benchmarks load 50,000 images per worker; decoding JPEGs each time costs ~20 s, reading an
``.npz`` well under a second. The decoding is the ``imagefolder`` source's own (``trainers.data.loading``), so the
arrays are exactly what an ``imagefolder`` source pointed at the same folder would give.

    python scripts/prepare_cifar.py ../shared/data/cifar10-jpg.tar.gz data/   # -> data/cifar10-{train,test}.npz
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from trainers.data.config import DataConfig
from trainers.data.readers import read_imagefolder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="cifar10-jpg.tar.gz, or the unpacked folder holding cifar10/train and cifar10/test")
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
        root = src / "cifar10" if (src / "cifar10").is_dir() else src
        for split in ("train", "test"):
            x, y, k = read_imagefolder(DataConfig(name="imagefolder", path=str(root / split)))
            np.savez(out / f"cifar10-{split}.npz", x=x, y=y)
            print(f"{split}: {len(y)} images, {k} classes, {x.shape[1:]} uint8 -> {out / f'cifar10-{split}.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
