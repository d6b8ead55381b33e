"""The ``npz`` source: arrays ``x`` (images) and ``y`` (labels) of one ``.npz`` file, validated (numpy, no torch).

:func:`check_npz` is the cheap check the search driver runs (:func:`trainers.data.sources.resolve_source`): it
reads the arrays' headers (shape and type, not their data) and the labels, so a file that cannot be images and
labels is reported before any worker starts and before the images are decompressed. :func:`read_npz` is the
reader (:data:`trainers.data.config.SOURCES`): the same checks, then every pixel must be finite. Each refusal
is one paragraph naming the file and the array (``x`` or ``y``).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.fsio import open_regular
from nas.limits import RANGES, allowed_text
from trainers.data.config import DataConfig, Origin, bad_source


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


MAX_ARRAY_BYTES = _physical_memory()
"""An ``x`` whose header declares more bytes than this (the machine's memory) is refused before it is
decompressed: it could not be loaded (an image folder can be streamed instead)."""

PIXEL_KINDS = "buif"  # booleans, integers, floats; not complex numbers, strings, objects, dates
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def _refuse(cfg: DataConfig, path: Path, origin: Origin, problem: str):
    return bad_source(cfg, path, origin, problem)


def _open(path: Path):
    """``path`` as a binary file object, opened only if it is a regular file (:func:`nas.fsio.open_regular`)."""
    fd, size = open_regular(path)
    return os.fdopen(fd, "rb"), size


def _headers(cfg: DataConfig, path: Path, origin) -> dict[str, _Header]:
    """Shape and type of ``x`` and ``y`` from the arrays' ``.npy`` headers (their data is not read)."""
    try:
        fh, size = _open(path)
    except FileNotFoundError:
        raise _refuse(cfg, path, origin, "no such file") from None
    except OSError as err:
        raise _refuse(cfg, path, origin, f"cannot be read ({err.strerror or err})") from None
    with fh:
        if size == 0:
            raise _refuse(cfg, path, origin, "the file is empty (0 bytes), not an .npz archive")
        magic = fh.read(6)
        fh.seek(0)
        if magic.startswith(b"\x93NUMPY"):
            raise _refuse(cfg, path, origin, "this is a single .npy array, not an .npz holding `x` and `y`")
        try:
            with zipfile.ZipFile(fh) as z:
                names = {n[:-4] if n.endswith(".npy") else n: n for n in z.namelist()}
                if "x" not in names or "y" not in names:
                    shown = sorted(names) or "none"
                    raise _refuse(cfg, path, origin, f"has arrays {shown}, not `x` and `y`")
                out = {}
                for key in ("x", "y"):
                    with z.open(names[key]) as member:
                        shape, dtype = _npy_header(member)
                    out[key] = _Header(shape, dtype)
                return out
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError, TypeError) as err:
            raise _refuse(cfg, path, origin, f"not a readable .npz ({' '.join(str(err).split())})") from None


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of a ``.npy`` stream (format 1.0 to 3.0)."""
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(member)
    else:
        shape, _, dtype = fmt._read_array_header(member, version)  # 3.0: the same header, UTF-8
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _check_headers(cfg: DataConfig, path: Path, origin, h: dict[str, _Header]) -> None:
    x, y = h["x"], h["y"]
    if x.dtype.kind not in PIXEL_KINDS or x.dtype.hasobject or x.dtype.names:
        raise _refuse(cfg, path, origin, f"`x` has dtype {x.dtype}; pixels must be booleans, integers or floats")
    if len(x.shape) not in (3, 4):
        raise _refuse(cfg, path, origin, f"`x` has shape {x.shape}; images need 3 or 4 dimensions")
    if x.shape[0] == 0:
        raise _refuse(cfg, path, origin, f"`x` holds no images (shape {x.shape})")
    if 0 in x.shape:
        raise _refuse(cfg, path, origin, f"`x` has an empty dimension (shape {x.shape})")
    if len(x.shape) == 4 and x.shape[1] not in (1, 3) and x.shape[-1] not in (1, 3):
        raise _refuse(cfg, path, origin, f"`x` has shape {x.shape}: neither N,1|3,H,W nor N,H,W,1|3 channels")
    if x.nbytes + y.nbytes > MAX_ARRAY_BYTES:
        raise _refuse(
            cfg,
            path,
            origin,
            f"`x` and `y` declare {(x.nbytes + y.nbytes) / 1e9:,.3f} GB (`x` {x.shape} {x.dtype}), more than "
            f"this machine's {MAX_ARRAY_BYTES / 1e9:,.3f} GB of memory; use a smaller file or an image folder "
            "(streamed)",
        )
    if y.dtype.kind not in "iu" or len(y.shape) != 1:
        raise _refuse(
            cfg, path, origin, f"`y` must be {x.shape[0]} integer labels, got shape {y.shape} dtype {y.dtype}"
        )
    if y.shape[0] != x.shape[0]:
        raise _refuse(cfg, path, origin, f"`x` holds {x.shape[0]} images but `y` {y.shape[0]} labels")


def _check_labels(cfg: DataConfig, path: Path, origin: Origin, y: np.ndarray, min_classes: int = 2) -> None:
    """Labels are class numbers from 0 within the sane range, with at least ``min_classes`` classes (2 to train a
    classifier; 1 to score a model on a held-out subset)."""
    if y.min() < 0:
        raise _refuse(cfg, path, origin, f"`y` has a negative label ({y.min()}); labels are class numbers from 0")
    n = int(y.max()) + 1
    if n > RANGES["num_classes"][1]:
        raise _refuse(
            cfg,
            path,
            origin,
            f"`y` has labels up to {y.max()}, so the number of classes of the data (the largest label + 1) is "
            f"outside its sane range (got {n}). Allowed: {allowed_text('num_classes')}",
        )
    if len(np.unique(y)) < min_classes:
        raise _refuse(cfg, path, origin, f"`y` has one class only (label {y[0]}); a classifier needs at least 2")


def _load(cfg: DataConfig, path: Path, origin, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        fh, _ = _open(path)
        with fh, np.load(fh, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        raise _refuse(cfg, path, origin, f"not a readable .npz ({text})") from None


def check_npz(cfg: DataConfig, path: Path, origin) -> int:
    """The number of classes of the npz at ``path`` after checking the arrays' headers and the labels."""
    h = _headers(cfg, path, origin)
    _check_headers(cfg, path, origin, h)
    y = _load(cfg, path, origin, ("y",))["y"]
    _check_labels(cfg, path, origin, y)
    return int(y.max()) + 1


def read_npz(cfg: DataConfig, path: Path, image_size: int, in_chans: int, origin, *, min_classes: int = 2):
    """(x NCHW: uint8, or float32 for any other pixel type; y int64; number of classes) of the npz at ``path``.
    An ``x`` of any integer type whose values are all within 0..255 is 8-bit pixels: it becomes uint8 (scaled by
    1/255 like uint8, so a model's mean/std apply to it the same way); other integers are kept as float32."""
    h = _headers(cfg, path, origin)
    _check_headers(cfg, path, origin, h)
    arrays = _load(cfg, path, origin, ("x", "y"))
    x, y = arrays["x"], arrays["y"]
    if x.shape != h["x"].shape or y.shape != h["y"].shape:  # the file changed between the two reads
        raise _refuse(cfg, path, origin, "the arrays changed while being read")
    _check_labels(cfg, path, origin, y, min_classes)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype.kind in "iu" and x.dtype != np.uint8 and x.size and x.min() >= 0 and x.max() <= 255:
        x = x.astype(np.uint8)  # 8-bit pixels in a wider integer type (numpy's default int64): scaled as uint8
    if x.dtype != np.uint8:
        x = _finite_float32(cfg, path, origin, x)
    return x, y.astype(np.int64), _classes(cfg, path, origin, int(y.max()) + 1)


def _classes(cfg: DataConfig, path: Path, origin, k: int) -> tuple[str, ...] | int:
    """The optional ``classes`` array of the npz (one name per label, text), else the number of classes."""
    try:
        fh, _ = _open(path)
        with fh, np.load(fh, allow_pickle=False) as z:
            if "classes" not in z.files:
                return k
            names = z["classes"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as err:
        raise _refuse(cfg, path, origin, f"its `classes` array cannot be read ({' '.join(str(err).split())})") from None
    ok = names.ndim == 1 and names.dtype.kind == "U" and len(names) >= k and len(set(names.tolist())) == len(names)
    if not ok or not all(n.strip() and n.isprintable() for n in names.tolist()):
        raise _refuse(
            cfg,
            path,
            origin,
            f"`classes` must be {k} or more distinct, printable class names (text), one per label from 0; got "
            f"shape {names.shape} dtype {names.dtype}",
        )
    return tuple(names.tolist())


def _finite_float32(cfg: DataConfig, path: Path, origin, x: np.ndarray) -> np.ndarray:
    """``x`` as float32, refused when a pixel is NaN or infinite (or becomes so in float32), chunk by chunk."""
    out = np.empty(x.shape, np.float32)
    for i in range(0, len(x), CHUNK_ROWS):
        with np.errstate(over="ignore", invalid="ignore"):
            part = x[i : i + CHUNK_ROWS].astype(np.float32)
        bad = ~np.isfinite(part)
        if bad.any():
            where = np.argwhere(bad)[0]
            value = x[i : i + CHUNK_ROWS][tuple(where)]
            raise _refuse(
                cfg,
                path,
                origin,
                f"`x` has a pixel that is not a finite float32 number ({value.item()!r} in image {i + int(where[0])}); "
                "every pixel must be finite",
            )
        out[i : i + CHUNK_ROWS] = part
    return out
