"""Run directories on cloud storage: a local working copy mirrored to a URI.

``--run-dir s3://bucket/runs/x`` (or ``gs://``, ``hdfs://``, ``file://``; anything ``pyarrow.fs`` opens, the
same filesystems Ray Tune's ``storage_path`` accepts) makes the driver work in a local cache folder that is
pulled from the URI on start and pushed after finished trials (at a bounded rate: the driver's
``nas.runtime.throttle``) and at the end, so a search started on
one head node resumes from another. Plain paths (local disk, NFS) need no mirror.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nas.errors import UserError
from nas.fsio import atomic_write

SKIP = ("driver.lock",)  # a lock only means something on the machine that holds it


def is_uri(text: str | os.PathLike) -> bool:
    return "://" in str(text)


def _cache_root() -> Path:
    return Path(os.environ.get("COATNAS_CACHE", Path.home() / ".cache" / "coatnas")) / "runs"


class Mirror:
    """A local folder kept in sync with the run directory at ``uri``."""

    def __init__(self, uri: str, local: str | os.PathLike | None = None):
        import pyarrow.fs as pafs

        self.uri = uri.rstrip("/")
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError subclasses
            raise UserError(
                f"Cannot open run directory {uri!r}: {err}. Use a local or NFS path, or a URI that "
                "pyarrow understands (s3://bucket/path, gs://bucket/path, file:///abs/path) with "
                "its credentials set up."
            ) from None
        name = Path(self.root).name or "run"
        digest = hashlib.sha1(self.uri.encode()).hexdigest()[:8]
        self.local = Path(local) if local else _cache_root() / f"{name}-{digest}"
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last pushed

    def _remote_files(self) -> list:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(self.root, recursive=True)
        return [f for f in self.fs.get_file_info(sel) if f.type == pafs.FileType.File]

    def exists(self) -> bool:
        return bool(self._remote_files())

    def pull(self) -> Path:
        """Copy the remote files into the local working copy; return the local folder.

        A local file changed after the remote copy was written (a driver on this machine that died before
        its last push) is kept, and pushed by the next :meth:`push`.
        """
        self.local.mkdir(parents=True, exist_ok=True)
        for f in self._remote_files():
            rel = Path(f.path).relative_to(self.root)
            dest = self.local / rel
            if dest.is_file() and f.mtime is not None and dest.stat().st_mtime > f.mtime.timestamp():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f.path) as src:
                atomic_write(dest, src.read())  # whole or not at all, never through a link
            if f.mtime is not None:  # the copy is as old as the remote file: only later changes are pushed
                os.utime(dest, (f.mtime.timestamp(), f.mtime.timestamp()))
            st = dest.stat()
            self._pushed[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
        return self.local

    def push(self) -> None:
        """Copy the local working copy to the URI (a file at a time, each replaced whole)."""
        self.fs.create_dir(self.root, recursive=True)
        for path in sorted(self.local.rglob("*")):
            if not path.is_file() or path.name in SKIP or ".tmp" in path.name:
                continue
            rel = path.relative_to(self.local).as_posix()
            st = path.stat()
            if self._pushed.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            target = f"{self.root}/{rel}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as src, self.fs.open_output_stream(target) as out:
                out.write(src.read())
            self._pushed[rel] = (st.st_size, st.st_mtime_ns)
