"""``download: true`` against a real HTTP server on 127.0.0.1 serving small archives of the CIFAR format."""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

from nas.errors import ConfigError, UserError, parse_dataclass
from trainers.data.config import DataConfig
from trainers.data.download import ARCHIVES, MIRROR_ENV
from trainers.data.loading import load_dataset
from trainers.data.sources import resolve_source


def cifar_archive(name: str = "cifar10", n: int = 60, extra: dict[str, tarfile.TarInfo] | None = None) -> bytes:
    """A .tar.gz laid out like the official one: ``n`` random 32x32 images per pickle."""
    arc = ARCHIVES[name]
    rng = np.random.default_rng(1)
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    classes = 10 if name == "cifar10" else 100
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member in arc.members:
            body = pickle.dumps(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [i % classes for i in range(n)]},
                protocol=2,
            )
            info = tarfile.TarInfo(f"{arc.folder}/{member}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for info in (extra or {}).values():
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


class Server:
    """A real ``http.server`` on 127.0.0.1 in a thread; ``files[path] = bytes``; ``cut[path] = n`` sends
    the full Content-Length but closes the connection after ``n`` bytes. ``hits`` counts requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.hits += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: outer.cut.get(self.path, len(body))])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_download_verifies_caches_and_reuses_without_server(server, tmp_path, capsys):
    body = cifar_archive()
    server.files["/c10.tar.gz"] = body
    cfg = DataConfig(
        name="cifar10", download=True, path=str(tmp_path / "cache"), url=server.url("/c10.tar.gz"), md5=md5(body)
    )
    d = load_dataset(cfg, 16, 3)
    assert len(d.y_train) + len(d.y_val) == 300 and d.num_classes == 10 and d.x_train.shape[1:] == (3, 16, 16)
    assert server.hits == 1
    assert leftovers(tmp_path / "cache") == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").read_bytes() == body
    assert "MD5 verified" in capsys.readouterr().err
    # the same images as the extracted pickles read without download
    plain = load_dataset(DataConfig(name="cifar10", path=str(tmp_path / "cache")), 16, 3)
    assert torch.equal(plain.x_train.raw, d.x_train.raw)
    # a second load (a fresh process's cache: another seed) uses the files, the server is gone
    server.stop()
    again = load_dataset(
        DataConfig(name="cifar10", download=True, path=str(tmp_path / "cache"), url=cfg.url, md5=cfg.md5, seed=5), 16, 3
    )
    assert len(again.y_train) + len(again.y_val) == 300
    # the driver resolves the source to the extracted folder: workers read it, a new node downloads into its parent
    resolved = resolve_source(cfg, None)
    assert resolved.path == str(tmp_path / "cache" / "cifar-10-batches-py") and resolved.download


def test_cached_archive_is_unpacked_without_server(server, tmp_path):
    body = cifar_archive("cifar100", n=200)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cifar-100-python.tar.gz").write_bytes(body)
    cfg = DataConfig(
        name="cifar100", download=True, path=str(tmp_path / "cache"), url=server.url("/none"), md5=md5(body)
    )
    d = load_dataset(cfg, 8, 1)
    assert d.num_classes == 100 and len(d.y_train) + len(d.y_val) == 200 and server.hits == 0


def test_checksum_mismatch_is_refused_and_nothing_kept(server, tmp_path):
    server.files["/c10.tar.gz"] = cifar_archive()
    cache = tmp_path / "cache"
    cfg = DataConfig(name="cifar10", download=True, path=str(cache), url=server.url("/c10.tar.gz"))  # official md5
    with pytest.raises(UserError) as err:
        load_dataset(cfg, 16, 3)
    msg = str(err.value)
    assert server.url("/c10.tar.gz") in msg and "not the expected c58f30108f718f92721af3b95e74349a" in msg
    assert str(cache / "cifar-10-python.tar.gz") in msg and "\n" not in msg and "mirror" in msg
    assert leftovers(cache) == []


def test_interrupted_download_leaves_no_usable_file(server, tmp_path):
    body = cifar_archive()
    server.files["/c10.tar.gz"] = body
    server.cut["/c10.tar.gz"] = len(body) // 2
    cache = tmp_path / "cache"
    cfg = DataConfig(name="cifar10", download=True, path=str(cache), url=server.url("/c10.tar.gz"), md5=md5(body))
    with pytest.raises(UserError, match=rf"stopped after {len(body) // 2:,} of {len(body):,} bytes.*nothing was kept"):
        load_dataset(cfg, 16, 3)
    assert leftovers(cache) == []
    del server.cut["/c10.tar.gz"]  # the retry the message suggests works
    assert load_dataset(cfg, 16, 3).num_classes == 10 and server.hits == 2


def test_unreachable_server_and_404_name_the_url(server, tmp_path):
    cfg = DataConfig(name="cifar10", download=True, path=str(tmp_path / "c"), url=server.url("/missing.tar.gz"))
    with pytest.raises(UserError, match=r"missing.tar.gz.*failed after 0 bytes \(HTTP 404 Not Found\)"):
        load_dataset(cfg, 16, 3)
    assert leftovers(tmp_path / "c") == []


def test_mirror_environment_variable(server, tmp_path, monkeypatch):
    body = cifar_archive()
    server.files["/mirror/cifar-10-python.tar.gz"] = body
    monkeypatch.setenv(MIRROR_ENV, server.url("/mirror/"))
    d = load_dataset(DataConfig(name="cifar10", download=True, path=str(tmp_path / "c"), md5=md5(body)), 8, 3)
    assert d.num_classes == 10 and server.hits == 1


def test_default_cache_folder(server, tmp_path, monkeypatch):
    body = cifar_archive()
    server.files["/a.tar.gz"] = body
    monkeypatch.setenv("COATNAS_CACHE", str(tmp_path / "cc"))
    cfg = resolve_source(DataConfig(name="cifar10", download=True, url=server.url("/a.tar.gz"), md5=md5(body)))
    assert cfg.path == str(tmp_path / "cc" / "cifar-10-batches-py")
    monkeypatch.delenv("COATNAS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = resolve_source(DataConfig(name="cifar10", download=True, url=server.url("/a.tar.gz"), md5=md5(body)))
    assert cfg.path == str(tmp_path / "home" / ".cache" / "coatnas" / "cifar-10-batches-py") and server.hits == 2


def test_archive_members_cannot_escape_or_be_links(server, tmp_path):
    evil = tarfile.TarInfo("../../escaped")
    evil.size = 3
    body = cifar_archive(extra={"evil": evil})
    server.files["/evil.tar.gz"] = body
    cache = tmp_path / "deep" / "cache"
    d = load_dataset(
        DataConfig(name="cifar10", download=True, path=str(cache), url=server.url("/evil.tar.gz"), md5=md5(body)), 8, 3
    )
    assert d.num_classes == 10 and not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    # a pickle that is a symbolic link (to any file of the machine) is refused
    link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(link)
    server.files["/link.tar.gz"] = buf.getvalue()
    with pytest.raises(UserError, match=r"data_batch_1` is not a regular file.*Delete it"):
        load_dataset(
            DataConfig(
                name="cifar10",
                download=True,
                path=str(tmp_path / "c2"),
                url=server.url("/link.tar.gz"),
                md5=md5(buf.getvalue()),
            ),
            8,
            3,
        )
    assert not (tmp_path / "c2" / "cifar-10-batches-py").exists()


def test_download_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"s.yaml: `train.data.download`: is not available for the `npz` source"):
        resolve_source(DataConfig(name="npz", download=True, path="x.npz"), "s.yaml")
    with pytest.raises(ConfigError, match=r"`train.data.md5`.*32 hexadecimal digits"):
        parse_dataclass(DataConfig, {"md5": "abc"}, "s.yaml", "train.data")
    with pytest.raises(ConfigError, match=r"`train.data.url`.*http://, https:// or file://"):
        parse_dataclass(DataConfig, {"url": "ftp://x/y"}, "s.yaml", "train.data")


def test_nas_search_downloads_on_the_driver_and_refuses_a_bad_archive(server, tmp_path):
    """The real command: `--dry-run` resolves (downloads) the source before any worker; a bad checksum is one
    paragraph, exit 2, no traceback, nothing kept."""
    import subprocess
    import sys
    from pathlib import Path

    body = cifar_archive()
    server.files["/c.tar.gz"] = body
    space = (
        "space:\n  input: {image_size: 32, channels: 3}\n  stem: {width: 8}\n  stages:\n"
        + "".join(f"    S{i}: {{block: [C], depth: 1, width: 16}}\n" for i in range(1, 5))
        + f"train:\n  data: {{name: cifar10, download: true, path: cache, url: '{server.url('/c.tar.gz')}',"
        f" md5: 'MD5'}}\n"
    )
    nas_search = str(Path(sys.executable).parent / "nas-search")
    (tmp_path / "bad.yaml").write_text(space.replace("MD5", "0" * 32))
    proc = subprocess.run(
        [nas_search, "--space", "bad.yaml", "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not the expected 00000000000000000000000000000000" in " ".join(proc.stderr.split())
    assert leftovers(tmp_path / "cache") == []
    (tmp_path / "ok.yaml").write_text(space.replace("MD5", md5(body)))
    proc = subprocess.run(
        [nas_search, "--space", "ok.yaml", "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cache" / "cifar-10-batches-py" / "data_batch_5").is_file() and server.hits == 2


def test_new_keys_leave_recorded_protocols_unchanged():
    """A run's protocol (experiment.json) recorded before these keys existed reads them as missing (None):
    their defaults must be None too, or every older run would refuse to resume."""
    import dataclasses

    d = dataclasses.asdict(DataConfig())
    assert (d["download"], d["url"], d["md5"]) == (None, None, None)
    with pytest.raises(ConfigError, match=r"`train.data.download`: has the wrong type.*true or false or null"):
        parse_dataclass(DataConfig, {"download": "yes"}, "s.yaml", "train.data")
