"""The per-source readers behind :func:`trainers.data.loading.load_dataset`, one function per data source.

Each source's reader is named beside the source in :data:`trainers.data.config.SOURCES` (imported only when
that source is read); :func:`read_source` calls it. A reader is called as ``reader(cfg, path, image_size,
in_chans, origin)`` and returns (x NCHW numpy, y int64 numpy, number of classes); the channels, the resampling
of whole-dataset arrays and the train/validation split are :mod:`trainers.data.loading`'s job. The ``npz``
reader is :mod:`trainers.data.npz` (torch-free, so that the driver can check an npz).

An image folder's files are each decoded and resized on their own to the image size (:func:`decode_rgb`):
no file, the first one included, sets the size of the others.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import ConfigError
from nas.fsio import open_regular
from trainers.data.config import IMAGE_EXTS, SOURCES, DataConfig, Origin, bad_source
from trainers.data.download import ARCHIVES
from trainers.data.safe_pickle import load_cifar_pickle
from trainers.data.sources import cifar_folder, downloaded, source_path

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(found: int | tuple[str, ...]) -> tuple[str, ...]:
    """The class names a reader gave (a tuple), or their indices as text when it gave only their number."""
    return found if isinstance(found, tuple) else tuple(str(i) for i in range(found))


def read_source(cfg: DataConfig, image_size: int, in_chans: int, origin: Origin):
    """(x NCHW numpy, y int numpy, class names) of the source, read by its reader (a reader gives the names of
    its classes, or only their number: then they are called by their index)."""
    source = SOURCES[cfg.name]
    if cfg.download:
        path = downloaded(cfg, origin)
    elif source.path is None:
        path = None
    elif cfg.path is None:
        raise ConfigError(origin.file, origin.key, f"is required for the `{cfg.name}` source", source.expected)
    else:
        path = source_path(cfg, origin)
    x, y, found = source.read()(cfg, path, image_size, in_chans, origin)
    return x, y, class_names(found)


def read_digits(cfg: DataConfig, path: None, image_size: int, in_chans: int, origin: Origin):
    """scikit-learn's embedded 8x8 handwritten digits, grey, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:, None].astype(np.float32) / 16.0), d.target.astype(np.int64), tuple(map(str, range(10)))


def read_synthetic(cfg: DataConfig, path: None, image_size: int, in_chans: int, origin: Origin):
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


def unpickle_batch(cfg, path: Path, origin: Origin):
    """(x uint8 N,3,32,32, y) of one CIFAR batch file, read without running any pickled code."""
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


def read_cifar(cfg: DataConfig, path: Path, image_size: int, in_chans: int, origin: Origin):
    """The CIFAR-10/100 training batches in ``path`` (or its unpacked ``cifar-10-batches-py``/``cifar-100-python``)."""
    path = cifar_folder(cfg, path, origin)
    parts = [unpickle_batch(cfg, path / n, origin) for n in ARCHIVES[cfg.name].needed]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, CIFAR10_CLASSES if cfg.name == "cifar10" else _cifar100_names(path)


def _cifar100_names(path: Path) -> tuple[str, ...] | int:
    """CIFAR-100's fine label names from the ``meta`` file beside its batches (their count when it is absent
    or unreadable: the names are a convenience, the labels are in the batches)."""
    try:
        with open(path / "meta", "rb") as fh:
            meta = load_cifar_pickle(fh)
        names = meta.get(b"fine_label_names") or meta.get("fine_label_names")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception:  # noqa: BLE001 - a missing or odd meta file only costs the names
        return SOURCES["cifar100"].classes
    return names if len(names) == SOURCES["cifar100"].classes and len(set(names)) == len(names) else len(names)


def list_imagefolder(cfg: DataConfig, path: Path, origin: Origin) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(image files in class then name order, their labels, class names: the sub-folders' names) of an image
    folder. A name with
    an image extension that is not a regular file (a FIFO, a device, a folder, a dangling link) is refused."""
    if not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    try:
        classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = {c: _images_in(cfg, path / c, origin) for c in classes}
    except OSError as err:
        raise bad_source(cfg, Path(err.filename or path), origin, f"cannot list it ({err.strerror})") from None
    classes = [c for c in classes if files[c]]
    if len(classes) < 2:
        raise bad_source(cfg, path, origin, f"found {len(classes)} class folder(s) with images, need at least 2")
    paths = [f for c in classes for f in files[c]]
    labels = np.asarray([label for label, c in enumerate(classes) for _ in files[c]], dtype=np.int64)
    return paths, labels, tuple(classes)


def _images_in(cfg: DataConfig, folder: Path, origin: Origin) -> list[Path]:
    """The image files of one class folder, by name; a non-regular entry with an image name is refused."""
    out = []
    with os.scandir(folder) as entries:
        for e in entries:
            if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTS:
                continue
            if not e.is_file():  # follows a link: a link to an image file is one
                raise bad_source(
                    cfg, Path(e.path), origin, f"this image name is {_kind(Path(e.path))}, not an image file; move it"
                )
            out.append(Path(e.path))
    return sorted(out)


def _kind(f: Path) -> str:
    try:
        mode = os.stat(f).st_mode
    except OSError as err:
        return "a dangling link" if os.path.islink(f) else f"unreadable ({err.strerror})"
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def decode_rgb(f: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The image file ``f`` as RGB uint8 (H, W, 3), fitted to ``size`` (height, width) by the resize policy
    (:func:`fit_image`) when given. Only a regular file is opened for reading (a FIFO would block).

    High-bit-depth pixels are brought to 8 bits first (:func:`_to_8bit`), not clipped. An image of more pixels
    than PIL's limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused (an exception, which the callers turn into
    their one-paragraph "unreadable image"), not decoded after a printed warning."""
    from PIL import Image

    fd, _ = open_regular(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with os.fdopen(fd, "rb") as fh, Image.open(fh) as im:
            limit = Image.MAX_IMAGE_PIXELS
            w, h = im.size
            if limit is not None and w * h > limit:  # also when another thread's filters let the warning pass
                raise Image.DecompressionBombError(
                    f"Image size ({w * h} pixels) exceeds limit of {limit} pixels, could be decompression bomb "
                    "DOS attack."
                )
            rgb = _to_8bit(im).convert("RGB")
    if size is not None:
        rgb = fit_image(rgb, size[0])
    return np.asarray(rgb, dtype=np.uint8)


def _to_8bit(im):
    """``im`` with 8-bit pixels where PIL's ``convert("RGB")`` would clip them: 16-bit modes (``I;16*``) scaled
    by 1/257 (rounded: 65535 is 255), 32-bit integers (``I``) the same when they fit 16 bits, else by 255 over
    their maximum (negatives are 0), floats (``F``) times 255 when they are all within [0, 1], else clipped to
    0..255 (NaN is 0). Every other mode is returned as it is."""
    from PIL import Image

    mode = im.mode
    if not (mode == "I" or mode == "F" or mode.startswith("I;16")):
        return im
    a = np.asarray(im)
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        out = np.clip(np.rint(a), 0, 255)
    else:
        a = np.clip(a.astype(np.int64), 0, None)
        top = int(a.max()) if a.size else 0
        scale = 257.0 if top <= 65535 else top / 255.0
        out = np.clip(np.rint(a / scale), 0, 255)
    return Image.fromarray(out.astype(np.uint8), "L")


def fitted_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image scaled so that its shorter side is ``size``, its aspect ratio kept (the
    longer side rounded down, as torchvision's ``Resize(size)`` does, so that timm's eval transform agrees)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred ``size`` square of a ``height`` x ``width`` image (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def fit_image(im, size: int):
    """The PIL image ``im`` fitted to a ``size`` square by the one resize policy
    (:data:`nas.model.arch.RESIZE_POLICY`): its shorter side scaled to ``size`` (PIL's bilinear filter, which
    antialiases when shrinking: what torchvision's ``Resize`` applies to a PIL image), then its centre square
    kept. An image already ``size`` x ``size`` is returned as it is."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    nh, nw = fitted_size(h, w, size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    top, left = center_box(nh, nw, size)
    return im.crop((left, top, left + size, top + size))


def _decode_all(cfg: DataConfig, files: list[Path], origin: Origin, size: tuple[int, int] | None) -> np.ndarray:
    """NCHW uint8 of ``files``, each resized on its own to ``size`` (``None``: they must share one size)."""
    out = None
    for i, f in enumerate(files):
        try:
            arr = decode_rgb(f, size)
        except Exception as err:  # noqa: BLE001 - any failure means an unreadable file
            raise bad_source(cfg, f, origin, f"unreadable image ({' '.join(str(err).split())})") from None
        if out is None:
            out = np.empty((len(files), 3, *arr.shape[:2]), np.uint8)
        elif arr.shape[:2] != out.shape[2:]:
            raise bad_source(
                cfg,
                f,
                origin,
                f"this image is {arr.shape[1]}x{arr.shape[0]} px, {files[0]} {out.shape[3]}x{out.shape[2]} px: "
                "give the image size to resize every image to it",
            )
        out[i] = arr.transpose(2, 0, 1)
    return out


def read_imagefolder_source(cfg: DataConfig, path: Path, image_size: int, in_chans: int, origin: Origin):
    """Every image of a class-per-subfolder tree, RGB uint8, each resized on its own to ``image_size``."""
    files, y, k = list_imagefolder(cfg, path, origin)
    return _decode_all(cfg, files, origin, (image_size, image_size)), y, k


def read_imagefolder(cfg: DataConfig, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(x uint8 NCHW, y, num_classes) of the image folder at ``cfg.path``: each image resized to ``image_size``
    as the source does, or, without it, at the images' own size (refused when they differ)."""
    origin = Origin(None, "path")
    files, y, names = list_imagefolder(cfg, Path(os.path.expanduser(cfg.path)), origin)
    size = None if image_size is None else (image_size, image_size)
    return _decode_all(cfg, files, origin, size), y, len(names)
