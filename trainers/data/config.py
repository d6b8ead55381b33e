"""The ``train.data`` section: where the images come from, as a frozen, torch-free configuration, and the one
registry of data sources.

:data:`SOURCES` declares every source once: its name beside its reader (``"module:function"``, imported only
when the source is read: the readers need numpy and torch, this module neither), whether it reads a file or a
folder at ``path``, and what that path must hold (the text of the error when it does not). A new source is
one entry here and one reader function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nas.errors import UserError
from nas.registry import load


@dataclass(frozen=True)
class Source:
    """One data source.

    Args:
        name: what ``train.data.name`` says.
        reader: ``"module:function"`` of its reader, called as ``reader(cfg, path, image_size, in_chans, origin)``
            (``path``: the resolved :class:`~pathlib.Path`, or ``None`` for a source without one) and returning
            (x NCHW numpy, y int64 numpy, number of classes); see :mod:`trainers.data.readers`.
        path: ``"file"`` or ``"folder"`` when the source reads ``train.data.path`` (such a source is shared
            through Ray's object store, :mod:`trainers.data.shared`), ``None`` when it needs no files.
        expected: what ``path`` must hold, for error messages.
        classes: its number of classes when the name alone tells (``None``: counted from the data).
    """

    name: str
    reader: str
    path: Literal["file", "folder"] | None = None
    expected: str = ""
    classes: int | None = None

    def read(self) -> Callable[..., Any]:
        """The reader function (imports its module)."""
        return load(self.reader)


@dataclass(frozen=True)
class Origin:
    """Where a data path came from, for messages: the YAML ``file`` (or ``None``) and the ``key`` (a YAML key
    such as ``train.data.path``, or a flag such as ``--data-path``); ``base``: the file next to which a
    relative path is looked up, when that is not ``file`` (a study's proxy overriding its search YAML's data)."""

    file: str | None
    key: str
    base: str | None = None


def bad_source(cfg: DataConfig, path: Path, origin: Origin, problem: str) -> UserError:
    """The one-paragraph error of a source whose files at ``path`` cannot be its data: the YAML, the key,
    the problem, the path and what the source expects there."""
    where = f"{origin.file}: " if origin.file else ""
    return UserError(
        f"{where}`{origin.key}` for source `{cfg.name}`: {problem} ({path}). Expected {SOURCES[cfg.name].expected}."
        + _missing_cifar_fix(cfg, path, origin, problem)
    )


def _missing_cifar_fix(cfg: DataConfig, path: Path, origin: Origin, problem: str) -> str:
    """For CIFAR data that is not there (a CIFAR source's folder or pickles, an npz named cifar*): the two ways
    to get it, ``scripts/prepare_cifar.py`` and the source's ``download`` option; ``""`` otherwise."""
    if not problem.startswith(("no such", "missing ")):
        return ""
    stem = path.name.lower().replace("-", "").replace("_", "")
    if cfg.name == "npz" and "cifar" in stem:
        name = "cifar100" if "cifar100" in stem else "cifar10"
    elif cfg.name in ("cifar10", "cifar100"):
        name = cfg.name
    else:
        return ""
    looked = ""
    given = Path(cfg.path).expanduser() if cfg.path else None
    if given is not None and not given.is_absolute() and given != path:
        looked = f" The relative path `{cfg.path}` was looked up in the current folder and next to the YAML."
    fixes = []
    if cfg.name == "npz" and name == "cifar10":
        fixes.append(
            "make the npz files from your own download of CIFAR-10 (image folders cifar10/train/<class>/ and "
            "cifar10/test/<class>/, or their .tar.gz) with `python scripts/prepare_cifar.py CIFAR10.tar.gz "
            f"data/`, which writes data/cifar10-train.npz and data/cifar10-test.npz, and point `{origin.key}` at "
            "the train file"
        )
    if origin.key.endswith(".path"):
        section = origin.key[: -len(".path")]
        fixes.append(
            f"set `{section}: {{name: {name}, download: true}}` in {origin.file or 'the YAML'} to fetch the official "
            f"{name} python archive on first use (into $COATNAS_CACHE or ~/.cache/coatnas; a `path` there names "
            "another folder)"
        )
    else:
        fixes.append(
            f"train on the official {name} python archive, fetched on first use: pass a --protocol YAML whose "
            f"`train.data` is `{{name: {name}, download: true}}` (and no {origin.key})"
        )
    return f"{looked} To get the data: {'; or '.join(fixes)}."


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("digits", "trainers.data.readers:read_digits", classes=10),
        Source("synthetic", "trainers.data.readers:read_synthetic"),
        Source(
            "cifar10",
            "trainers.data.readers:read_cifar",
            "folder",
            "a folder holding the CIFAR-10 python pickles `data_batch_1` ... `data_batch_5` (and `test_batch`), as "
            "unpacked from cifar-10-python.tar.gz",
            classes=10,
        ),
        Source(
            "cifar100",
            "trainers.data.readers:read_cifar",
            "folder",
            "a folder holding the CIFAR-100 python pickles `train` (and `test`), as unpacked from "
            "cifar-100-python.tar.gz",
            classes=100,
        ),
        Source(
            "imagefolder",
            "trainers.data.readers:read_imagefolder_source",
            "folder",
            f"a folder with one sub-folder per class holding image files ({', '.join(IMAGE_EXTS)})",
        ),
        Source(
            "npz",
            "trainers.data.npz:read_npz",
            "file",
            "a .npz file with arrays `x` (N,H,W or N,H,W,C or N,C,H,W with 1 or 3 channels; uint8 0-255, or "
            "finite integers or floats) and `y` (N integer labels 0..K-1, at least 2 classes)",
        ),
    )
}


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

    name: Literal[tuple(SOURCES)] = "digits"
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
