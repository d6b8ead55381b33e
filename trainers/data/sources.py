"""Where a data source's files are: path resolution and cheap checks before any loading (no torch).

The search driver resolves and checks a source with :func:`resolve_source` while validating the YAML, so a
wrong path (or an npz whose arrays cannot be images and labels) is reported before a worker starts;
:mod:`trainers.data.loading` reads the files through the source's reader (:data:`trainers.data.config.SOURCES`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from nas.errors import ConfigError
from trainers.data.config import SOURCES, DataConfig, Origin, bad_source
from trainers.data.download import ARCHIVES, default_cache, ensure_cifar


def resolve_source(
    cfg: DataConfig, file: str | None = None, key: str = "train.data.path", *, named: str | None = None
) -> DataConfig:
    """``cfg`` with its path made absolute (a relative path that does not exist from here is taken next to
    ``file``) after a cheap check that the source is there, without loading its images: the search driver
    calls this so that a wrong path is reported before any worker starts (workers run in other folders).
    ``named``: the file a refusal names with ``key``, when the value was written there rather than in ``file``."""
    origin = Origin(named or file, key, base=file if named else None)
    if cfg.download:
        return dataclasses.replace(cfg, path=str(downloaded(cfg, origin).absolute()))
    kind = SOURCES[cfg.name].path
    if cfg.path is None or kind is None:
        return cfg
    path = source_path(cfg, origin)
    if kind == "file":
        if not path.is_file():
            raise bad_source(cfg, path, origin, "no such file" if not os.path.lexists(path) else "not a regular file")
    elif not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    if cfg.name in ARCHIVES:
        cifar_folder(cfg, path, origin)
    elif cfg.name == "npz":
        from trainers.data.npz import check_npz

        check_npz(cfg, path, origin)
    return dataclasses.replace(cfg, path=str(path.absolute()))


def cifar_folder(cfg: DataConfig, path: Path, origin: Origin) -> Path:
    """The folder holding the CIFAR pickles: ``path`` or its unpacked archive folder (``cifar-10-batches-py``)."""
    arc = ARCHIVES[cfg.name]
    if not path.is_dir():
        raise bad_source(cfg, path, origin, "no such folder")
    if not (path / arc.needed[0]).is_file() and (path / arc.folder / arc.needed[0]).is_file():
        path = path / arc.folder
    missing = [n for n in arc.needed if not (path / n).is_file()]
    if missing:
        raise bad_source(cfg, path, origin, f"missing {', '.join(missing)}")
    return path


def downloaded(cfg: DataConfig, origin: Origin) -> Path:
    """The folder of the pickles of a ``download: true`` source, fetched into ``path`` if not there."""
    section = origin.key[: -len(".path")] if origin.key.endswith(".path") else "train.data"
    if cfg.name not in ARCHIVES:
        raise ConfigError(
            origin.file,
            f"{section}.download",
            f"is not available for the `{cfg.name}` source",
            f"true only with {' or '.join(f'`{n}`' for n in ARCHIVES)}; false (the default) otherwise",
            value=True,
        )
    cache = source_path(cfg, origin) if cfg.path is not None else default_cache()
    return ensure_cifar(cfg.name, cache, url=cfg.url, md5=cfg.md5, where=section)


def source_path(cfg: DataConfig, origin: Origin) -> Path:
    path = Path(os.path.expanduser(cfg.path))
    base = origin.base or origin.file
    if base and not path.is_absolute():
        path = Path(base).parent / path if not path.exists() else path
    return path
