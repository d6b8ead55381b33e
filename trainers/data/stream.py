"""Image folders too large for memory: decoded batch by batch where they are indexed.

:class:`StreamedImages` keeps only the files' names (one bytes array) and the per-channel statistics;
indexing it (``x[idx]``, ``x[i:j]``) decodes the files of ``idx`` (in a thread pool: Pillow decodes
without the GIL), each resized on its own to the image size exactly as loading the folder does
(:func:`trainers.data.readers.decode_rgb`, then :func:`trainers.data.images.to_images`) and normalises them on
the device, like :class:`trainers.data.images.Images`. The training loop (``trainers.training.proxy.fit``) is the
same for both.

The statistics come from a seeded sample of at most :data:`STATS_SAMPLE` training images (all of them in a
smaller split, which then gives the in-memory statistics up to float rounding); a sample of 2,048 images
estimates a channel mean to about 0.002 (a tenth of the images' spread / sqrt(2,048)).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from nas.errors import UserError
from trainers.data.images import Images, folder_dtype, to_images
from trainers.data.readers import decode_rgb

STATS_SAMPLE = 2048
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coatnas-decode")
    return _POOLS[threads]


def decode_batch(
    root: str, names: np.ndarray, image_size: int, in_chans: int, threads: int | None = None
) -> torch.Tensor:
    """The files ``root/names`` as the loader stores them: NCHW at ``image_size``, uint8 in colour, float32
    luminance in grey (one paragraph naming the file when one cannot be read)."""
    size = (image_size, image_size)

    def one(name: bytes) -> np.ndarray:
        path = os.path.join(root, name.decode())
        try:
            return decode_rgb(path, size)
        except Exception as err:  # noqa: BLE001 - any failure means an unreadable file
            raise UserError(
                f"streamed image folder {root}: unreadable image {path} ({' '.join(str(err).split())}). "
                "Remove or replace "
                "the file; every file of the folder is decoded when its batch is drawn."
            ) from None

    threads = max(1, threads or torch.get_num_threads())
    arrs = [one(n) for n in names] if threads == 1 or len(names) < 8 else list(_pool(threads).map(one, names))
    x = np.stack(arrs).transpose(0, 3, 1, 2) if arrs else np.zeros((0, 3, *size), np.uint8)
    return to_images(x, image_size, in_chans)


def sample_stats(
    root: str,
    names: np.ndarray,
    image_size: int,
    in_chans: int,
    seed: int,
    sample: int = STATS_SAMPLE,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std (shape ``(C, 1, 1)``, ``[0, 1]`` units) of a seeded sample of at
    most ``sample`` of the images (all when there are no more), accumulated in float64 chunk by chunk."""
    n = len(names)
    pick = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed + 7).choice(n, sample, replace=False))
    total = np.zeros(in_chans)
    total_sq = np.zeros(in_chans)
    count = 0
    for i in range(0, len(pick), chunk):
        raw = decode_batch(root, names[pick[i : i + chunk]], image_size, in_chans)
        x = raw.double() / 255.0 if raw.dtype == torch.uint8 else raw.double()
        total += x.sum((0, 2, 3)).numpy()
        total_sq += (x * x).sum((0, 2, 3)).numpy()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq - count * mean * mean) / max(1, count - 1)
    std = np.sqrt(np.maximum(var, 0.0))
    as_t = lambda a: torch.from_numpy(a.astype(np.float32)).reshape(-1, 1, 1)  # noqa: E731
    return as_t(mean), as_t(std).clamp_min(1e-6)


class StreamedImages(Images):
    """The images ``root/names`` (bytes, relative), decoded when indexed; see the module docstring.

    Same contract as :class:`Images`: ``x[idx]`` is the normalised float32 batch on ``device``;
    ``subset``/``to`` give other views of the same files; nothing of the pixels is held in memory.
    """

    def __init__(
        self,
        root: str,
        names: np.ndarray,
        image_size: int,
        in_chans: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ):
        self.root, self.names = str(root), np.asarray(names, dtype=np.bytes_)
        self.image_size, self.in_chans = int(image_size), int(in_chans)
        self._device = torch.device(device)
        self.threads = threads
        self.mean = mean.reshape(-1, 1, 1).to(self._device, torch.float32)
        self.std = std.reshape(-1, 1, 1).to(self._device, torch.float32)
        self.stored_dtype = folder_dtype(self.in_chans)

    def _positions(self, idx: Any) -> tuple[np.ndarray, bool]:
        """(positions into ``names``, whether ``idx`` picked one image rather than a batch)."""
        if isinstance(idx, torch.Tensor):
            if idx.dim() == 0:
                return np.array([int(idx)]), True
            idx = idx.cpu().numpy()
        if isinstance(idx, (int, np.integer)):
            return np.array([int(idx)]), True
        if isinstance(idx, slice):
            return np.arange(len(self.names))[idx], False
        idx = np.asarray(idx)
        return (np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)), False

    def _pick(self, idx: Any) -> torch.Tensor:
        pos, single = self._positions(idx)
        x = decode_batch(self.root, self.names[pos], self.image_size, self.in_chans, self.threads)
        x = x.to(self._device, non_blocking=True)
        return x[0] if single else x

    def __len__(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.names), self.in_chans, self.image_size, self.image_size))

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def nbytes(self) -> int:
        """Bytes held in memory for the images: the names only (the pixels stay in the files)."""
        return int(self.names.nbytes)

    def _with(self, names: np.ndarray, device: torch.device) -> StreamedImages:
        return StreamedImages(
            self.root, names, self.image_size, self.in_chans, self.mean, self.std, device, self.threads
        )

    def subset(self, idx: torch.Tensor) -> StreamedImages:
        """The images at ``idx`` (still streamed)."""
        return self._with(self.names[self._positions(idx)[0]], self._device)

    def to(self, device: str | torch.device) -> StreamedImages:
        """Batches decoded on the CPU, moved to ``device`` and normalised there."""
        device = torch.device(device)
        return self if device == self._device else self._with(self.names, device)

    def __repr__(self) -> str:
        return f"StreamedImages({tuple(self.shape)}, from {self.root}, {self._device})"
