"""The per-source readers behind :func:`trainers.data.loading.load_dataset`: one function per data source, one table.

Each reader returns (x NCHW numpy, y int64 numpy, number of classes) at the source's own size; resizing,
channels and the train/validation split are :mod:`trainers.data.loading`'s job. ``READERS`` maps each name of
``trainers.data.config.SOURCES`` to its reader (checked at import).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import ConfigError, UserError

from trainers.data.config import SOURCES, DataConfig
from trainers.data.sources import EXPECTED, IMAGE_EXTS, Origin, bad_source, downloaded, source_path

__all__ = ["READERS", "decode_rgb", "list_imagefolder", "read_imagefolder", "read_source"]


def read_source(cfg: DataConfig, image_size: int, in_chans: int, origin: Origin):
    """(x NCHW numpy, y int numpy, num_classes) of the source."""
    if cfg.download:
        return _cifar(cfg, downloaded(cfg, origin), origin)
    reader, needs_path = READERS[cfg.name]
    if not needs_path:
        return reader(cfg, image_size, in_chans)
    if cfg.path is None:
        raise ConfigError(origin.file, origin.key, f"is required for the `{cfg.name}` source", EXPECTED[cfg.name])
    return reader(cfg, source_path(cfg, origin), origin)


def _digits(cfg: DataConfig, image_size: int, in_chans: int):
    """scikit-learn's embedded 8x8 handwritten digits, grey, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:, None].astype(np.float32) / 16.0), d.target.astype(np.int64), 10


def _synthetic(cfg: DataConfig, image_size: int, in_chans: int):
    """Class prototypes (smooth random patterns) shifted by a few pixels and buried in noise."""
    rng = np.random.default_rng(cfg.seed + 12345)
    k, n = cfg.synthetic_classes, cfg.synthetic_samples
    coarse = rng.standard_normal((k, in_chans, 4, 4)).astype(np.float32)
    protos = F.interpolate(
        torch.from_numpy(coarse), size=(image_size, image_size), mode="bicubic", align_corners=False
    ).numpy()
    protos /= protos.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    y = np.arange(n) % k
    rng.shuffle(y)
    x = protos[y]
    max_shift = max(1, image_size // 8)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    for s in np.unique(shifts, axis=0):
        sel = np.all(shifts == s, axis=1)
        x[sel] = np.roll(x[sel], shift=(int(s[0]), int(s[1])), axis=(2, 3))
    noise = 0.25 + 2.75 * cfg.synthetic_difficulty
    x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64), k


def _unpickle(cfg, path: Path, origin: Origin):
    """(x uint8 N,3,32,32, y) of one CIFAR batch file, read without running any pickled code."""
    from trainers.data.safe_pickle import load_cifar_pickle

    try:
        with open(path, "rb") as fh:
            d = load_cifar_pickle(fh)  # only numpy arrays, lists, numbers, strings: no code
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        label_key = "labels" if cfg.name == "cifar10" else "fine_labels"
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[label_key], dtype=np.int64)
    except Exception as err:  # noqa: BLE001 - any failure means a malformed file
        raise bad_source(cfg, path, origin, f"could not read this pickle ({type(err).__name__}: {err})") from None
    if len(x) != len(y):
        raise bad_source(cfg, path, origin, f"has {len(x)} images but {len(y)} labels")
    return x, y


def _cifar(cfg: DataConfig, path: Path, origin: Origin):
    """The CIFAR-10/100 training batches in ``path`` (or its ``cifar-10-batches-py``/``cifar-100-python``)."""
    if not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    names = [f"data_batch_{i}" for i in range(1, 6)] if cfg.name == "cifar10" else ["train"]
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if not (path / names[0]).is_file() and (path / sub / names[0]).is_file():
            path = path / sub
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise bad_source(cfg, path, origin, f"missing {', '.join(missing)}")
    parts = [_unpickle(cfg, path / n, origin) for n in names]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, 10 if cfg.name == "cifar10" else 100


def list_imagefolder(cfg: DataConfig, path: Path, origin: Origin) -> tuple[list[Path], np.ndarray, int]:
    """(image files in class then name order, their labels, number of classes) of an image folder."""
    if not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    try:
        classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = {c: sorted(p for p in (path / c).iterdir() if p.suffix.lower() in IMAGE_EXTS) for c in classes}
    except OSError as err:
        raise bad_source(cfg, Path(err.filename or path), origin, f"cannot list it ({err.strerror})") from None
    classes = [c for c in classes if files[c]]
    if len(classes) < 2:
        raise bad_source(cfg, path, origin, f"found {len(classes)} class folder(s) with images, need at least 2")
    paths = [f for c in classes for f in files[c]]
    labels = np.asarray([label for label, c in enumerate(classes) for _ in files[c]], dtype=np.int64)
    return paths, labels, len(classes)


def decode_rgb(f: str | Path, ref_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The image file ``f`` as RGB uint8 (H, W, 3), resized (bilinear) to ``ref_hw`` when given and different."""
    from PIL import Image

    with Image.open(f) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if ref_hw is not None and arr.shape[:2] != tuple(ref_hw):
        arr = np.asarray(Image.fromarray(arr).resize((ref_hw[1], ref_hw[0]), Image.BILINEAR))
    return arr


def _imagefolder(cfg: DataConfig, path: Path, origin: Origin):
    """Every image of a class-per-subfolder tree, RGB uint8, resized to the first image's size."""
    files, y, k = list_imagefolder(cfg, path, origin)
    xs = []
    for f in files:
        try:
            arr = decode_rgb(f, xs[0].shape[1:] if xs else None)
        except Exception as err:  # noqa: BLE001
            raise bad_source(cfg, f, origin, f"unreadable image ({err})") from None
        xs.append(arr.transpose(2, 0, 1))
    return np.stack(xs), y, k


def read_imagefolder(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(x uint8 NCHW, y, num_classes) of the image folder at ``cfg.path``, decoded as the source does."""
    return _imagefolder(cfg, Path(os.path.expanduser(cfg.path)), Origin(None, "path"))


def _npz(cfg: DataConfig, path: Path, origin: Origin):
    """Arrays ``x`` (N,H,W / NCHW / NHWC) and ``y`` (non-negative integer labels) of an ``.npz`` file."""
    if not path.is_file():
        raise bad_source(cfg, path, origin, "no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise bad_source(cfg, path, origin, f"has arrays {sorted(z.files)}, not `x` and `y`")
            x, y = z["x"], z["y"]
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise bad_source(cfg, path, origin, f"not a readable .npz ({err})") from None
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise bad_source(
            cfg, path, origin, f"`y` must be {len(x)} non-negative integer labels, got shape {y.shape} dtype {y.dtype}"
        )
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise bad_source(cfg, path, origin, f"`x` has shape {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return x, y.astype(np.int64), int(y.max()) + 1


# source name (``trainers.data.config.SOURCES``) -> (reader, whether it reads ``path``): a reader with a path
# takes (cfg, path, origin), one without (cfg, image_size, in_chans); each returns (x NCHW, y, num_classes).
READERS = {
    "digits": (_digits, False),
    "synthetic": (_synthetic, False),
    "cifar10": (_cifar, True),
    "cifar100": (_cifar, True),
    "imagefolder": (_imagefolder, True),
    "npz": (_npz, True),
}
if set(READERS) != set(SOURCES):
    raise ImportError(
        f"trainers.data.loading.READERS {sorted(READERS)} and trainers.data.config.SOURCES {sorted(SOURCES)} "
        "must name the same sources"
    )
