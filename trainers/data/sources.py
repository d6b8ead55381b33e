"""Where a data source's files are: path resolution and cheap checks before any loading (no torch).

The search driver resolves and checks a source with :func:`resolve_source` while validating the YAML, so a
wrong path is reported before a worker starts; :mod:`trainers.data.loading` reads the files.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from nas.errors import ConfigError, UserError

from trainers.data.config import DataConfig

__all__ = ["Origin", "resolve_source", "source_path", "downloaded", "bad_source", "EXPECTED"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Origin:
    """Where the data path came from, for messages: the YAML ``file`` (or ``None``) and the ``key``."""

    file: str | None
    key: str


def resolve_source(cfg: DataConfig, file: str | None = None, key: str = "train.data.path") -> DataConfig:
    """``cfg`` with its path made absolute (a relative path that does not exist from here is taken next to
    ``file``) after a cheap check that the source is there, without loading it: the search driver calls
    this so that a wrong path is reported before any worker starts (workers run in other folders)."""
    origin = Origin(file, key)
    if cfg.download:
        return dataclasses.replace(cfg, path=str(downloaded(cfg, origin).absolute()))
    if cfg.path is None or cfg.name in ("digits", "synthetic"):
        return cfg
    path = source_path(cfg, origin)
    if cfg.name == "npz":
        if not path.is_file():
            raise bad_source(cfg, path, origin, "no such file")
    elif not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    elif cfg.name in ("cifar10", "cifar100"):
        first = "data_batch_1" if cfg.name == "cifar10" else "train"
        if not any((p / first).is_file() for p in (path, path / "cifar-10-batches-py", path / "cifar-100-python")):
            raise bad_source(cfg, path, origin, f"missing {first}")
    return dataclasses.replace(cfg, path=str(path.absolute()))


def downloaded(cfg: DataConfig, origin: Origin) -> Path:
    """The folder of the pickles of a ``download: true`` source, fetched into ``path`` if not there."""
    from trainers.data.download import default_cache, ensure_cifar

    section = origin.key[: -len(".path")] if origin.key.endswith(".path") else "train.data"
    if cfg.name not in ("cifar10", "cifar100"):
        raise ConfigError(
            origin.file,
            f"{section}.download",
            f"is not available for the `{cfg.name}` source",
            "true only with `cifar10` or `cifar100`; false (the default) otherwise",
            value=True,
        )
    cache = source_path(cfg, origin) if cfg.path is not None else default_cache()
    return ensure_cifar(cfg.name, cache, url=cfg.url, md5=cfg.md5, where=section)


def source_path(cfg: DataConfig, origin: Origin) -> Path:
    path = Path(os.path.expanduser(cfg.path))
    if origin.file and not path.is_absolute():
        path = Path(origin.file).parent / path if not path.exists() else path
    return path


EXPECTED = {
    "cifar10": "a folder holding the CIFAR-10 python pickles `data_batch_1` ... `data_batch_5` (and "
    "`test_batch`), as unpacked from cifar-10-python.tar.gz",
    "cifar100": "a folder holding the CIFAR-100 python pickles `train` (and `test`), as unpacked from "
    "cifar-100-python.tar.gz",
    "imagefolder": f"a folder with one sub-folder per class holding image files ({', '.join(IMAGE_EXTS)})",
    "npz": "a .npz file with arrays `x` (N,H,W or N,H,W,C or N,C,H,W; uint8 0-255 or float) and `y` "
    "(N integer labels 0..K-1)",
}


def bad_source(cfg: DataConfig, path: Path, origin: Origin, problem: str) -> UserError:
    where = f"{origin.file}: " if origin.file else ""
    return UserError(
        f"{where}`{origin.key}` for source `{cfg.name}`: {problem} ({path}). Expected {EXPECTED[cfg.name]}."
    )
