"""Data sources for proxy training: embedded digits, synthetic, CIFAR pickles, image folders, npz.

Every source ends as :class:`~trainers.data.images.Images` (NCHW; uint8 for whole-byte images at their
own size, else float32) with the training split's per-channel mean/std, indexed into normalised float32
batches on the training device, and int64 labels, split into train/validation by a deterministic
stratified split from a seed. Loaded datasets are cached per process: a worker running many trials loads
and resizes once (``trainers.data.shared`` loads once per Ray node instead). An image folder too large for memory
(``train.data.stream_above_mb``) is streamed: :class:`~trainers.data.stream.StreamedImages` decodes each batch.
The per-source readers are named in :data:`trainers.data.config.SOURCES` (:mod:`trainers.data.readers`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nas.errors import ConfigError
from trainers.data.config import DataConfig, Origin, bad_source
from trainers.data.images import Images, channel_stats, folder_dtype, to_images
from trainers.data.readers import list_imagefolder, read_source
from trainers.data.sources import source_path
from trainers.data.stream import StreamedImages, sample_stats


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
    classes: tuple[str, ...] = ()
    """The name of each class (the source's, else the index as text); empty: not known."""
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
                self.classes,
            )
        return self._copies[key]

    @property
    def class_names(self) -> tuple[str, ...]:
        """:attr:`classes`, or the class indices as text where the source gave no names."""
        return self.classes or tuple(str(i) for i in range(self.num_classes))


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
    (:class:`trainers.data.stream.StreamedImages`: decoded batch by batch), every other source in memory.
    """
    origin = Origin(file, key)
    listing = _stream_listing(cfg, image_size, in_chans, origin)
    if listing is not None:
        return _load_streamed(cfg, *listing, image_size, in_chans, file)
    x, y, names = read_source(cfg, image_size, in_chans, origin)
    num_classes = len(names)
    keep, tr, va = _limit_split(y, cfg, file)
    if keep is not None:
        x, y = x[keep], y[keep]
    xt = to_images(x, image_size, in_chans)
    yt = torch.from_numpy(y.astype(np.int64))
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    x_tr, x_va = xt[tr_t].contiguous(), xt[va_t].contiguous()
    del x, xt
    mean, std = channel_stats(x_tr)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise bad_source(
            cfg,
            Path(cfg.path or cfg.name),
            origin,
            "the pixel values are too large for float32 statistics (their mean or spread overflows); scale them",
        )
    std = std.clamp_min(1e-6)
    return Dataset(
        Images(x_tr, mean, std), yt[tr_t], Images(x_va, mean, std), yt[va_t], num_classes, in_chans, cfg.name, names
    )


def _limit_split(y: np.ndarray, cfg: DataConfig, file: str | None):
    """(kept indices or ``None`` for all, train and validation indices into the kept labels)."""
    keep = None
    if cfg.limit is not None and cfg.limit < len(y):
        _, keep = stratified_split(y, cfg.limit / len(y), cfg.seed + 1)
        y = y[keep]
    if len(np.unique(y)) < 2:
        raise ConfigError(
            file, "train.data", f"the source has {len(np.unique(y))} class(es)", "a source with at least 2 classes"
        )
    tr, va = stratified_split(y, cfg.val_fraction, cfg.seed)
    if len(tr) == 0 or len(va) == 0:
        raise ConfigError(
            file,
            "train.data",
            f"too few examples ({len(y)}) to split into train and validation",
            "a source with at least 2 examples per class",
        )
    return keep, tr, va


def in_memory_bytes(n: int, image_size: int, in_chans: int) -> int:
    """Bytes ``n`` images of an image folder take loaded at ``image_size`` with ``in_chans`` channels (each
    file is resized on its own to the image size, so no file's own size counts: see
    :func:`trainers.data.images.folder_dtype`)."""
    return n * in_chans * image_size * image_size * folder_dtype(in_chans).itemsize


def _stream_listing(cfg: DataConfig, image_size: int, in_chans: int, origin: Origin):
    """(files, labels, classes) of an ``imagefolder`` to stream, or ``None`` to load it."""
    if cfg.name != "imagefolder" or cfg.download or cfg.stream_above_mb is None or cfg.path is None:
        return None
    path = source_path(cfg, origin)
    files, y, k = list_imagefolder(cfg, path, origin)
    n = min(len(y), cfg.limit) if cfg.limit is not None else len(y)
    if in_memory_bytes(n, image_size, in_chans) <= cfg.stream_above_mb * 1e6:
        return None
    return files, y, k


def _load_streamed(
    cfg: DataConfig,
    files: list[Path],
    y: np.ndarray,
    classes: tuple[str, ...],
    image_size: int,
    in_chans: int,
    file: str | None,
) -> Dataset:
    keep, tr, va = _limit_split(y, cfg, file)
    if keep is not None:
        files, y = [files[i] for i in keep], y[keep]
    root = str(source_path(cfg, Origin(file, "train.data.path")).absolute())
    names = np.array([os.path.relpath(f, root).encode() for f in files], dtype=np.bytes_)
    mean, std = sample_stats(root, names[tr], image_size, in_chans, cfg.seed)
    yt = torch.from_numpy(y.astype(np.int64))
    x_tr = StreamedImages(root, names[tr], image_size, in_chans, mean, std)
    x_va = StreamedImages(root, names[va], image_size, in_chans, mean, std)
    return Dataset(
        x_tr, yt[torch.from_numpy(tr)], x_va, yt[torch.from_numpy(va)], len(classes), in_chans, cfg.name, classes
    )
