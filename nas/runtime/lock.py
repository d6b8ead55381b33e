"""One driver per folder: an exclusive ``fcntl`` lock on ``FOLDER/driver.lock``, for ``nas-search`` (its run
directory) and ``nas-fidelity`` (its study directory) alike.

The lock dies with its process (even on SIGKILL), so a crashed driver never blocks ``--resume``. The file
names the holder (command, host, pid, start time) for the message a second driver gets: it names the
command that holds the folder, the folder, and what the refused command can do. On filesystems without
working ``flock`` (some NFS setups) the lock is advisory only: docs/cluster.md says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.runtime.command import Command

LOCK_NAME = "driver.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says (``command`` is empty in a lock written before it was recorded)."""

    pid: int
    host: str
    since: str
    command: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Holder:
        from nas.fsio import Invalid

        if not isinstance(data, dict):
            raise Invalid("not a JSON object")
        pid, host, since, command = (data.get(k) for k in ("pid", "host", "since", "command"))
        if isinstance(pid, bool) or not isinstance(pid, int) or not isinstance(host, str) or not isinstance(since, str):
            raise Invalid("pid, host or since missing or of the wrong type")
        return cls(pid, host, since, command if isinstance(command, str) else "")

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.since}"


class RunLock:
    """Context manager holding ``folder``'s driver lock for ``command``."""

    def __init__(self, folder: str | os.PathLike, command: Command):
        self.path = Path(folder) / LOCK_NAME
        self.command = command
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
            raise UserError(self._refusal(holder)) from None
        holder = Holder(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), self.command.name)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder.__dict__).encode())
            os.fsync(fd)
        except OSError:  # a full disk: the lock holds all the same, only the name of its holder is missing
            pass
        self._fd = fd
        return self

    def _refusal(self, holder: Holder | None) -> str:
        folder, me = self.path.parent, self.command
        who = f"({holder})" if holder is not None else "(holder unknown)"
        other = holder.command if holder is not None and holder.command else ""
        if other and other != me.name:
            return (
                f"{folder} is in use by a running {other} driver {who}: it is that command's folder, not a "
                f"{me.folder} of {me.name}. Use {me.new_folder}."
            )
        return (
            f"{me.folder.capitalize()} {folder} is in use by another {other or me.name} driver {who}. Wait for it to "
            f"finish or stop it (Ctrl-C), then resume with {me.resume(folder)}; use {me.new_folder}."
        )

    @staticmethod
    def _read_holder(fd: int) -> Holder | None:
        from nas.fsio import Invalid, loads

        try:
            return Holder.from_json(loads(os.pread(fd, 4096, 0) or b"{}"))
        except (ValueError, Invalid, OSError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
