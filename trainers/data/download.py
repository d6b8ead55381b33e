"""``download: true`` for the CIFAR sources: fetch the official archive once into a cache folder.

The archive is streamed into a temporary file created exclusively in the cache folder, its size and MD5
checked, and only then renamed to its final name; a download that stops early, runs past its deadline, grows
past the size cap or does not match the checksum is deleted and reported, so a partial file is never used.
Only the pickles the format holds are extracted (by name, regular files only, written by this module under
names it builds itself), into a temporary folder renamed into place when complete: no member of the archive
chooses where it lands, and the sizes its members declare are capped (a decompression bomb is refused). A lock
file serialises processes (workers of one node) that share the cache folder.

Limits, read by :func:`ensure_cifar` at each call (module constants; the two a user may need to change are
also environment variables, whose ranges are in :data:`nas.limits.RANGES`):

- :data:`DEADLINE_S` (``$COATNAS_DOWNLOAD_DEADLINE_S``): the whole download, connection, redirects and
  body together, in seconds. A server that trickles bytes ends with an error at the deadline (a watchdog shuts
  the connection), not only one that goes silent for :data:`TIMEOUT_S`.
- :data:`MAX_BYTES` (``$COATNAS_DOWNLOAD_MAX_MB``, in MB of 10^6 bytes): the archive's size. A larger
  announced Content-Length is refused before the body is read, a larger body while it streams.
- :data:`UNPACK_MAX_BYTES`, :data:`MAX_MEMBERS`: what the archive's members may declare in total, and how many
  members it may have.

Only ``http``, ``https`` and ``file`` URLs are fetched (redirects: ``http`` and ``https`` only). A ``file://``
URL must name a regular file of this machine: a folder, a FIFO or a device (``file:///dev/zero``) is refused
before anything is read from it. A name lookup (DNS) is bounded by the system resolver, not by the deadline.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import socket
import stat
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nas.errors import ConfigError, UserError
from nas.fsio import open_regular
from nas.limits import allowed_text, check_value

MIRROR_ENV = "COATNAS_DATA_MIRROR"
"""Environment variable: a base URL whose ``<archive name>`` replaces the official server's."""
DEADLINE_ENV = "COATNAS_DOWNLOAD_DEADLINE_S"
"""Environment variable: replaces :data:`DEADLINE_S` (seconds)."""
MAX_MB_ENV = "COATNAS_DOWNLOAD_MAX_MB"
"""Environment variable: replaces :data:`MAX_BYTES` (in MB of 10^6 bytes)."""

CHUNK = 1 << 20
TIMEOUT_S = 60.0
"""Seconds without a byte (or to connect) before a download is abandoned."""
DEADLINE_S = 3600.0
"""Seconds a whole download may take (the official archives are 163 and 161 MB)."""
MAX_BYTES = 1 << 30
"""Bytes an archive may have."""
UNPACK_MAX_BYTES = 2 << 30
"""Bytes the members of an archive may declare in total (the official ones: about 180 MB)."""
MAX_MEMBERS = 10_000
"""Members an archive may have (the official ones: about ten)."""
SCHEMES = ("http", "https", "file")


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


def _url_origin(url: str | None, where: str) -> str:
    if url:
        return f"`{where}.url`"
    return f"the environment variable {MIRROR_ENV}" if os.environ.get(MIRROR_ENV) else "the official URL"


@dataclass(frozen=True)
class Limits:
    deadline_s: float
    max_bytes: int


def download_limits() -> Limits:
    """The deadline and the size cap in force: the module constants, or their environment variables."""
    deadline, cap = float(DEADLINE_S), int(MAX_BYTES)
    for env in (DEADLINE_ENV, MAX_MB_ENV):
        text = os.environ.get(env)
        if text is None or not text.strip():
            continue
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                None, f"environment variable {env}", "is not a number", allowed_text(env), value=text
            ) from None
        check_value(value, env, None, f"environment variable {env}")
        if env == DEADLINE_ENV:
            deadline = value
        else:
            cap = int(value * 1e6)
    return Limits(deadline, cap)


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
    limits = download_limits()
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
        if not _cached_archive(archive, expected, limits, where):
            _download(archive_url(name, url), archive, expected, limits, where, _url_origin(url, where))
        _extract(archive, target, arc, where)
    return target


def _complete(folder: Path, arc: Archive) -> bool:
    return all((folder / m).is_file() for m in arc.needed)


@contextmanager
def _locked(path: Path, where: str) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise UserError(
            f"`{where}.path`: cannot open the lock file {path} ({err.strerror}). Set "
            f"`{where}.path` to a writable folder you own."
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(
                f"`{where}.path`: the lock file {path} is not a regular file. Move it aside (it is made anew)."
            )
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cached_archive(archive: Path, expected: str, limits: Limits, where: str) -> bool:
    """Whether ``archive`` is there with the expected MD5. One that is there but is not a regular file, is
    larger than the cap or has another MD5 was not made by this module (a download is renamed into place only
    once verified): it is refused, never replaced."""
    if not os.path.lexists(archive):
        return False
    move = (
        "Move it aside or delete it (the archive is then downloaded anew), or set "
        f"`{where}.md5` to its checksum if it is the archive you want."
    )
    try:
        fd, size = open_regular(archive)
    except OSError as err:
        raise UserError(
            f"`{where}.download: true`: {archive} exists but cannot be used as the archive "
            f"({err.strerror or err}). {move}"
        ) from None
    try:
        if size > limits.max_bytes:
            raise UserError(
                f"`{where}.download: true`: {archive} exists and has {size:,} bytes, more than the cap of "
                f"{limits.max_bytes:,} ({MAX_MB_ENV}). {move}"
            )
        h = hashlib.md5(usedforsecurity=False)
        while block := os.read(fd, CHUNK):
            h.update(block)
    finally:
        os.close(fd)
    if h.hexdigest() != expected:
        raise UserError(
            f"`{where}.download: true`: {archive} exists but its MD5 is {h.hexdigest()}, not the expected "
            f"{expected}; it was not made by this download (which keeps only a verified archive). {move}"
        )
    return True


class _Watchdog:
    """Shuts the download's connections at the deadline, wherever the download is blocked (connecting,
    reading headers, reading the body): a blocked read then returns, and :attr:`expired` says why."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _opener(watch: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener for ``http``/``https`` only (proxies from the environment honoured; redirects followed up to
    urllib's limit, to ``http``/``https`` only) whose connections :class:`_Watchdog` can shut."""

    class Conn(http.client.HTTPConnection):
        def connect(self):
            super().connect()
            watch.add(self.sock)

    class SConn(http.client.HTTPSConnection):
        def connect(self):
            super().connect()
            watch.add(self.sock)

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Conn, req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(SConn, req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        Plain(),
        Secure(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _download(url: str, dest: Path, expected_md5: str, limits: Limits, where: str, origin: str) -> None:
    """Stream ``url`` into a temporary file beside ``dest``; rename it to ``dest`` only when the byte
    count matches Content-Length and the MD5 matches ``expected_md5``, within the deadline and the cap."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number is refused here
    except ValueError as err:
        raise UserError(
            f"The archive URL {url!r} (from {origin}) is not a valid URL ({_one_line(err)}). Give an http(s) URL, "
            "or a file:// URL of the archive on this machine."
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UserError(
            f"The archive URL {url!r} (from {origin}) has the scheme {scheme or 'none'!r}; only "
            f"{', '.join(s + '://' for s in SCHEMES)} URLs are fetched. Give an http(s) URL, or a file:// URL "
            "of the archive on this machine."
        )
    if "@" in parts.netloc:  # urllib would look the whole `user:password@host` up as a host name
        shown = f"{scheme}://***@{parts.netloc.rpartition('@')[2]}{parts.path}"
        raise UserError(
            f"The archive URL {shown!r} (from {origin}) holds a user name or password (`user:password@`), which "
            "is not supported (and would be shown in messages and logs). Give a URL without them: a mirror "
            "this machine can read without logging in, or a file:// URL of an archive fetched yourself."
        )
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise UserError(
            f"The archive URL {url!r} (from {origin}) names the host {parts.netloc!r}; a file:// URL names "
            "a file of this machine (file:///path/to/archive.tar.gz). Use http(s) for another machine."
        )
    for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a killed process (we hold the lock)
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise _failed(url, dest, f"could not start: {err.strerror or err} in {dest.parent}", where) from None
    watch = _Watchdog(limits.deadline_s)
    end = time.monotonic() + limits.deadline_s
    done, total = 0, None
    h = hashlib.md5(usedforsecurity=False)
    html = False
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                with _source(url, scheme, parts, watch, min(TIMEOUT_S, limits.deadline_s)) as (read, total, ctype):
                    html = "html" in ctype
                    if total is not None and total > limits.max_bytes:
                        raise _failed(url, dest, f"announced {total:,} bytes, more than {_cap(limits)}", where)
                    print(f"coatnas: downloading {url} ({_mb(total)}) to {dest}", file=sys.stderr, flush=True)
                    while True:
                        if watch.expired or time.monotonic() > end:
                            raise _late(url, dest, done, limits, where)
                        block = read(CHUNK)
                        if not block:
                            break
                        done += len(block)
                        if done > limits.max_bytes:
                            raise _failed(url, dest, f"sent more than {_cap(limits)}", where)
                        if done == len(block):
                            html = html or block.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))
                        out.write(block)
                        h.update(block)
                    if watch.expired:
                        raise _late(url, dest, done, limits, where)
                out.flush()
                os.fsync(out.fileno())
        except UserError:
            raise
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
            if watch.expired:
                raise _late(url, dest, done, limits, where) from None
            raise _failed(url, dest, f"failed after {done:,} bytes ({_reason(err)})", where) from None
        if total is not None and done != total:
            raise _failed(url, dest, f"stopped after {done:,} of {total:,} bytes (the connection closed early)", where)
        got = h.hexdigest()
        if got != expected_md5:
            page = " (the server sent an HTML page, not the archive)" if html else ""
            raise _failed(
                url,
                dest,
                f"gave a file of {done:,} bytes with MD5 {got}, not the expected "
                f"{expected_md5} (a damaged or different file){page}",
                where,
            )
        os.replace(tmp, dest)
        print(f"coatnas: downloaded {dest.name} ({done:,} bytes, MD5 verified)", file=sys.stderr, flush=True)
    finally:
        watch.cancel()
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def _source(url: str, scheme: str, parts, watch: _Watchdog, timeout: float):
    """``(read(n), Content-Length or None, content type)`` of ``url``."""
    if scheme == "file":
        path = urllib.request.url2pathname(parts.path)
        fd, size = open_regular(path)
        try:  # a size of 0 is no promise: /proc files say 0 and have content (an empty file then reads 0 bytes)
            yield (lambda n: os.read(fd, n)), (size or None), ""
        finally:
            os.close(fd)
        return
    resp = _opener(watch).open(url, timeout=timeout)
    try:
        length = resp.headers.get("Content-Length", "").strip()
        yield resp.read1, (int(length) if length.isdigit() else None), resp.headers.get("Content-Type", "").lower()
    finally:
        resp.close()


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        err.close()
        return _one_line(f"HTTP {err.code} {err.reason}")
    if isinstance(err, http.client.HTTPException):
        return _one_line(f"the server's answer is not valid HTTP: {type(err).__name__} {err}")
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
    return _one_line(reason) or type(err).__name__


def _cap(limits: Limits) -> str:
    return f"the cap of {limits.max_bytes:,} bytes (raise {MAX_MB_ENV}, in MB, if the archive is really larger)"


def _late(url: str, dest: Path, done: int, limits: Limits, where: str) -> UserError:
    return _failed(
        url,
        dest,
        f"did not finish within its deadline of {limits.deadline_s:g} s ({done:,} bytes received: the server is "
        f"too slow or trickles bytes; raise {DEADLINE_ENV} for a slow link)",
        where,
    )


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
    if os.path.lexists(target):  # never made by this module: extraction renames a complete folder into place
        raise UserError(
            f"`{where}.path`: {target} exists but lacks some of "
            f"{', '.join(arc.needed)}; it was not made by a download. Move it aside (the "
            "archive is then unpacked there), or complete it."
        )
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{arc.folder}.", dir=target.parent))
    except OSError as err:
        raise _corrupt(archive, f"cannot be unpacked in {target.parent} ({err.strerror or err})", where) from None
    try:
        try:
            found = _copy_members(archive, tmp, arc, where)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise _corrupt(archive, f"cannot be unpacked ({_one_line(err) or type(err).__name__})", where) from None
        missing = [m for m in arc.members if m not in found]
        if missing:
            raise _corrupt(archive, f"lacks {', '.join(f'{arc.folder}/{m}' for m in missing)}", where)
        try:
            os.rename(tmp, target)
        except OSError as err:
            raise UserError(
                f"`{where}.path`: cannot put the unpacked archive at {target} ({err.strerror or err}); "
                "nothing there was changed. Move aside what is there, or choose another path."
            ) from None
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink(missing_ok=True)
            tmp.rmdir()


def _copy_members(archive: Path, tmp: Path, arc: Archive, where: str) -> set[str]:
    """Copy ``arc.members`` into ``tmp``; every member's declared size counts against
    :data:`UNPACK_MAX_BYTES` (reading past a member decompresses it), their number against :data:`MAX_MEMBERS`."""
    found: set[str] = set()
    declared = 0
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        while (m := tar.next()) is not None:
            tar.members.clear()  # read once: no list of members kept (millions of them would fill memory)
            count += 1
            declared += max(0, m.size)
            if count > MAX_MEMBERS or declared > UNPACK_MAX_BYTES:
                raise _corrupt(
                    archive,
                    f"declares more than {MAX_MEMBERS:,} members or {UNPACK_MAX_BYTES:,} bytes unpacked "
                    "(the official archive: about ten members, 180 MB), so it is not unpacked",
                    where,
                )
            name = m.name[2:] if m.name.startswith("./") else m.name
            folder, _, base = name.partition("/")
            if folder != arc.folder or base not in arc.members:
                continue
            if not m.isfile():
                raise _corrupt(archive, f"`{m.name}` is not a regular file", where)
            if base in found:
                raise _corrupt(archive, f"holds `{m.name}` twice", where)
            found.add(base)
            fd = os.open(tmp / base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as dst, tar.extractfile(m) as src:
                while block := src.read(CHUNK):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
    return found


def _corrupt(archive: Path, what: str, where: str) -> UserError:
    return UserError(
        f"The archive {archive} (`{where}.download: true`) {what}. Delete it and run again to "
        "download it anew, or place the official archive there."
    )
