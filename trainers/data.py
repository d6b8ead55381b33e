"""Data sources for proxy training: embedded digits, synthetic, CIFAR pickles, image folders, npz.

Every source ends as :class:`~trainers.images.Images` (NCHW; uint8 for whole-byte images at their
own size, else float32) with the training split's per-channel mean/std, indexed into normalised float32
batches on the training device, and int64 labels, split into train/validation by a deterministic
stratified split from a seed. Loaded datasets are cached per process: a worker running many trials loads
and resizes once (``trainers.shared`` loads once per Ray node instead). An image folder too large for memory
(``train.data.stream_above_mb``) is streamed: :class:`~trainers.stream.StreamedImages` decodes each batch.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import ConfigError, UserError

from .config import SOURCES, DataConfig
from .images import Images, channel_stats
from .sources import EXPECTED, IMAGE_EXTS, Origin, bad_source, downloaded, resolve_source, source_path
from .stream import in_memory_uint8

__all__ = [
    "DataConfig",
    "Dataset",
    "Images",
    "load_dataset",
    "resolve_source",
    "stratified_split",
    "stratified_subset",
    "SOURCES",
    "READERS",
    "read_imagefolder",
    "clear_dataset_cache",
    "read_dataset",
    "decode_rgb",
    "in_memory_bytes",
]


@dataclass(eq=False)
class Dataset:
    """Train/validation images and labels of one source at one image size and channel count.

    ``x_train[idx]``/``x_val[idx]`` are normalised float32 batches (see :class:`Images`); a plain float
    tensor passed in is taken as already normalised.
    """

    x_train: Images
    y_train: torch.Tensor
    x_val: Images
    y_val: torch.Tensor
    num_classes: int
    in_chans: int
    name: str
    _copies: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("x_train", "x_val"):
            if isinstance(getattr(self, name), torch.Tensor):
                setattr(self, name, Images(getattr(self, name)))

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def to(self, device: str | torch.device) -> Dataset:
        """The same data on ``device`` (moved once, then memoised)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        key = str(device)
        if key not in self._copies:
            self._copies[key] = Dataset(
                self.x_train.to(device),
                self.y_train.to(device),
                self.x_val.to(device),
                self.y_val.to(device),
                self.num_classes,
                self.in_chans,
                self.name,
            )
        return self._copies[key]


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held) with ``round(fraction * n_c)`` of each class held (at least 1 when n_c >= 2)."""
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def stratified_subset(y: torch.Tensor | np.ndarray, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified ``fraction`` of ``y`` (at least one example per class)."""
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if fraction >= 1.0:
        return torch.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[: max(1, int(round(fraction * len(idx))))])
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def load_dataset(
    cfg: DataConfig, image_size: int, in_chans: int, *, file: str | None = None, key: str = "train.data.path"
) -> Dataset:
    """Load ``cfg``'s source at ``image_size`` with ``in_chans`` channels (cached per process).

    ``file`` is the YAML the config came from and ``key`` what the user set the path with (a YAML key, or
    a flag such as ``--data-path``), both for error messages. Grey sources are repeated to 3 channels
    when ``in_chans == 3``; colour sources become luminance when ``in_chans == 1``.
    """
    return _load_cached(cfg, int(image_size), int(in_chans), file, key)


def clear_dataset_cache() -> None:
    """Forget the datasets this process loaded (they are cached per process)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(
    cfg: DataConfig, image_size: int, in_chans: int, file: str | None, key: str = "train.data.path"
) -> Dataset:
    return read_dataset(cfg, image_size, in_chans, file=file, key=key)


def read_dataset(
    cfg: DataConfig, image_size: int, in_chans: int, *, file: str | None = None, key: str = "train.data.path"
) -> Dataset:
    """:func:`load_dataset` without the per-process cache (the shared path loads once and caches nothing).

    An ``imagefolder`` larger in memory than ``cfg.stream_above_mb`` comes back streamed
    (:class:`trainers.stream.StreamedImages`: decoded batch by batch), every other source in memory.
    """
    origin = Origin(file, key)
    listing = _stream_listing(cfg, image_size, in_chans, origin)
    if listing is not None:
        return _load_streamed(cfg, *listing, image_size, in_chans, file)
    x, y, num_classes = _read_source(cfg, image_size, in_chans, origin)
    keep, tr, va = _limit_split(y, cfg, file)
    if keep is not None:
        x, y = x[keep], y[keep]
    xt = _to_images(x, image_size, in_chans)
    yt = torch.from_numpy(y.astype(np.int64))
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    x_tr, x_va = xt[tr_t].contiguous(), xt[va_t].contiguous()
    del x, xt
    mean, std = channel_stats(x_tr)
    std = std.clamp_min(1e-6)
    return Dataset(
        Images(x_tr, mean, std), yt[tr_t], Images(x_va, mean, std), yt[va_t], num_classes, in_chans, cfg.name
    )


def _limit_split(y: np.ndarray, cfg: DataConfig, file: str | None):
    """(kept indices or ``None`` for all, train and validation indices into the kept labels)."""
    keep = None
    if cfg.limit is not None and cfg.limit < len(y):
        _, keep = stratified_split(y, cfg.limit / len(y), cfg.seed + 1)
        y = y[keep]
    tr, va = stratified_split(y, cfg.val_fraction, cfg.seed)
    if len(tr) == 0 or len(va) == 0:
        raise ConfigError(
            file,
            "train.data",
            f"too few examples ({len(y)}) to split into train and validation",
            "a source with at least 2 examples per class",
        )
    return keep, tr, va


def in_memory_bytes(n: int, ref_hw: tuple[int, int], image_size: int, in_chans: int) -> int:
    """Bytes ``n`` RGB images of ``ref_hw`` (height, width) take loaded at ``image_size`` with ``in_chans``
    channels: uint8 when kept at their own size in colour, else float32 (as :func:`_to_images` stores them)."""
    per_value = 1 if in_memory_uint8(ref_hw, image_size, in_chans) else 4
    return n * in_chans * image_size * image_size * per_value


def _stream_listing(cfg: DataConfig, image_size: int, in_chans: int, origin: Origin):
    """(files, labels, classes, reference size) of an ``imagefolder`` to stream, or ``None`` to load it."""
    if cfg.name != "imagefolder" or cfg.download or cfg.stream_above_mb is None or cfg.path is None:
        return None
    path = source_path(cfg, origin)
    files, y, k = _list_imagefolder(cfg, path, origin)
    n = min(len(y), cfg.limit) if cfg.limit is not None else len(y)
    ref_hw = _first_size(cfg, files[0], origin)
    if in_memory_bytes(n, ref_hw, image_size, in_chans) <= cfg.stream_above_mb * 1e6:
        return None
    return files, y, k, ref_hw


def _first_size(cfg: DataConfig, f: Path, origin: Origin) -> tuple[int, int]:
    """(height, width) of the folder's first image: every other is resized to it, as when loading."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            return im.size[1], im.size[0]
    except Exception as err:  # noqa: BLE001
        raise bad_source(cfg, f, origin, f"unreadable image ({err})") from None


def _load_streamed(
    cfg: DataConfig,
    files: list[Path],
    y: np.ndarray,
    num_classes: int,
    ref_hw: tuple[int, int],
    image_size: int,
    in_chans: int,
    file: str | None,
) -> Dataset:
    from .stream import StreamedImages, sample_stats

    keep, tr, va = _limit_split(y, cfg, file)
    if keep is not None:
        files, y = [files[i] for i in keep], y[keep]
    root = str(source_path(cfg, Origin(file, "train.data.path")).absolute())
    names = np.array([os.path.relpath(f, root).encode() for f in files], dtype=np.bytes_)
    mean, std = sample_stats(root, names[tr], ref_hw, image_size, in_chans, cfg.seed)
    yt = torch.from_numpy(y.astype(np.int64))
    x_tr = StreamedImages(root, names[tr], ref_hw, image_size, in_chans, mean, std)
    x_va = StreamedImages(root, names[va], ref_hw, image_size, in_chans, mean, std)
    return Dataset(x_tr, yt[torch.from_numpy(tr)], x_va, yt[torch.from_numpy(va)], num_classes, in_chans, cfg.name)


def _to_images(x: np.ndarray, image_size: int, in_chans: int) -> torch.Tensor:
    """NCHW numpy -> tensor at ``image_size`` with ``in_chans`` channels: uint8 (0-255) when the source is
    uint8 and needs neither resampling nor luminance (kept exactly), else float32 (uint8 scaled to [0, 1])."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    c = t.shape[1]
    if t.dtype == torch.uint8 and c in (1, in_chans) and tuple(t.shape[-2:]) == (image_size, image_size):
        return t.expand(-1, in_chans, -1, -1) if c != in_chans else t
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if c != in_chans:
        if c == 1:
            t = t.expand(-1, in_chans, -1, -1)
        elif c == 3 and in_chans == 1:
            t = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise UserError(
                f"the data has {c} channels but the model wants {in_chans}; only grey<->RGB "
                "conversion is automatic. Set `space.input.channels` to match the data."
            )
    if t.shape[-2:] != (image_size, image_size):
        out = []
        for chunk in t.split(4096):
            down = chunk.shape[-1] > image_size
            out.append(
                F.interpolate(
                    chunk, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=down
                )
            )
        t = torch.cat(out)
    return t.contiguous()


def _read_source(cfg: DataConfig, image_size: int, in_chans: int, origin: Origin):
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
    from .safe_pickle import load_cifar_pickle

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


def _list_imagefolder(cfg: DataConfig, path: Path, origin: Origin) -> tuple[list[Path], np.ndarray, int]:
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
    files, y, k = _list_imagefolder(cfg, path, origin)
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


# source name (``trainers.config.SOURCES``) -> (reader, whether it reads ``path``): a reader with a path
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
        f"trainers.data.READERS {sorted(READERS)} and trainers.config.SOURCES {sorted(SOURCES)} "
        "must name the same sources"
    )
