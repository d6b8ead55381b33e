"""Hostile inputs to the timm side: ``nas.export.timm_model.register`` (taken and bad names, damaged
``config.json``), ``timm.create_model(..., pretrained=True)`` on damaged weights, the script runner
``python -m nas.export.timm_model`` and ``nas-export --format timm`` end to end.

Runs in ``.venv-timm`` (``make test-timm``). Every refused row asserts one paragraph (a :class:`UserError`
whose text has no line break, or exit 2 with ``PROG: error:`` and no traceback) and that nothing was
overwritten: timm's registry keeps what it had under the name, and the export's files are unchanged.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file, save
from timm.models._registry import _model_entrypoints

from nas.errors import UserError
from nas.export.model_config import checkpoint_bytes
from nas.export.timm import CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE, export_timm, timm_config
from nas.export.timm_model import CoatnasMaxxVit, main, register
from nas.model.arch import Architecture, ModelConfig
from nas.model.builder import build_model

torch.set_num_threads(1)

MC = ModelConfig(Architecture.parse("C-C-T-T L=2,1,1,2,1 D=16,24,32,64,96"), num_classes=4, image_size=32, in_chans=1)
OTHER = ModelConfig(Architecture.parse("C-C-C-C L=2,1,1,1,1 D=8,16,16,32,32"), num_classes=4, image_size=32)


def _snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("file", p.read_bytes()) if p.is_file() else "dir"
    return out


def _one_paragraph(err: BaseException | str, *fragments: str) -> str:
    text = str(err)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    flat = " ".join(text.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in: {flat}"
    return flat


def _export(tmp: Path, name: str, mc: ModelConfig = MC, weights: bool = True) -> Path:
    state = build_model(mc).state_dict() if weights else None
    return export_timm(mc, tmp / name, state=state, name=name)


def _refuse_register(folder: Path, *fragments: str, **kwargs: Any) -> str:
    """register(...) is refused with one paragraph; the registry entry of the name and the folder are unchanged."""
    name = kwargs.get("name")
    before = _model_entrypoints.get(name) if isinstance(name, str) else None
    files = _snapshot(folder) if folder.is_dir() else None
    with pytest.raises(UserError) as info:
        register(folder, **kwargs)
    if isinstance(name, str):
        assert _model_entrypoints.get(name) is before, "a refused register changed timm's registry"
    if files is not None:
        assert _snapshot(folder) == files
    return _one_paragraph(info.value, *fragments)


# --------------------------------------------------------------------------------------------- taken names
TIMM_NAMES = ["resnet50", "vit_base_patch16_224", "efficientnet_b0", "convnext_tiny", "maxvit_tiny_tf_224"]


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_register_refuses_a_name_timm_has(name, tmp_path):
    folder = _export(tmp_path, "coatnas_taken", weights=False)
    text = _refuse_register(folder, f"timm already has a model named {name!r}", "timm's own model", name=name)
    assert "replace=True" in text and "--replace" in text
    assert not isinstance(timm.create_model(name, pretrained=False, num_classes=2), CoatnasMaxxVit)


def test_register_refuses_an_exported_name_timm_has(tmp_path):
    """The name inside config.json (nas-export --name resnet50) is refused the same way."""
    folder = export_timm(MC, tmp_path / "e", name="resnet18")
    _refuse_register(folder, "timm already has a model named 'resnet18'")


def test_register_refuses_another_exports_name_and_replaces_on_request(tmp_path):
    first = _export(tmp_path, "coatnas_shared_name", weights=False)
    assert register(first) == "coatnas_shared_name"
    assert register(first) == "coatnas_shared_name"  # the same folder again: allowed
    second = export_timm(OTHER, tmp_path / "second", name="coatnas_shared_name")
    _refuse_register(second, "the coatnas export", str(first.resolve()), name="coatnas_shared_name")
    assert timm.create_model("coatnas_shared_name").stem.conv1.in_channels == 1  # still the first export
    assert register(second, replace=True) == "coatnas_shared_name"
    assert timm.create_model("coatnas_shared_name").stem.conv1.in_channels == 3


BAD_NAMES = ["ResNet", "1abc", "a.b", "a:b", "a/b", "", "a-b", "ünï", "_private", "class", "import", "a b", 123]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_register_refuses_a_bad_name(name, tmp_path):
    folder = _export(tmp_path, "coatnas_badname", weights=False)
    _refuse_register(folder, "not a usable timm model name", name=name)


# ----------------------------------------------------------------------------------- damaged config.json
def _edit(change: Callable[[dict], None]) -> Callable[[str], str]:
    def edit(text: str) -> str:
        data = copy.deepcopy(json.loads(text))
        change(data)
        return json.dumps(data)

    return edit


CONFIG_ROWS: list[tuple[str, Callable[[str], str | bytes], str]] = [
    ("torn", lambda t: t[: len(t) // 2], "not JSON"),
    ("empty", lambda t: "", "not JSON"),
    ("binary", lambda t: b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8"),
    ("nan", lambda t: t.replace('"num_classes": 4', '"num_classes": NaN', 1), "NaN"),
    ("a-list", lambda t: "[1, 2]", "not a mapping"),
    ("hf-config", lambda t: json.dumps({"architectures": ["BertModel"], "model_type": "bert"}), "unknown key(s)"),
    (
        "model-args-depth",
        _edit(lambda d: d["model_args"]["model_cfg"]["depths"].__setitem__(1, 10**6)),
        "does not match",
    ),
    ("coatnas-depth", _edit(lambda d: d["coatnas"]["architecture"]["depths"].__setitem__(1, 10**6)), "sane range"),
    ("coatnas-width", _edit(lambda d: d["coatnas"]["architecture"]["widths"].__setitem__(4, 10**7)), "sane range"),
    (
        "conv-cfg-edited",
        _edit(lambda d: d["model_args"]["model_cfg"]["conv_cfg"].__setitem__("act_layer", "relu")),
        ("conv_cfg.act_layer"),
    ),
    (
        "transformer-cfg-extra",
        _edit(lambda d: d["model_args"]["model_cfg"]["transformer_cfg"].__setitem__("x", 1)),
        ("transformer_cfg.x"),
    ),
    (
        "weights-elsewhere",
        _edit(lambda d: d["pretrained_cfg"].__setitem__("file", "/etc/passwd")),
        "pretrained_cfg.file",
    ),
    ("name-bad", _edit(lambda d: d.__setitem__("architecture", "Bad.Name")), "not a usable timm model name"),
    ("format-newer", _edit(lambda d: d.__setitem__("format", 9)), "newer coatnas"),
    ("deep", lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize("change,fragment", [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS])
def test_register_refuses_a_damaged_config_json(change, fragment, tmp_path):
    folder = _export(tmp_path, "coatnas_damaged")
    path = folder / CONFIG_FILE
    new = change(path.read_text())
    path.write_bytes(new if isinstance(new, bytes) else new.encode())
    _refuse_register(folder, str(path), fragment, "Re-export", name="coatnas_damaged_cfg")
    assert not timm.models.is_model("coatnas_damaged_cfg")


def test_register_refuses_missing_and_odd_config_json(tmp_path):
    folder = _export(tmp_path, "coatnas_odd", weights=False)
    (folder / CONFIG_FILE).unlink()
    _refuse_register(folder, "no config.json there")
    (folder / CONFIG_FILE).mkdir()
    _refuse_register(folder / CONFIG_FILE, "no config.json there")
    _refuse_register(tmp_path / "nowhere", "no config.json there")


# ------------------------------------------------------------------------------------- damaged weights
def _saved(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Pickled:
    pass


def _other_weights(folder: Path) -> bytes:
    other = export_timm(OTHER, folder.parent / "other", state=build_model(OTHER).state_dict(), name="coatnas_o")
    return (other / WEIGHTS_FILE).read_bytes()


def _safetensors(change: Callable[[dict], None]) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        state = load_file(folder / WEIGHTS_FILE)
        change(state)
        return save(state)

    return make


def _legacy(change: Callable[[dict], None]) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        state = torch.load(folder / LEGACY_WEIGHTS_FILE, weights_only=True)
        change(state)
        return _saved(state)

    return make


def _coatnas_state() -> dict:
    """coatnas's own names and shapes (a nas-train model.safetensors), not timm's."""
    return {k: v.contiguous() for k, v in build_model(MC).state_dict().items()}


def _nan(state: dict) -> None:
    state["head.fc.bias"][0] = float("nan")


def _extra(state: dict) -> None:
    state["extra.weight"] = torch.zeros(2)


# model.safetensors of today's exports (format 2)
WEIGHT_ROWS: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("empty", lambda f: b"", "is empty"),
    ("truncated", lambda f: (f / WEIGHTS_FILE).read_bytes()[:5000], "not a safetensors weights file"),
    ("header-only", lambda f: (f / WEIGHTS_FILE).read_bytes()[:8], "not a safetensors weights file"),
    ("a-torch-pickle", lambda f: _saved({"x": Pickled()}), "not a safetensors weights file"),
    ("another-network", _other_weights, "does not belong to"),
    ("nan", _safetensors(_nan), "head.fc.bias holds NaN"),
    ("extra-tensor", _safetensors(_extra), "'extra.weight'"),
    ("nas-train-weights", lambda f: save(_coatnas_state()), "does not belong to"),
]
# pytorch_model.bin of a format-1 export (still read, with torch.load(weights_only=True))
LEGACY_ROWS: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("empty", lambda f: b"", "is empty"),
    ("truncated", lambda f: (f / LEGACY_WEIGHTS_FILE).read_bytes()[:5000], "truncated, damaged or not a torch file"),
    ("pickled-object", lambda f: _saved({"x": Pickled()}), "pickled Python objects"),
    ("a-tensor", lambda f: _saved(torch.zeros(2)), "not a mapping"),
    ("nan", _legacy(_nan), "head.fc.bias holds NaN"),
    ("extra-tensor", _legacy(_extra), "'extra.weight'"),
    ("nas-train-checkpoint", lambda f: checkpoint_bytes(MC, build_model(MC).state_dict()), "not a tensor"),
]


def _as_format_1(folder: Path) -> str:
    """Turn a fresh export into what a format-1 nas-export wrote: pytorch_model.bin beside config.json."""
    state = load_file(folder / WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).unlink()
    (folder / LEGACY_WEIGHTS_FILE).write_bytes(_saved(state))
    (folder / CONFIG_FILE).write_text(json.dumps(timm_config(MC, folder.name, weights=True, fmt=1)))
    return LEGACY_WEIGHTS_FILE


ROWS = [("", *r) for r in WEIGHT_ROWS] + [("format-1", *r) for r in LEGACY_ROWS]


@pytest.mark.parametrize(
    "fmt,make,fragment", [(r[0], *r[2:]) for r in ROWS], ids=[f"{r[0]}-{r[1]}" if r[0] else r[1] for r in ROWS]
)
def test_create_model_refuses_damaged_weights(fmt, make, fragment, tmp_path):
    folder = _export(tmp_path, "coatnas_weights")
    file = _as_format_1(folder) if fmt else WEIGHTS_FILE
    data = make(folder)
    (folder / file).write_bytes(data)
    name = register(folder, "coatnas_weights_" + str(abs(hash(str(tmp_path))) % 10**8), replace=True)
    files = _snapshot(folder)
    with pytest.raises(UserError) as info:
        timm.create_model(name, pretrained=True)
    text = _one_paragraph(info.value, str(folder / file), fragment, "TRAINED_FOLDER --format timm")
    assert "weights_only=False" not in text and "weights_only` set to `False`" not in text
    assert _snapshot(folder) == files
    assert timm.create_model(name).num_classes == 4  # without weights it still builds


def test_register_refuses_missing_weights(tmp_path):
    folder = _export(tmp_path, "coatnas_noweights")
    (folder / WEIGHTS_FILE).unlink()
    _refuse_register(folder, "missing or not a regular file", "nas-export TRAINED_FOLDER --format timm")


# -------------------------------------------------------------------------------- the script runner (CLI)
def _runner(*args: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nas.export.timm_model", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def _refused_run(run: subprocess.CompletedProcess, *fragments: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("nas.export.timm_model: error: ") and "Traceback" not in run.stderr
    assert "\n\n" not in run.stderr.strip()
    flat = " ".join(run.stderr.split())
    assert all(f in flat for f in fragments), flat


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ([], "give the export folders"),
        (["FOLDER"], "give the export folders"),
        (["FOLDER", "--"], "give the export folders"),
        (["--", "script.py"], "no export folder given"),
        (["--force", "FOLDER", "--", "script.py"], "unknown option --force"),
        # the script is checked before anything is registered (runpy's own errors were tracebacks)
        (["FOLDER", "--", "no-such-script.py"], "'no-such-script.py', does not exist"),
        (["FOLDER", "--", "--", "train.py"], "'--', does not exist"),
        (["FOLDER", "--", "TMP"], "is a folder without __main__.py"),
        (["FOLDER", "--", "/dev/null"], "is not a regular file"),
    ],
    ids=[
        "nothing",
        "no-separator",
        "no-script",
        "no-folder",
        "unknown-flag",
        "script-missing",
        "script-is-a-second-separator",
        "script-is-a-folder",
        "script-is-a-device",
    ],
)
def test_runner_usage_errors(argv, fragment, tmp_path, capsys):
    folder = _export(tmp_path, f"coatnas_{tmp_path.name.lower()}", weights=False)  # a name of its own: registered
    argv = [str(folder) if a == "FOLDER" else str(tmp_path) if a == "TMP" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _refused_run(subprocess.CompletedProcess([], 2, "", err), fragment)


def test_runner_refuses_a_taken_name_and_replaces_with_the_flag(tmp_path):
    """--replace is the runner's replace=True: timm's own resnet18 becomes the export, in that process only."""
    folder = export_timm(MC, tmp_path / "e", state=build_model(MC).state_dict(), name="resnet18")
    script = tmp_path / "script.py"
    script.write_text("import timm\nm = timm.create_model('resnet18', pretrained=True)\nprint(type(m).__name__)\n")
    files = _snapshot(folder)
    _refused_run(_runner(folder, "--", script), "timm already has a model named 'resnet18'", "--replace")
    run = _runner("--replace", folder, "--", script)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["CoatnasMaxxVit"]
    assert _snapshot(folder) == files


def test_runner_refuses_a_damaged_export(tmp_path):
    folder = _export(tmp_path, "coatnas_runner_bad", weights=False)
    (folder / CONFIG_FILE).write_text('{"architecture": "x"')
    _refused_run(_runner(folder, "--", tmp_path / "never.py"), str(folder / CONFIG_FILE), "not JSON")


# ------------------------------------------------------------------------- nas-export --format timm, end to end
def _nas_export(*args: Any) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "nas-export"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_nas_export_refusals_in_the_timm_install(tmp_path):
    """The refusals of tests/test_bad_input_export.py hold in the timm install too, and the good export of a
    checkpoint from before format versions registers and loads its weights."""
    big = tmp_path / "big.yaml"
    big.write_text(
        "architecture: {layout: C-C-T-T, depths: [2, 1000000, 1, 1, 1], widths: [16, 24, 32, 64, 96]}\n"
        "image_size: 32\nnum_classes: 4\n"
    )
    run = _nas_export(big, "--format", "timm", "--out", tmp_path / "o")
    assert run.returncode == 2 and "architecture.depths[1]" in " ".join(run.stderr.split()), run.stderr
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(_saved({"model_config": Pickled()}))
    run = _nas_export(pickled, "--format", "timm", "--out", tmp_path / "o")
    assert run.returncode == 2 and "pickled Python objects" in " ".join(run.stderr.split()), run.stderr
    assert "weights_only" not in run.stderr and not (tmp_path / "o").exists()
    old = tmp_path / "old.pt"
    model = build_model(MC)
    old.write_bytes(_saved({"state_dict": model.state_dict(), "model_config": MC.to_dict()}))  # no format key
    run = _nas_export(old, "--format", "timm", "--name", "coatnas_e2e_old", "--out", tmp_path / "new")
    assert run.returncode == 0, run.stderr
    theirs = timm.create_model(register(tmp_path / "new"), pretrained=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), theirs.eval()(x), atol=1e-5)
