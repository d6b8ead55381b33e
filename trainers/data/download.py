"""``download: true`` for the CIFAR sources: fetch the official archive once into a cache folder.

The archive is streamed into a temporary file created exclusively in the cache folder, its size and MD5
checked, and only then renamed to its final name; a download that stops early or does not match the
checksum is deleted and reported, so a partial file is never used. Only the pickles the format holds are
extracted (by name, regular files only, written by this module under names it builds itself), into a
temporary folder renamed into place when complete: no member of the archive chooses where it lands. A
lock file serialises processes (workers of one node) that share the cache folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nas.errors import UserError

__all__ = ["ARCHIVES", "Archive", "default_cache", "ensure_cifar", "MIRROR_ENV"]

MIRROR_ENV = "COATNAS_DATA_MIRROR"
"""Environment variable: a base URL whose ``<archive name>`` replaces the official server's."""

CHUNK = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Archive:
    """One official archive: where it is, its checksum, the folder it unpacks to, the files extracted
    (``members``) and those the source reads (``needed``)."""

    url: str
    md5: str
    folder: str
    members: tuple[str, ...]
    needed: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES = {
    "cifar10": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        tuple(f"data_batch_{i}" for i in range(1, 6)),
    ),
    "cifar100": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train", "test", "meta"),
        ("train",),
    ),
}


def default_cache() -> Path:
    """``$COATNAS_CACHE`` (the folder run-directory mirrors use too), else ``~/.cache/coatnas``."""
    return Path(os.environ.get("COATNAS_CACHE") or Path.home() / ".cache" / "coatnas")


def archive_url(name: str, url: str | None) -> str:
    """The URL to fetch ``name``'s archive from: ``url``, else the mirror of :data:`MIRROR_ENV`, else
    the official one."""
    if url:
        return url
    mirror = os.environ.get(MIRROR_ENV)
    arc = ARCHIVES[name]
    return f"{mirror.rstrip('/')}/{arc.filename}" if mirror else arc.url


def ensure_cifar(
    name: str, cache: Path, *, url: str | None = None, md5: str | None = None, where: str = "train.data"
) -> Path:
    """The folder holding ``name``'s extracted pickles: ``cache`` itself or ``cache/<archive folder>``
    when they are there, else the latter after downloading and extracting the archive into ``cache``.
    ``md5`` replaces the official checksum (a mirror serving a re-packed archive); ``where`` names the YAML
    section in messages."""
    arc = ARCHIVES[name]
    if cache.name == arc.folder:  # the extracted folder itself (a path resolved on the driver)
        cache = cache.parent
    target = cache / arc.folder
    for folder in (target, cache):
        if _complete(folder, arc):
            return folder
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"`{where}.path`: cannot create the download cache folder {cache} ({err.strerror}). "
            f"Set `{where}.path` to a writable folder for the {name} archive."
        ) from None
    with _locked(cache / f".{arc.filename}.lock", where):
        if _complete(target, arc):  # another process finished it while we waited
            return target
        archive = cache / arc.filename
        expected = (md5 or arc.md5).lower()
        if not archive.is_file() or _md5(archive) != expected:
            _download(archive_url(name, url), archive, expected, where)
        _extract(archive, target, arc, where)
    return target


def _complete(folder: Path, arc: Archive) -> bool:
    return all((folder / m).is_file() for m in arc.needed)


@contextmanager
def _locked(path: Path, where: str) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise UserError(
            f"`{where}.path`: cannot open the lock file {path} ({err.strerror}). Set "
            f"`{where}.path` to a writable folder you own."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, expected_md5: str, where: str) -> None:
    """Stream ``url`` into a temporary file beside ``dest``; rename it to ``dest`` only when the byte
    count matches Content-Length and the MD5 matches ``expected_md5``."""
    for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a killed process (we hold the lock)
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    done, total = 0, None
    h = hashlib.md5(usedforsecurity=False)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                print(f"coatnas: downloading {url} ({_mb(total)}) to {dest}", file=sys.stderr, flush=True)
                while block := resp.read(CHUNK):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = (
                f"HTTP {err.code} {err.reason}"
                if isinstance(err, urllib.error.HTTPError)
                else getattr(err, "reason", None) or err
            )
            raise _failed(url, dest, f"failed after {done:,} bytes ({reason})", where) from None
        if total is not None and done != total:
            raise _failed(url, dest, f"stopped after {done:,} of {total:,} bytes (the connection closed early)", where)
        got = h.hexdigest()
        if got != expected_md5:
            raise _failed(
                url,
                dest,
                f"gave a file of {done:,} bytes with MD5 {got}, not the expected "
                f"{expected_md5} (a damaged or different file)",
                where,
            )
        os.replace(tmp, dest)
        print(f"coatnas: downloaded {dest.name} ({done:,} bytes, MD5 verified)", file=sys.stderr, flush=True)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _mb(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:,.1f} MB"


def _failed(url: str, dest: Path, what: str, where: str) -> UserError:
    return UserError(
        f"Downloading {url} (`{where}.download: true`) {what}; nothing was kept, so {dest} is "
        "not used. Run the command again to retry; or set `{w}.url` (or the environment "
        f"variable {MIRROR_ENV}) to a mirror; or fetch the archive yourself and place it at {dest} "
        "(it is checked, then unpacked there).".replace("{w}", where)
    )


def _extract(archive: Path, target: Path, arc: Archive, where: str) -> None:
    """Copy the archive's ``arc.members`` (regular files under ``arc.folder/``) into ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{arc.folder}.", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                found = {}
                for m in tar:
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    folder, _, base = name.partition("/")
                    if folder == arc.folder and base in arc.members:
                        if not m.isfile():
                            raise _corrupt(archive, f"`{m.name}` is not a regular file", where)
                        found[base] = m
                        with tar.extractfile(m) as src, open(tmp / base, "wb") as dst:
                            shutil.copyfileobj(src, dst, CHUNK)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise _corrupt(archive, f"cannot be unpacked ({err})", where) from None
        missing = [m for m in arc.members if m not in found]
        if missing:
            raise _corrupt(archive, f"lacks {', '.join(f'{arc.folder}/{m}' for m in missing)}", where)
        if target.exists():  # never made by this module: extraction renames a complete folder into place
            raise UserError(
                f"`{where}.path`: {target} exists but lacks some of "
                f"{', '.join(arc.needed)}; it was not made by a download. Move it aside (the "
                "archive is then unpacked there), or complete it."
            )
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _corrupt(archive: Path, what: str, where: str) -> UserError:
    return UserError(
        f"The archive {archive} (`{where}.download: true`) {what}. Delete it and run again to "
        "download it anew, or place the official archive there."
    )
