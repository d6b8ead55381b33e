"""Errors that name the fix (issue 21): a search YAML given to nas-train, and CIFAR data that is not there,
say what the file is and what to run instead. In process through each command's ``main``, without Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nas.cli import fidelity as fidelity_cli
from nas.cli import search as search_cli
from nas.cli import train as train_cli

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_SPACE  # noqa: E402

SPACE = TINY_SPACE.replace("MAX_PARAMS", "null").replace("SAMPLER", "random").replace("EPOCHS", "1")
NOWHERE = "127.0.0.1:1"  # a Ray address nobody answers: a study wrongly accepted fails fast, never trains


def refused(capsys, module, argv: list, prog: str) -> str:
    """Run ``module.main(argv)``; assert exit status 2 with one paragraph on stderr; return it unwrapped."""
    try:
        rc = module.main([str(a) for a in argv])
    except SystemExit as stop:
        rc = stop.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.startswith(f"{prog}: error: ") and "Traceback" not in err, err
    assert "\n\n" not in err.strip(), err
    return " ".join(err.split())


# ------------------------------------------------------------------------------ nas-train given a search YAML
def test_train_given_a_search_yaml_names_search_then_export(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(SPACE)
    msg = refused(capsys, train_cli, ["my.yaml", "--out", tmp_path / "o"], "nas-train")
    assert "unknown key" not in msg
    assert "my.yaml is a search YAML" in msg
    assert "`nas-search --space my.yaml`" in msg
    assert "runs/my/best.yaml" in msg  # what the search writes
    assert "`nas-export runs/my --rank K --out model.yaml`" in msg
    assert "--protocol my.yaml" in msg  # the way to use its train: section
    assert "coatnet-0" in msg  # a preset works too
    assert not (tmp_path / "o").exists()


def test_train_given_a_searched_yaml_points_at_its_best_yaml(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(SPACE)
    (tmp_path / "runs" / "my").mkdir(parents=True)
    (tmp_path / "runs" / "my" / "best.yaml").write_text("architecture: {}\n")
    msg = refused(capsys, train_cli, ["my.yaml"], "nas-train")
    assert "runs/my/best.yaml exists, so `nas-train runs/my/best.yaml` trains that one" in msg


def test_train_given_a_bundled_space_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no coatnet.yaml here: the bundled one is meant
    msg = refused(capsys, train_cli, ["coatnet.yaml"], "nas-train")
    assert "coatnet.yaml is a bundled search YAML" in msg
    assert "`nas-search --space coatnet.yaml`" in msg and "runs/coatnet/best.yaml" in msg
    assert "no such model config file" not in msg


def test_train_given_a_study_yaml_names_nas_fidelity(capsys, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("study: {space: space.yaml, architectures: 4}\nproxies: {}\nreference: {}\n")
    msg = refused(capsys, train_cli, [study], "nas-train")
    assert f"`nas-fidelity {study}`" in msg and "nas-export" in msg


def test_train_given_another_yaml_keeps_the_model_config_error(capsys, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("architektur: 1\n")
    msg = refused(capsys, train_cli, [other], "nas-train")
    assert "architektur" in msg and "search YAML" not in msg


# ------------------------------------------------------------------------------ CIFAR data that is not there
PREPARE = "python scripts/prepare_cifar.py"
DOWNLOAD = "`train.data: {name: cifar10, download: true}`"


def _cifar_npz_space(tmp_path: Path, path: str = "data/cifar10-train.npz") -> Path:
    space = tmp_path / "cifar.yaml"
    space.write_text(SPACE.replace("{name: synthetic,", f"{{name: npz, path: {path},"))
    return space


def test_search_with_a_missing_cifar_npz_names_prepare_and_download(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = _cifar_npz_space(tmp_path)
    msg = refused(capsys, search_cli, ["--space", space, "--dry-run"], "nas-search")
    assert "`train.data.path` for source `npz`: no such file" in msg
    assert PREPARE in msg and "data/cifar10-train.npz and data/cifar10-test.npz" in msg
    assert DOWNLOAD in msg and str(space) in msg
    assert "was looked up in the current folder and next to the YAML" in msg  # why the path shown is not as given


def test_fidelity_with_a_missing_cifar_npz_names_prepare_and_download(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _cifar_npz_space(tmp_path)
    study = tmp_path / "study.yaml"
    study.write_text(
        "study: {space: cifar.yaml, architectures: 4, zero_cost: [params]}\n"
        "proxies: {p1: {train: {steps: 2}}}\nreference: {seeds: [0], train: {steps: 4}}\n"
    )
    argv = [study, "--study-dir", tmp_path / "run", "--address", NOWHERE]
    msg = refused(capsys, fidelity_cli, argv, "nas-fidelity")
    assert "no such file" in msg and PREPARE in msg and DOWNLOAD in msg
    assert not (tmp_path / "run").exists()


def test_fidelity_proxy_data_names_the_proxy_key_to_set(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE)
    study = tmp_path / "study.yaml"
    study.write_text(
        "study: {space: space.yaml, architectures: 4, zero_cost: [params]}\n"
        "proxies: {p1: {train: {data: {name: npz, path: /nonexistent/cifar10-train.npz}}}}\n"
        "reference: {seeds: [0], train: {steps: 4}}\n"
    )
    msg = refused(capsys, fidelity_cli, [study, "--study-dir", tmp_path / "run", "--address", NOWHERE], "nas-fidelity")
    assert PREPARE in msg
    assert "`proxies.p1.train.data: {name: cifar10, download: true}`" in msg


def test_train_with_a_missing_cifar_folder_names_the_download_option(capsys, tmp_path):
    argv = ["coatnet-0", "--data", "cifar10", "--data-path", tmp_path / "cifar", "--out", tmp_path / "o"]
    msg = refused(capsys, train_cli, argv, "nas-train")
    assert "no such folder" in msg
    assert "--protocol YAML whose `train.data` is `{name: cifar10, download: true}`" in msg
    assert PREPARE not in msg  # that script makes npz files, not the pickles this source reads


@pytest.mark.parametrize("path", ["missing.npz", "data/faces-train.npz"])
def test_a_missing_npz_that_is_not_cifar_gets_no_cifar_advice(capsys, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    space = _cifar_npz_space(tmp_path, path)
    msg = refused(capsys, search_cli, ["--space", space, "--dry-run"], "nas-search")
    assert "no such file" in msg and "prepare_cifar" not in msg and "download" not in msg
