"""Downloads and file data sources attacked as a hostile user would: URLs and schemes, a real HTTP server on
127.0.0.1 that misbehaves, archives with hostile contents, a cache folder in a bad state, and npz files and
image folders that cannot be data.

Every row must end in one paragraph (:class:`UserError`, a :class:`ConfigError` included; no traceback, no
line break) and leave everything outside the download's target folder exactly as it was (the folder of the
row's files, the server's, the FIFOs: compared entry by entry before and after). Deadlines, timeouts and caps
are set small here so that each row ends in about a second at most; no row asserts a duration.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_download import cifar_archive

import trainers.data.download as download
import trainers.data.npz as npz_module
from nas.errors import ConfigError, UserError, parse_dataclass
from trainers.data.config import DataConfig
from trainers.data.download import ARCHIVES, DEADLINE_ENV, MAX_MB_ENV, MIRROR_ENV
from trainers.data.loading import load_dataset
from trainers.data.sources import resolve_source

C10 = ARCHIVES["cifar10"]


# --------------------------------------------------------------------------------------------- the server
class Server:
    """A real ``http.server`` on 127.0.0.1 in a thread. ``routes[path]`` is ``handler -> None``: it writes the
    whole answer (status line, headers, body) itself, so it can misbehave in any way. Every loop in a route is
    bounded and ends when the client goes away or the server stops."""

    def __init__(self):
        self.routes: dict[str, Callable] = {}
        self.stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                route = outer.routes.get(self.path.split("?")[0])
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(body: bytes, ctype: str = "application/gzip", length: str | None = None) -> Callable:
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)) if length is None else length)
        h.end_headers()
        h.wfile.write(body)

    return route


def raw(data: bytes) -> Callable:
    """Write ``data`` as the whole answer (no status line of http.server's)."""
    return lambda h: h.wfile.write(data)


def status(code: int, headers: dict[str, str] | None = None) -> Callable:
    def route(h):
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def trickle(server: Server, header_only: bool = False, steps: int = 2000) -> Callable:
    """One byte at a time, every 10 ms, for at most ``steps`` bytes: far longer than the row's deadline."""

    def route(h):
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        h.wfile.flush()
        if not header_only:
            h.wfile.write(b"Content-Length: 10000000\r\n\r\n")
            h.wfile.flush()
        for _ in range(steps):
            if server.stopping.wait(0.01):
                return
            h.wfile.write(b"X" if header_only else b"\x00")
            h.wfile.flush()

    return route


def silent(server: Server, after_headers: bool = False) -> Callable:
    def route(h):
        if after_headers:
            h.send_response(200)
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.flush()
        server.stopping.wait(10)

    return route


def flood(server: Server, chunked: bool, total: int = 4_000_000) -> Callable:
    """``total`` bytes without a Content-Length (closed or chunked), 64 KiB at a time."""

    def route(h):
        h.send_response(200)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        block = b"\x00" * 65536
        for _ in range(total // len(block)):
            if server.stopping.is_set():
                return
            h.wfile.write(b"10000\r\n" + block + b"\r\n" if chunked else block)
        if chunked:
            h.wfile.write(b"0\r\n\r\n")

    return route


# ---------------------------------------------------------------------------------------------- archives
def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for info, body in members:
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def member(name: str, body: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, body if kind == tarfile.REGTYPE else None


def batch(n: int = 20, labels: int | None = None, extra: dict | None = None) -> bytes:
    rng = np.random.default_rng(0)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(labels or n)]}
    d.update(extra or {})
    return pickle.dumps(d, protocol=2)


def full(folder: str = C10.folder, skip: tuple[str, ...] = (), body: Callable[[str], bytes] = lambda m: batch()):
    return [member(f"{folder}/{m}", body(m)) for m in C10.members if m not in skip]


class Payload:
    """A pickle whose loading would run ``os.system`` (touching a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -------------------------------------------------------------------------------------------- the table
@dataclass
class Ctx:
    tmp: Path
    server: Server
    monkeypatch: pytest.MonkeyPatch

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    def __post_init__(self):
        (self.tmp / "src").mkdir()

    @property
    def src(self) -> Path:
        return self.tmp / "src"

    def serve(self, body: bytes, path: str = "/a.tar.gz", **kw) -> str:
        self.server.routes[path] = ok(body, **kw)
        return self.server.url(path)

    def fetch(self, url: str | None, md5sum: str | None = None, name: str = "cifar10") -> Callable[[], object]:
        cfg = DataConfig(name=name, download=True, path=str(self.cache), url=url, md5=md5sum)
        return lambda: load_dataset(resolve_source(cfg, str(self.tmp / "s.yaml")), 8, 3)

    def fetch_archive(self, body: bytes) -> Callable[[], object]:
        """Serve ``body`` under its own checksum: only its contents can be refused."""
        return self.fetch(self.serve(body), md5(body))

    def npz(self, **arrays) -> Callable[[], object]:
        path = self.src / "d.npz"
        np.savez(path, **arrays)
        return self.data("npz", path)

    def data(self, name: str, path: Path) -> Callable[[], object]:
        cfg = DataConfig(name=name, path=str(path), stream_above_mb=None)
        return lambda: load_dataset(resolve_source(cfg, str(self.tmp / "s.yaml")), 8, 3)

    def folder(self, classes: int = 2, per_class: int = 2) -> Path:
        root = self.src / "imgs"
        rng = np.random.default_rng(0)
        for c in range(classes):
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
        return root


ROWS: dict[str, tuple[Callable[[Ctx], Callable[[], object]], str]] = {}


def row(pattern: str):
    """Register ``fn(ctx) -> action`` as a row whose action must raise one paragraph matching ``pattern``."""

    def deco(fn):
        ROWS[fn.__name__] = (fn, pattern)
        return fn

    return deco


def parse(**data) -> Callable[[], object]:
    return lambda: parse_dataclass(DataConfig, {"name": "cifar10", "download": True, **data}, "s.yaml", "train.data")


# --- the YAML keys of a download
@row(r"s.yaml: `train.data.url`: is out of range.*http://, https:// or file://")
def yaml_url_ftp(ctx):
    return parse(url="ftp://host/cifar-10-python.tar.gz")


@row(r"`train.data.url`: is out of range")
def yaml_url_javascript(ctx):
    return parse(url="javascript:alert(1)")


@row(r"`train.data.url`: is out of range")
def yaml_url_empty(ctx):
    return parse(url="")


@row(r"`train.data.url`: is out of range")
def yaml_url_with_space(ctx):
    return parse(url="http://host/a b.tar.gz")


@row(r"`train.data.url`: is out of range")
def yaml_url_scheme_only(ctx):
    return parse(url="http://")


@row(r"`train.data.url`: has the wrong type")
def yaml_url_list(ctx):
    return parse(url=["http://a/b"])


@row(r"`train.data.md5`: is out of range.*32 hexadecimal digits")
def yaml_md5_not_hex(ctx):
    return parse(md5="z" * 32)


@row(r"`train.data.md5`: is out of range")
def yaml_md5_too_short(ctx):
    return parse(md5="abc")


@row(r"`train.data.md5`: has the wrong type")
def yaml_md5_number(ctx):
    return parse(md5=12345)


@row(r"`train.data.download`: has the wrong type.*true or false or null")
def yaml_download_string(ctx):
    return parse(download="yes")


@row(r"s.yaml: `train.data.download`: is not available for the `npz` source.*`cifar10` or `cifar100`")
def yaml_download_npz(ctx):
    return lambda: resolve_source(DataConfig(name="npz", download=True, path=str(ctx.src / "x.npz")), "s.yaml")


@row(r"`train.data.download`: is not available for the `imagefolder` source")
def yaml_download_imagefolder(ctx):
    return lambda: resolve_source(DataConfig(name="imagefolder", download=True, path=str(ctx.src)), "s.yaml")


# --- URLs and schemes
@row(
    rf"'ftp://mirror.example/cifar-10-python.tar.gz' \(from the environment variable {MIRROR_ENV}\) has the "
    "scheme 'ftp'"
)
def mirror_ftp(ctx):
    ctx.monkeypatch.setenv(MIRROR_ENV, "ftp://mirror.example/")
    return ctx.fetch(None)


@row(r"has the scheme 'data'; only http://, https://, file:// URLs are fetched")
def mirror_data_url(ctx):
    ctx.monkeypatch.setenv(MIRROR_ENV, "data:,hello")
    return ctx.fetch(None)


@row(r"has the scheme 'none'")
def mirror_no_scheme(ctx):
    ctx.monkeypatch.setenv(MIRROR_ENV, "/just/a/path")
    return ctx.fetch(None)


@row(r"\(from `train.data.url`\) names the host 'otherhost'; a file:// URL names a file of this machine")
def file_url_remote_host(ctx):
    return ctx.fetch("file://otherhost/archive.tar.gz")


@row(r"file:///dev/zero.*failed after 0 bytes \(it is a character device, not a regular file\)")
def file_url_dev_zero(ctx):
    return ctx.fetch("file:///dev/zero")


@row(r"failed after 0 bytes \(it is a FIFO, not a regular file\)")
def file_url_fifo(ctx):
    os.mkfifo(ctx.src / "pipe.tar.gz")
    return ctx.fetch(f"file://{ctx.src}/pipe.tar.gz")


@row(r"failed after 0 bytes \(it is a folder, not a regular file\)")
def file_url_folder(ctx):
    return ctx.fetch(f"file://{ctx.src}")


@row(r"failed after 0 bytes \(it is a character device, not a regular file\)")
def file_url_link_to_dev_zero(ctx):
    (ctx.src / "zero.tar.gz").symlink_to("/dev/zero")
    return ctx.fetch(f"file://{ctx.src}/zero.tar.gz")


@row(r"failed after 0 bytes \(No such file or directory\)")
def file_url_missing(ctx):
    return ctx.fetch(f"file://{ctx.src}/missing.tar.gz")


@row(r"announced 4,096 bytes, more than the cap of 1,000 bytes \(raise COATNAS_DOWNLOAD_MAX_MB")
def file_url_larger_than_cap(ctx):
    ctx.monkeypatch.setattr(download, "MAX_BYTES", 1000)
    (ctx.src / "big.tar.gz").write_bytes(b"\0" * 4096)
    return ctx.fetch(f"file://{ctx.src}/big.tar.gz")


@row(r"gave a file of 5 bytes with MD5 .*not the expected c58f30108f718f92721af3b95e74349a")
def file_url_wrong_md5(ctx):
    (ctx.src / "a.tar.gz").write_bytes(b"hello")
    return ctx.fetch(f"file://{ctx.src}/a.tar.gz")


@row(r"^(?!.*closed early).*file:///proc/self/environ.*gave a file of [\d,]+ bytes with MD5 ")
def file_url_proc_file_of_size_zero(ctx):
    """A /proc file says it has 0 bytes and has more: once "stopped after N of 0 bytes (the connection
    closed early)", now the file's content is what is checked."""
    return ctx.fetch("file:///proc/self/environ")


@row(r"^(?!.*secret).*'http://\*\*\*@127\.0\.0\.1:\d+/a.tar.gz' \(from `train.data.url`\) holds a user name")
def http_url_with_credentials(ctx):
    """urllib looked `user:secret@host` up as a host name (a DNS error) and the message showed the password."""
    return ctx.fetch(ctx.server.url("/a.tar.gz").replace("http://", "http://user:secret@"))


@row(r"holds a user name or password")
def mirror_with_a_token(ctx):
    ctx.monkeypatch.setenv(MIRROR_ENV, "https://token@mirror.example/")
    return ctx.fetch(None)


@row(r"failed after 0 bytes \(.*[Cc]onnection refused.*\)")
def http_closed_port(ctx):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return ctx.fetch(f"http://127.0.0.1:{port}/a.tar.gz")


@row(r"'http://127.0.0.1:99999/a.tar.gz' \(from `train.data.url`\) is not a valid URL \(Port out of range")
def http_port_out_of_range(ctx):
    return ctx.fetch("http://127.0.0.1:99999/a.tar.gz")


@row(r"is not a valid URL \(Port could not be cast")
def http_port_not_a_number(ctx):
    return ctx.fetch("http://127.0.0.1:http/a.tar.gz")


@row(r"is not a valid URL \(Invalid IPv6 URL\)")
def http_bad_ipv6(ctx):
    return ctx.fetch("http://[::1/a.tar.gz")


@row(r"failed after 0 bytes \(.*control character")
def mirror_control_character(ctx):
    ctx.monkeypatch.setenv(MIRROR_ENV, ctx.server.url("/a\x01b"))
    return ctx.fetch(None)


@row(r"https://127.0.0.1:\d+/a.tar.gz.*failed after 0 bytes \(.*(SSL|ssl|record|version)")
def https_to_plain_http(ctx):
    ctx.serve(b"x")
    return ctx.fetch(ctx.server.url("/a.tar.gz").replace("http://", "https://"))


# --- a misbehaving server
@row(r"failed after 0 bytes \(HTTP 404 Not Found\)")
def http_404(ctx):
    return ctx.fetch(ctx.server.url("/nothing.tar.gz"))


@row(r"failed after 0 bytes \(HTTP 500 Internal Server Error\)")
def http_500(ctx):
    ctx.server.routes["/a"] = status(500)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(HTTP 403 Forbidden\)")
def http_403(ctx):
    ctx.server.routes["/a"] = status(403)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(HTTP 302 .*infinite loop")
def http_redirect_loop(ctx):
    ctx.server.routes["/loop"] = status(302, {"Location": "/loop"})
    return ctx.fetch(ctx.server.url("/loop"))


@row(r"failed after 0 bytes \(HTTP 302 .*(infinite loop|redirect)")
def http_redirect_chain(ctx):
    for i in range(30):
        ctx.server.routes[f"/r{i}"] = status(302, {"Location": f"/r{i + 1}"})
    return ctx.fetch(ctx.server.url("/r0"))


@row(r"failed after 0 bytes \(HTTP 301 .*Redirection to url 'file:///etc/passwd' is not allowed")
def http_redirect_to_file(ctx):
    ctx.server.routes["/a"] = status(301, {"Location": "file:///etc/passwd"})
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(unknown url type: ftp\)")
def http_redirect_to_ftp(ctx):
    ctx.server.routes["/a"] = status(302, {"Location": "ftp://127.0.0.1/x.tar.gz"})
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(HTTP 302 Found\)")
def http_redirect_without_location(ctx):
    ctx.server.routes["/a"] = status(302)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"gave a file of \d+ bytes with MD5 .*\(the server sent an HTML page, not the archive\)")
def http_html_instead_of_archive(ctx):
    return ctx.fetch(ctx.serve(b"<!DOCTYPE html><html><body>Please log in</body></html>", ctype="text/html"))


@row(r"gave a file of 0 bytes with MD5 d41d8cd98f00b204e9800998ecf8427e, not the expected")
def http_empty_body(ctx):
    return ctx.fetch(ctx.serve(b""))


@row(r"stopped after 1,000 of 5,000 bytes \(the connection closed early\)")
def http_content_length_too_large(ctx):
    return ctx.fetch(ctx.serve(b"\0" * 1000, length="5000"))


@row(r"gave a file of 10 bytes with MD5")
def http_content_length_too_small(ctx):
    return ctx.fetch(ctx.serve(b"\0" * 1000, length="10"))


@row(r"gave a file of \d+ bytes with MD5")
def http_content_length_garbage(ctx):
    ctx.server.routes["/a"] = raw(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\nConnection: close\r\n\r\n" + b"\0" * 300)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"did not finish within its deadline of 1 s \(\d+ bytes received: the server is too slow or trickles")
def http_trickles_the_body(ctx):
    ctx.monkeypatch.setattr(download, "DEADLINE_S", 1.0)
    ctx.server.routes["/a"] = trickle(ctx.server)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"did not finish within its deadline of 1 s \(0 bytes received")
def http_trickles_the_headers(ctx):
    ctx.monkeypatch.setattr(download, "DEADLINE_S", 1.0)
    ctx.server.routes["/a"] = trickle(ctx.server, header_only=True)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"did not finish within its deadline of 1 s")
def http_trickles_with_the_environment_deadline(ctx):
    ctx.monkeypatch.setenv(DEADLINE_ENV, "1")
    ctx.server.routes["/a"] = trickle(ctx.server)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(timed out\)")
def http_silent_before_headers(ctx):
    ctx.monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    ctx.server.routes["/a"] = silent(ctx.server)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(timed out\)")
def http_silent_after_headers(ctx):
    ctx.monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    ctx.server.routes["/a"] = silent(ctx.server, after_headers=True)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"sent more than the cap of 1,000,000 bytes \(raise COATNAS_DOWNLOAD_MAX_MB")
def http_sends_too_much_without_length(ctx):
    ctx.monkeypatch.setenv(MAX_MB_ENV, "1")
    ctx.server.routes["/a"] = flood(ctx.server, chunked=False)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"sent more than the cap of 1,000,000 bytes")
def http_sends_too_much_chunked(ctx):
    ctx.monkeypatch.setenv(MAX_MB_ENV, "1")
    ctx.server.routes["/a"] = flood(ctx.server, chunked=True)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"announced 1,000,000,000,000 bytes, more than the cap of 1,073,741,824 bytes")
def http_announces_too_much(ctx):
    ctx.server.routes["/a"] = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n" + b"\0" * 100)
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(the server's answer is not valid HTTP: BadStatusLine")
def http_garbage_status_line(ctx):
    ctx.server.routes["/a"] = raw(b"HELLO THERE\r\n\r\n")
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(the server's answer is not valid HTTP: HTTPException got more than 100 headers")
def http_too_many_headers(ctx):
    ctx.server.routes["/a"] = raw(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n")
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(the server's answer is not valid HTTP: LineTooLong")
def http_header_line_too_long(ctx):
    ctx.server.routes["/a"] = raw(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n")
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(.*(RemoteDisconnected|closed connection without response)")
def http_closes_without_answer(ctx):
    ctx.server.routes["/a"] = raw(b"")
    return ctx.fetch(ctx.server.url("/a"))


@row(r"failed after 0 bytes \(the server's answer is not valid HTTP: IncompleteRead")
def http_broken_chunked_encoding(ctx):
    ctx.server.routes["/a"] = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n")
    return ctx.fetch(ctx.server.url("/a"))


@row(r"not the expected 00000000000000000000000000000000")
def http_good_archive_wrong_md5(ctx):
    return ctx.fetch(ctx.serve(cifar_archive()), "0" * 32)


# --- archive contents (each served under its own checksum)
@row(r"lacks cifar-10-batches-py/data_batch_1, .*Delete it and run again")
def archive_traversal_only(ctx):
    return ctx.fetch_archive(tar_gz(member("../../escaped"), member("/tmp/abs-escaped"), member("a/../../../x")))


@row(r"lacks cifar-10-batches-py/data_batch_5")
def archive_traversal_beside_pickles(ctx):
    return ctx.fetch_archive(tar_gz(*full(skip=("data_batch_5",)), member(f"{C10.folder}/../../escaped")))


@row(r"`cifar-10-batches-py/data_batch_1` is not a regular file")
def archive_symlink_member(ctx):
    return ctx.fetch_archive(tar_gz(member(f"{C10.folder}/data_batch_1", kind=tarfile.SYMTYPE, link="/etc/passwd")))


@row(r"`cifar-10-batches-py/data_batch_1` is not a regular file")
def archive_hardlink_member(ctx):
    return ctx.fetch_archive(tar_gz(member(f"{C10.folder}/data_batch_1", kind=tarfile.LNKTYPE, link="/etc/passwd")))


@row(r"`cifar-10-batches-py/data_batch_2` is not a regular file")
def archive_folder_member(ctx):
    return ctx.fetch_archive(
        tar_gz(*full(skip=("data_batch_2",)), member(f"{C10.folder}/data_batch_2", kind=tarfile.DIRTYPE))
    )


@row(r"`cifar-10-batches-py/data_batch_1` is not a regular file")
def archive_fifo_member(ctx):
    return ctx.fetch_archive(tar_gz(member(f"{C10.folder}/data_batch_1", kind=tarfile.FIFOTYPE)))


@row(r"`cifar-10-batches-py/test_batch` is not a regular file")
def archive_device_member(ctx):
    return ctx.fetch_archive(
        tar_gz(*full(skip=("test_batch",)), member(f"{C10.folder}/test_batch", kind=tarfile.CHRTYPE))
    )


@row(r"holds `cifar-10-batches-py/data_batch_3` twice")
def archive_duplicate_member(ctx):
    return ctx.fetch_archive(tar_gz(*full(), member(f"{C10.folder}/data_batch_3", batch())))


@row(r"lacks cifar-10-batches-py/data_batch_2, cifar-10-batches-py/data_batch_3")
def archive_missing_members(ctx):
    return ctx.fetch_archive(tar_gz(member(f"{C10.folder}/data_batch_1", batch())))


@row(r"lacks cifar-10-batches-py/data_batch_1")
def archive_wrong_folder_name(ctx):
    return ctx.fetch_archive(tar_gz(*full(folder="cifar10")))


@row(r"cannot be unpacked \(.*(not a gzip file|Not a gzipped file)")
def archive_plain_tar(ctx):
    return ctx.fetch_archive(tar_gz(*full(), compress=False))


@row(r"cannot be unpacked")
def archive_gzip_of_garbage(ctx):
    return ctx.fetch_archive(gzip.compress(b"this is not a tar file " * 100))


@row(r"cannot be unpacked")
def archive_truncated(ctx):
    body = tar_gz(*full())
    return ctx.fetch_archive(body[: len(body) // 2])


@row(r"cannot be unpacked")
def archive_empty_file(ctx):
    return ctx.fetch_archive(b"")


@row(r"cannot be unpacked")
def archive_corrupt_middle(ctx):
    body = bytearray(tar_gz(*full()))
    body[len(body) // 2 : len(body) // 2 + 64] = b"\xff" * 64
    return ctx.fetch_archive(bytes(body))


@row(r"declares more than 10,000 members or 1,000,000 bytes unpacked.*so it is not unpacked")
def archive_bomb_member_size(ctx):
    ctx.monkeypatch.setattr(download, "UNPACK_MAX_BYTES", 1_000_000)
    return ctx.fetch_archive(tar_gz(member(f"{C10.folder}/data_batch_1", b"\0" * 2_000_000)))


@row(r"declares more than 10,000 members or 2,147,483,648 bytes unpacked")
def archive_bomb_declared_in_header(ctx):
    info = tarfile.TarInfo(f"{C10.folder}/data_batch_1")
    info.size = 10**11  # declared, never sent: refused before anything is read past it
    return ctx.fetch_archive(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))


@row(r"declares more than 5 members")
def archive_bomb_member_count(ctx):
    ctx.monkeypatch.setattr(download, "MAX_MEMBERS", 5)
    return ctx.fetch_archive(tar_gz(*[member(f"junk/{i}") for i in range(50)]))


@row(r"data_batch_1\). Expected a folder holding the CIFAR-10 python pickles")
def archive_pickle_runs_code(ctx):
    marker = ctx.src / "pwned"
    evil = pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2)
    return ctx.fetch_archive(tar_gz(*full(body=lambda m: evil if m == "data_batch_1" else batch())))


@row(r"could not read this pickle")
def archive_pickle_garbage(ctx):
    return ctx.fetch_archive(tar_gz(*full(body=lambda m: b"not a pickle at all")))


@row(r"has 20 images but 7 labels")
def archive_pickle_labels_mismatch(ctx):
    return ctx.fetch_archive(tar_gz(*full(body=lambda m: batch(20, labels=7))))


# --- the cache folder in a state this module did not make
@row(r"exists but its MD5 is .*not the expected .*Move it aside or delete it")
def cache_foreign_archive(ctx):
    ctx.cache.mkdir()
    (ctx.cache / C10.filename).write_bytes(b"my own file")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"exists but cannot be used as the archive \(it is a FIFO, not a regular file\)")
def cache_archive_is_fifo(ctx):
    ctx.cache.mkdir()
    os.mkfifo(ctx.cache / C10.filename)
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"exists but cannot be used as the archive \(it is a folder, not a regular file\)")
def cache_archive_is_folder(ctx):
    (ctx.cache / C10.filename).mkdir(parents=True)
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"exists but cannot be used as the archive \(it is a character device, not a regular file\)")
def cache_archive_links_to_dev_zero(ctx):
    ctx.cache.mkdir()
    (ctx.cache / C10.filename).symlink_to("/dev/zero")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"exists and has 4,096 bytes, more than the cap of 1,000 ")
def cache_archive_larger_than_cap(ctx):
    ctx.monkeypatch.setattr(download, "MAX_BYTES", 1000)
    ctx.cache.mkdir()
    (ctx.cache / C10.filename).write_bytes(b"\0" * 4096)
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"cifar-10-batches-py exists but lacks some of data_batch_1.*not made by a download")
def cache_incomplete_target(ctx):
    (ctx.cache / C10.folder).mkdir(parents=True)
    (ctx.cache / C10.folder / "notes.txt").write_text("mine")
    body = cifar_archive()
    return ctx.fetch(ctx.serve(body), md5(body))


@row(r"cifar-10-batches-py exists but lacks some of")
def cache_target_dangling_link(ctx):
    ctx.cache.mkdir()
    (ctx.cache / C10.folder).symlink_to(ctx.tmp / "nowhere")
    body = cifar_archive()
    return ctx.fetch(ctx.serve(body), md5(body))


@row(r"cannot create the download cache folder .*\(File exists\)")
def cache_path_is_a_file(ctx):
    ctx.cache.write_text("a file")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"cannot open the lock file .*\.cifar-10-python.tar.gz.lock")
def cache_lock_is_a_folder(ctx):
    (ctx.cache / f".{C10.filename}.lock").mkdir(parents=True)
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"`environment variable COATNAS_DOWNLOAD_DEADLINE_S`: is outside its sane range \(got 0.0\). Allowed: from 1")
def env_deadline_zero(ctx):
    ctx.monkeypatch.setenv(DEADLINE_ENV, "0")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"`environment variable COATNAS_DOWNLOAD_DEADLINE_S`: is not a number \(got 'soon'\)")
def env_deadline_not_a_number(ctx):
    ctx.monkeypatch.setenv(DEADLINE_ENV, "soon")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"`environment variable COATNAS_DOWNLOAD_MAX_MB`: must be a finite number")
def env_cap_infinite(ctx):
    ctx.monkeypatch.setenv(MAX_MB_ENV, "inf")
    return ctx.fetch(ctx.serve(cifar_archive()))


@row(r"`environment variable COATNAS_DOWNLOAD_MAX_MB`: is outside its sane range \(got -1.0\)")
def env_cap_negative(ctx):
    ctx.monkeypatch.setenv(MAX_MB_ENV, "-1")
    return ctx.fetch(ctx.serve(cifar_archive()))


# --- npz files
IMGS = np.zeros((10, 8, 8), np.uint8)
LABELS = np.arange(10) % 2


@row(r"`train.data.path` for source `npz`: the file is empty \(0 bytes\), not an .npz archive")
def npz_empty_file(ctx):
    (ctx.src / "d.npz").write_bytes(b"")
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"has arrays none, not `x` and `y`")
def npz_no_arrays(ctx):
    np.savez(ctx.src / "d.npz")
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"has arrays \['y'\], not `x` and `y`")
def npz_no_x(ctx):
    return ctx.npz(y=LABELS)


@row(r"has arrays \['x'\], not `x` and `y`")
def npz_no_y(ctx):
    return ctx.npz(x=IMGS)


@row(r"this is a single .npy array, not an .npz")
def npz_is_npy(ctx):
    np.save(ctx.src / "d.npy", IMGS)
    os.rename(ctx.src / "d.npy", ctx.src / "d.npz")
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"not a readable .npz \(File is not a zip file\)")
def npz_text_file(ctx):
    (ctx.src / "d.npz").write_text("x,y\n1,2\n")
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"not a readable .npz")
def npz_truncated(ctx):
    buf = io.BytesIO()
    np.savez(buf, x=IMGS, y=LABELS)
    (ctx.src / "d.npz").write_bytes(buf.getvalue()[:-40])
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"`x` has dtype object; pixels must be booleans, integers or floats")
def npz_object_pixels(ctx):
    np.savez(ctx.src / "d.npz", x=np.array([None] * 10, dtype=object), y=LABELS)
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"`x` has dtype <U1; pixels must be")
def npz_string_pixels(ctx):
    return ctx.npz(x=np.full((10, 8, 8), "a"), y=LABELS)


@row(r"`x` has dtype complex128")
def npz_complex_pixels(ctx):
    return ctx.npz(x=np.zeros((10, 8, 8), complex), y=LABELS)


@row(r"`x` has dtype datetime64")
def npz_date_pixels(ctx):
    return ctx.npz(x=np.zeros((10, 8, 8), "datetime64[s]"), y=LABELS)


@row(r"`x` holds no images \(shape \(0, 8, 8\)\)")
def npz_empty_arrays(ctx):
    return ctx.npz(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))


@row(r"`x` has an empty dimension \(shape \(10, 0, 8\)\)")
def npz_zero_height(ctx):
    return ctx.npz(x=np.zeros((10, 0, 8), np.uint8), y=LABELS)


@row(r"`x` has shape \(10, 64\); images need 3 or 4 dimensions")
def npz_flat_pixels(ctx):
    return ctx.npz(x=np.zeros((10, 64), np.uint8), y=LABELS)


@row(r"`x` has shape \(10, 1, 1, 8, 8\); images need 3 or 4 dimensions")
def npz_five_dimensions(ctx):
    return ctx.npz(x=np.zeros((10, 1, 1, 8, 8), np.uint8), y=LABELS)


@row(r"`x` has shape \(10, 8, 8, 4\): neither N,1\|3,H,W nor N,H,W,1\|3 channels")
def npz_four_channels(ctx):
    return ctx.npz(x=np.zeros((10, 8, 8, 4), np.uint8), y=LABELS)


@row(r"`x` has a pixel that is not a finite float32 number \(.*nan.* in image 3\)")
def npz_nan_pixel(ctx):
    x = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    x[3, 2, 1] = np.nan
    return ctx.npz(x=x, y=LABELS)


@row(r"`x` has a pixel that is not a finite float32 number \(.*inf.* in image 9\)")
def npz_infinite_pixel(ctx):
    x = np.random.default_rng(0).random((10, 8, 8))
    x[9, 0, 0] = -np.inf
    return ctx.npz(x=x, y=LABELS)


@row(r"`x` has a pixel that is not a finite float32 number \(.*1e\+300 in image 0\)")
def npz_pixel_beyond_float32(ctx):
    x = np.random.default_rng(0).random((10, 8, 8))
    x[0, 0, 0] = 1e300
    return ctx.npz(x=x, y=LABELS)


@row(r"`y` must be 10 integer labels, got shape \(10,\) dtype float64")
def npz_float_labels(ctx):
    return ctx.npz(x=IMGS, y=LABELS.astype(float))


@row(r"`y` must be 10 integer labels, got shape \(10, 1\)")
def npz_label_column(ctx):
    return ctx.npz(x=IMGS, y=LABELS[:, None])


@row(r"`x` holds 10 images but `y` 9 labels")
def npz_label_count(ctx):
    return ctx.npz(x=IMGS, y=LABELS[:9])


@row(r"`y` has a negative label \(-1\); labels are class numbers from 0")
def npz_negative_label(ctx):
    y = LABELS.copy()
    y[4] = -1
    return ctx.npz(x=IMGS, y=y)


@row(r"`y` has labels up to 100000, so the number of classes .* \(got 100001\). Allowed: from 1 to 100_000")
def npz_label_too_large(ctx):
    y = LABELS.copy()
    y[4] = 100_000
    return ctx.npz(x=IMGS, y=y)


@row(r"`y` has one class only \(label 3\); a classifier needs at least 2")
def npz_one_class(ctx):
    return ctx.npz(x=IMGS, y=np.full(10, 3))


@row(r"`x` and `y` declare .* GB .*more than this machine's .* of memory")
def npz_declares_too_much(ctx):
    ctx.monkeypatch.setattr(npz_module, "MAX_ARRAY_BYTES", 500)
    return ctx.npz(x=IMGS, y=LABELS)


@row(r"`train.data.path` for source `npz`: not a regular file")
def npz_is_fifo(ctx):
    os.mkfifo(ctx.src / "d.npz")
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"`train.data.path` for source `npz`: not a regular file")
def npz_is_folder(ctx):
    (ctx.src / "d.npz").mkdir()
    return ctx.data("npz", ctx.src / "d.npz")


@row(r"`train.data.path` for source `npz`: no such file")
def npz_missing(ctx):
    return ctx.data("npz", ctx.src / "missing.npz")


# --- image folders
@row(r"found 1 class folder\(s\) with images, need at least 2")
def folder_one_class(ctx):
    return ctx.data("imagefolder", ctx.folder(classes=1))


@row(r"found 0 class folder\(s\) with images")
def folder_empty(ctx):
    (ctx.src / "imgs" / "a").mkdir(parents=True)
    return ctx.data("imagefolder", ctx.src / "imgs")


@row(r"this image name is a FIFO, not an image file")
def folder_fifo_image(ctx):
    root = ctx.folder()
    os.mkfifo(root / "c0" / "zz.png")
    return ctx.data("imagefolder", root)


@row(r"this image name is a folder, not an image file")
def folder_folder_image(ctx):
    root = ctx.folder()
    (root / "c1" / "x.jpg").mkdir()
    return ctx.data("imagefolder", root)


@row(r"this image name is a dangling link, not an image file")
def folder_dangling_link_image(ctx):
    root = ctx.folder()
    (root / "c1" / "x.png").symlink_to(ctx.tmp / "nowhere.png")
    return ctx.data("imagefolder", root)


@row(r"this image name is a device, not an image file")
def folder_link_to_dev_zero(ctx):
    root = ctx.folder()
    (root / "c1" / "x.png").symlink_to("/dev/zero")
    return ctx.data("imagefolder", root)


@row(r"unreadable image \(cannot identify image file")
def folder_text_as_image(ctx):
    root = ctx.folder()
    (root / "c0" / "notes.jpg").write_text("not an image")
    return ctx.data("imagefolder", root)


@row(r"unreadable image \(.*(truncated|broken|Truncated)")
def folder_truncated_png(ctx):
    root = ctx.folder()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "c1" / "0.png").write_bytes(buf.getvalue()[:300])
    return ctx.data("imagefolder", root)


@row(r"`train.data.path` for source `imagefolder`: no such folder")
def folder_is_a_file(ctx):
    (ctx.src / "imgs").write_text("x")
    return ctx.data("imagefolder", ctx.src / "imgs")


# ------------------------------------------------------------------------------------------------ the test
def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under ``root`` but ``skip`` (the target folder): its type, size and content digest
    (links not followed, FIFOs not opened)."""
    out = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(folder) / name
            if p == skip or skip in p.parents:
                continue
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.md5(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size if digest else 0, digest)
    return out


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def test_enough_rows():
    assert len(ROWS) >= 50, len(ROWS)


@pytest.mark.parametrize("name", list(ROWS))
def test_hostile_row(name, tmp_path, server, monkeypatch):
    fn, pattern = ROWS[name]
    for env in (MIRROR_ENV, DEADLINE_ENV, MAX_MB_ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(download, "DEADLINE_S", 20.0)  # a row that is not about deadlines still ends
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    ctx = Ctx(tmp_path, server, monkeypatch)
    action = fn(ctx)
    before = snapshot(tmp_path, ctx.cache)
    cache_before = snapshot(ctx.cache, ctx.cache / "none") if ctx.cache.is_dir() else {}
    with pytest.raises(UserError) as err:
        action()
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert err.value.__cause__ is None, msg
    assert type(err.value) in (UserError, ConfigError)
    import re

    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    assert snapshot(tmp_path, ctx.cache) == before, "something outside the target folder changed"
    # in the target folder: what was there is unchanged, and nothing partial was left beside the lock
    after = snapshot(ctx.cache, ctx.cache / "none") if ctx.cache.exists() and not ctx.cache.is_symlink() else {}
    for entry, state in cache_before.items():
        assert after.get(entry) == state, f"{entry} changed"
    new = {e for e in after if e not in cache_before and not e.endswith(".lock")}
    assert not {e for e in new if ".part" in e or e.startswith(f".{C10.folder}.")}, new
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/abs-escaped").exists()
    assert not (tmp_path / "src" / "pwned").exists()
