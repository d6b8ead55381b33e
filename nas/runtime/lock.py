"""One driver per run directory: an exclusive ``fcntl`` lock on ``RUN_DIR/driver.lock``.

The lock dies with its process (even on SIGKILL), so a crashed driver never blocks ``--resume``; the file
names the holder (host, pid, start time) for the message a second driver gets. On filesystems without
working ``flock`` (some NFS setups) the lock is advisory only: docs/cluster.md says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from nas.errors import UserError

__all__ = ["RunLock"]


class RunLock:
    """Context manager holding the run directory's driver lock."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "driver.lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a symbolic link: the lock file is truncated and rewritten below
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            from nas.fsio import os_problem

            raise UserError(f"Cannot open the driver lock {self.path}: {os_problem(err)}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise UserError(
                f"Run directory {self.path.parent} is in use by another nas-search driver ({holder}). "
                "Wait for it to finish or stop it (Ctrl-C), then resume with "
                f"`nas-search --resume {self.path.parent}`; use a different `--name`/`--run-dir` for a new "
                "search."
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            ).encode(),
        )
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _read_holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (ValueError, KeyError, OSError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
