"""Images as stored in memory (uint8 where exact) and normalised batch by batch where they are used.

A source of whole-byte images (CIFAR, image folders, uint8 npz) at its own size is kept as uint8: a
quarter of the float32 bytes, in every process that holds it. Indexing an :class:`Images` gives the
normalised float32 batch the models see, computed on the device the images are on, by the same operations
in the same order as the float32 tensors held before (``x / 255``, then ``(x - mean) / std``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import UserError


class Images:
    """N images (``raw``: uint8 0-255, or float32 already in model units before normalisation) and the
    per-channel ``mean``/``std`` (shape ``(C, 1, 1)``, in the units of ``raw / 255`` for uint8) that
    normalise them. Indexing along the first axis returns normalised float32; :meth:`subset` keeps the
    storage type."""

    def __init__(self, raw: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if raw.dtype not in (torch.uint8, torch.float32):
            raise TypeError(f"images are stored as uint8 or float32, not {raw.dtype}")
        c = raw.shape[1] if raw.dim() == 4 else 1
        self.raw = raw
        self.mean = (mean if mean is not None else torch.zeros(c)).reshape(-1, 1, 1).to(raw.device, torch.float32)
        self.std = (std if std is not None else torch.ones(c)).reshape(-1, 1, 1).to(raw.device, torch.float32)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """``xb`` (stored images, e.g. ``raw[idx]``) as normalised float32, on its device."""
        x = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb
        return (x - self.mean) / self.std

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if not isinstance(idx, tuple):
            return self.normalize(self._pick(idx))
        # e.g. x[:, 0]: normalise the images the first index picks, then apply the rest
        picked = self.normalize(self._pick(idx[0]))
        return picked[idx[1:]] if isinstance(idx[0], int) else picked[(slice(None),) + idx[1:]]

    def _pick(self, idx: Any) -> torch.Tensor:
        # index_select is 5-20x faster than advanced indexing on CPU for a batch of indices
        if (
            isinstance(idx, torch.Tensor)
            and idx.dim() == 1
            and not idx.dtype.is_floating_point
            and idx.dtype != torch.bool
        ):
            return self.raw.index_select(0, idx)
        return self.raw[idx]

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    @property
    def dtype(self) -> torch.dtype:
        """What indexing returns (always float32); the storage type is ``raw.dtype``."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.raw.device

    @property
    def nbytes(self) -> int:
        """Bytes of the stored images."""
        return self.raw.numel() * self.raw.element_size()

    def subset(self, idx: torch.Tensor) -> Images:
        """The images at ``idx``, stored as these are (no float copy)."""
        return Images(self._pick(idx.to(self.raw.device)), self.mean, self.std)

    def to(self, device: str | torch.device) -> Images:
        device = torch.device(device)
        if self.raw.device == device:
            return self
        return Images(self.raw.to(device), self.mean.to(device), self.std.to(device))

    def float(self) -> torch.Tensor:
        """All images normalised (the float32 tensor these images stand for)."""
        return self[:]

    def __repr__(self) -> str:
        return f"Images({tuple(self.raw.shape)}, stored {self.raw.dtype}, {self.raw.device})"


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation, shape ``(1, C, 1, 1)`` float32, of ``x`` in
    ``[0, 1]`` units for uint8. Computed on a float32 copy exactly as the float32 loader did (the same
    reduction, so the same rounding: batches are bitwise those of the float32 tensors held before); the
    copy lives only while the statistics are computed."""
    dims = (0, 2, 3)
    xf = x.float().div_(255.0) if x.dtype == torch.uint8 else x
    return xf.mean(dims, keepdim=True), xf.std(dims, keepdim=True)


def to_images(x: np.ndarray, image_size: int, in_chans: int) -> torch.Tensor:
    """NCHW numpy -> the tensor an :class:`Images` stores, at ``image_size`` with ``in_chans`` channels: uint8
    (0-255) when the source is uint8 and needs neither resampling nor luminance (kept exactly), else float32
    (uint8 scaled to [0, 1]). Every source goes through here, loaded or streamed."""
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
        t = fit_tensor(t, image_size)
    return t.contiguous()


def fit_tensor(t: torch.Tensor, size: int) -> torch.Tensor:
    """Float NCHW images fitted to ``size`` x ``size`` by the one resize policy
    (:data:`nas.model.arch.RESIZE_POLICY`, as :func:`trainers.data.readers.fit_image` does to a file): the shorter
    side scaled to ``size`` (bilinear, antialiased when shrinking), then the centre square kept."""
    from trainers.data.readers import center_box, fitted_size

    h, w = t.shape[-2:]
    nh, nw = fitted_size(h, w, size)
    out = []
    for chunk in t.split(4096):
        if (nh, nw) != (h, w):
            down = nh < h
            chunk = F.interpolate(chunk, size=(nh, nw), mode="bilinear", align_corners=False, antialias=down)
        top, left = center_box(nh, nw, size)
        out.append(chunk[..., top : top + size, left : left + size])
    return torch.cat(out)


def folder_dtype(in_chans: int) -> torch.dtype:
    """How an image folder's images are stored: each file is decoded to RGB uint8 and resized on its own to the
    image size (:func:`trainers.data.readers.decode_rgb`), so they stay uint8 in colour and become float32
    luminance in grey, whatever size any file has."""
    return torch.uint8 if in_chans == 3 else torch.float32
