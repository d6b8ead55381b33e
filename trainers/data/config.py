"""The ``train.data`` section: where the images come from, as a frozen, torch-free configuration.

The data sources' names live here (``SOURCES``); each one's reader is ``trainers.data.readers.READERS``
(a test keeps the two in step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# The data sources: a name here, its reader in ``trainers.data.readers.READERS`` (a test keeps the two in step).
SOURCES = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder", "npz")


def _in(lo: float, hi: float):
    return {"check": lambda v: lo <= v <= hi, "allowed": f"a number from {lo} to {hi}"}


def _min(lo: int):
    return {"check": lambda v: v is None or v >= lo, "allowed": f"an integer >= {lo}"}


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from (the ``train.data`` section).

    Args:
        name: the source; ``digits`` (scikit-learn's 1,797 handwritten 8x8 digits, offline) is the default.
        path: folder or file for ``cifar10``/``cifar100``/``imagefolder``/``npz``.
        val_fraction: share of each class held out for validation.
        seed: seed of the stratified split (and of the synthetic generator).
        limit: keep at most this many examples in total (stratified) before splitting; ``null`` keeps all.
        synthetic_samples: number of generated images (``synthetic``).
        synthetic_classes: number of generated classes (``synthetic``).
        synthetic_difficulty: 0 (clean class patterns) to 1 (patterns buried in noise) (``synthetic``).
        download: ``true`` fetches the official archive into ``path`` (default ``~/.cache/coatnas``) when the
            pickles are not there (``cifar10``/``cifar100``; see :mod:`trainers.data.download`); ``false`` or
            ``null`` (the default) only reads ``path``.
        url: where to download the archive from instead of the official server (a mirror).
        md5: the archive's expected MD5 instead of the official one (a mirror serving a re-packed archive).
        stream_above_mb: an ``imagefolder`` whose images would take more than this many MB (10^6 bytes) in
            memory is streamed: decoded batch by batch instead of loaded (:mod:`trainers.data.stream`); ``0``
            always streams, ``null`` never does. Other sources are always loaded.
    """

    name: Literal[SOURCES] = "digits"
    path: str | None = None
    val_fraction: float = field(default=0.2, metadata=_in(0.01, 0.9))
    seed: int = 0
    limit: int | None = field(default=None, metadata=_min(2))
    synthetic_samples: int = field(default=2000, metadata=_min(4))
    synthetic_classes: int = field(default=10, metadata=_min(2))
    synthetic_difficulty: float = field(default=0.5, metadata=_in(0.0, 1.0))
    download: bool | None = None  # null (as a protocol recorded before the key existed reads) = false
    url: str | None = field(
        default=None,
        metadata={
            "check": lambda v: v is None or re.match(r"(https?|file)://\S+$", v) is not None,
            "allowed": "an http://, https:// or file:// URL of the archive, or null for the official one",
        },
    )
    md5: str | None = field(
        default=None,
        metadata={
            "check": lambda v: v is None or re.fullmatch(r"[0-9a-fA-F]{32}", v) is not None,
            "allowed": "32 hexadecimal digits, or null for the official archive's",
        },
    )
    stream_above_mb: float | None = field(
        default=2048.0,
        metadata={
            "check": lambda v: v is None or v >= 0,
            "allowed": "a number of megabytes >= 0 (0: always stream an image folder), or null (never stream)",
        },
    )
