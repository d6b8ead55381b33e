"""Hostile inputs to ``nas-export`` (mostly ``--format timm``) and to the readers of a model config, a
checkpoint and a timm export's ``config.json``, in the default install (no timm; the rows that need timm are
``tests_timm/test_bad_input_timm.py``).

Every refused row asserts ONE paragraph (exit 2, ``nas-export: error: ``, no traceback, no blank line), the
fragment that says what is wrong, and that nothing under the test's folder changed: no file written,
replaced or removed, no link followed. Rows: model YAMLs (out-of-range sizes, wrong types, foreign and
damaged files, format versions, YAML bombs), a short model YAML truncated at each byte, checkpoints
(truncated, pickled objects, foreign, inconsistent, NaN), flags, outputs (links, run files, devices) and
``config.json`` (truncated at each byte, edited). The files written by the code before format versions
(no ``format`` key) are read by a tested migration.
"""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nas.cli.export import main as export_cli
from nas.errors import UserError
from nas.export.model_config import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    checkpoint_bytes,
    load_model_config,
    model_config_document,
    read_checkpoint,
    save_model_config,
)
from nas.export.timm import CONFIG_FILE, TIMM_FORMAT, WEIGHTS_FILE, export_timm, read_timm_export
from nas.model.arch import Architecture, ModelConfig
from nas.model.builder import build_model

torch.set_num_threads(1)

ARCH = "C-C-T-T L=2,1,1,2,1 D=16,24,32,64,96"
MC = ModelConfig(arch=Architecture.parse(ARCH), num_classes=4, image_size=32, in_chans=1)


def _doc() -> dict[str, Any]:
    return model_config_document(MC)


def _snapshot(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: a link's target, a file's bytes, a folder's presence."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
            else:
                out[rel] = ("special",)
    return out


def _cli(argv: list[Any], capsys) -> tuple[int, str, str]:
    try:
        rc = export_cli([str(a) for a in argv])
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(argv: list[Any], capsys, root: Path, *fragments: str) -> str:
    """Run nas-export; assert one paragraph holding each fragment and that nothing under ``root`` changed."""
    before = _snapshot(root)
    rc, out, err = _cli(argv, capsys)
    text = " ".join(err.split())
    assert rc == 2, (rc, out, err)
    assert err.startswith("nas-export: error: ") and "Traceback" not in err and "\n\n" not in err.strip(), err
    assert "weights_only=False" not in text and "weights_only` set to `False`" not in text, err
    for fragment in fragments:
        assert " ".join(fragment.split()) in text, f"{fragment!r} not in: {text}"
    assert _snapshot(root) == before, "a refused export changed files"
    return text


def _yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict], dict]:
    """A change of the model config document: ``path`` is dotted, with ``[i]`` for list items."""

    def change(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        *parents, last = path.replace("[", ".[").split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return doc

    return change


_DELETE = object()

# ------------------------------------------------------------------------------------------ model YAMLs
# (id, the model config text or a change of a valid document, fragments of the refusal)
VIT = {
    "format": 1,
    "architecture": {"layout": "ViT_REL", "depths": [1, 1, 1, 1, 1], "widths": [32] * 5, "patch_size": 10**6},
    "image_size": 32,
    "num_classes": 4,
}
BOMB = "".join(
    f"  {c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
    for p, c in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh")
)
MODEL_ROWS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("depth-million", _set("architecture.depths[1]", 10**6), ("architecture.depths[1]", "sane range", "64")),
    ("depth-65", _set("architecture.depths[3]", 65), ("architecture.depths[3]", "from 1 to 64")),
    ("stem-depth-huge", _set("architecture.depths[0]", 10**9), ("architecture.depths[0]", "sane range")),
    ("width-huge", _set("architecture.widths[4]", 10**7), ("architecture.widths[4]", "from 1 to 8192")),
    ("image-huge", _set("image_size", 10**6), ("`image_size`", "from 8 to 1024")),
    ("image-tiny", _set("image_size", 4), ("`image_size`", ">= 8")),
    ("classes-zero", _set("num_classes", 0), ("`num_classes`", ">= 1")),
    ("classes-huge", _set("num_classes", 10**9), ("`num_classes`", "from 1 to 100_000")),
    ("in-chans-huge", _set("in_chans", 1000), ("`in_chans`", "from 1 to 64")),
    ("patch-huge", _yaml(VIT), ("architecture.patch_size", "from 1 to 1024")),
    ("depth-negative", _set("architecture.depths[2]", -1), ("architecture.depths", "5 positive integers")),
    ("depth-float", _set("architecture.depths[2]", 2.5), ("architecture.depths", "5 positive integers")),
    ("depth-text", _set("architecture.depths[2]", "2"), ("architecture.depths", "5 positive integers")),
    ("depth-bool", _set("architecture.depths[2]", True), ("architecture.depths", "5 positive integers")),
    ("depths-four", _set("architecture.depths", [2, 1, 1, 1]), ("architecture.depths", "5 positive integers")),
    ("widths-mapping", _set("architecture.widths", {"a": 1}), ("architecture.widths", "5 positive integers")),
    ("layout-unknown-letter", _set("architecture.layout", "C-C-Z-T"), ("architecture.layout",)),
    ("layout-three-stages", _set("architecture.layout", "C-C-T"), ("architecture.layout",)),
    ("options-unknown", _set("architecture.options.warp", 1), ("architecture.options.warp", "unknown key")),
    ("expansion-100", _set("architecture.options.mbconv_expansion", 100), ("mbconv_expansion", "1..8")),
    ("head-dim-0", _set("architecture.options.head_dim", 0), ("head_dim", ">= 8")),
    ("rel-attn-bad", _set("architecture.options.rel_attn", "sideways"), ("rel_attn", "'pre'")),
    ("stem-stride-3", _set("architecture.stem_stride", 3), ("stem_stride", "1, 2")),
    ("top-level-unknown", _set("weights", "x.pt"), ("`weights`: unknown key",)),
    ("missing-architecture", _set("architecture", _DELETE), ("`architecture`: is missing",)),
    ("missing-image-size", _set("image_size", _DELETE), ("`image_size`", "integer >= 8")),
    ("format-newer", _set("format", 99), ("`format`", "newer coatnas", "0 to 2")),
    ("format-text", _set("format", "1"), ("`format`", "format version")),
    ("format-negative", _set("format", -1), ("`format`", "format version")),
    ("format-bool", _set("format", True), ("`format`", "format version")),
    ("provenance-list", _set("provenance", [1, 2]), ("`provenance`", "mapping")),
    ("provenance-nan", _set("provenance", {"score": float("nan")}), ("`provenance.score`", "NaN")),
    ("provenance-binary", _set("provenance", {"blob": b"\x00\x01"}), ("`provenance.blob`", "not plain data")),
    ("provenance-bomb", _yaml(_doc()).replace("provenance: {}\n", "provenance:\n" + BOMB), ("more than 10,000",)),
    ("empty-file", "", ("`<top level>`", "must be a mapping")),
    ("a-string", "just words\n", ("`<top level>`", "must be a mapping")),
    ("a-list", "- 1\n- 2\n", ("`<top level>`", "must be a mapping")),
    ("unclosed-brace", "architecture: {layout: C-C-T-T\n", ("not valid YAML",)),
    ("tab-indent", "architecture:\n\tlayout: C-C-T-T\n", ("not valid YAML", "tab")),
    ("duplicate-key", _yaml(_doc()) + "image_size: 64\n", ("appears twice",)),
    ("not-utf8", b"image_size: \xff\xfe\n", ("not UTF-8",)),
    ("binary-png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("not UTF-8", "binary")),
    ("deep-nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", ("nested too deeply",)),
    (
        "search-space-yaml",
        "space:\n  input: {image_size: 32}\nsearch: {trials: 2}\n",
        ("is a search YAML", "nas-search --space", "nas-train runs/model/best.yaml", "nas-export runs/model-trained"),
    ),
    ("json-config-as-yaml", json.dumps({"architecture": "resnet50", "num_classes": 10}), ("architecture",)),
]


@pytest.mark.parametrize("content,fragments", [r[1:] for r in MODEL_ROWS], ids=[r[0] for r in MODEL_ROWS])
def test_model_yaml_refused(content, fragments, tmp_path, capsys):
    src = tmp_path / "model.yaml"
    if callable(content):
        content = _yaml(content(_doc()))
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    _refused([src, "--format", "timm", "--out", tmp_path / "out"], capsys, tmp_path, str(src), *fragments)


def test_model_yaml_too_large(tmp_path, capsys):
    src = tmp_path / "model.yaml"
    src.write_text(_yaml(_doc()) + "#" * (17 * 2**20) + "\n")
    _refused([src, "--format", "timm", "--out", tmp_path / "out"], capsys, tmp_path, "larger than 16 MiB")


# the same refusals from nas-train (its CONFIG), before any data is loaded
TRAIN_ROWS = [r for r in MODEL_ROWS if r[0] in ("depth-million", "width-huge", "format-newer", "provenance-bomb")]


@pytest.mark.parametrize("content,fragments", [r[1:] for r in TRAIN_ROWS], ids=[r[0] for r in TRAIN_ROWS])
def test_nas_train_refuses_the_same_model_yaml(content, fragments, tmp_path, capsys):
    from nas.cli.train import main as train_cli

    src = tmp_path / "model.yaml"
    src.write_text(_yaml(content(_doc())) if callable(content) else content)
    before = _snapshot(tmp_path)
    rc = train_cli([str(src), "--data", "synthetic", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    text = " ".join(err.split())
    assert rc == 2 and err.startswith("nas-train: error: ") and "Traceback" not in err and "\n\n" not in err.strip()
    assert all(" ".join(f.split()) in text for f in fragments), text
    assert _snapshot(tmp_path) == before


# the protocol file and the flags of nas-train, refused before any data is loaded or anything trained
NAS_TRAIN_ROWS: list[tuple[str, Callable[[Path], list[str]], tuple[str, ...]]] = [
    ("protocol-fifo", lambda t: ["--protocol", _fifo_at(t / "p.yaml")], ("--protocol", "not a regular file")),
    ("protocol-folder", lambda t: ["--protocol", str(t)], ("--protocol", "a folder")),
    (
        "protocol-is-a-study-yaml",
        lambda t: ["--protocol", _write(t / "p.yaml", "study: {space: x.yaml}\nproxies: {}\n")],
        ("`study`: unknown key", "Allowed: train, space, objective, search"),
    ),
    (
        "protocol-key-typo",
        lambda t: ["--protocol", _write(t / "p.yaml", "train: {steps: 1}\ntrian: {steps: 2}\n")],
        ("`trian`: unknown key", "Did you mean `train`?"),
    ),
    (
        "protocol-without-train",
        lambda t: ["--protocol", _write(t / "p.yaml", "objective: {mode: single}\n")],
        ("has no `train:` section", "leave out --protocol"),
    ),
    (
        "data-path-for-synthetic",
        lambda t: ["--data", "synthetic", "--data-path", str(t / "mine.npz")],
        ("--data-path", "no effect with the `synthetic` data source"),
    ),
    (
        "data-path-for-digits",
        lambda t: ["--data-path", str(t / "imgs")],
        ("--data-path", "no effect with the `digits` data source"),
    ),
]


def _fifo_at(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("make,fragments", [r[1:] for r in NAS_TRAIN_ROWS], ids=[r[0] for r in NAS_TRAIN_ROWS])
def test_nas_train_refuses_a_bad_protocol_or_flag(make, fragments, tmp_path, capsys):
    """Before, a study YAML (or a typo'd key) given as --protocol trained with the defaults without a word,
    --data-path was ignored by a source that reads no files, and a FIFO was "no such file"."""
    from nas.cli.train import main as train_cli

    src = save_model_config(MC, tmp_path / "model.yaml")
    flags = make(tmp_path)
    before = _snapshot(tmp_path)
    rc = train_cli([str(src), *map(str, flags), "--steps", "1", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    text = " ".join(err.split())
    assert rc == 2 and err.startswith("nas-train: error: ") and "Traceback" not in err and "\n\n" not in err.strip()
    assert all(" ".join(f.split()) in text for f in fragments), text
    assert _snapshot(tmp_path) == before


def test_every_nas_train_flag_has_help_text():
    from nas.cli.train import build_parser

    for action in build_parser()._actions:
        assert action.help and len(action.help) > 10, action.dest


# ------------------------------------------------------------------------- a model YAML cut at each byte
# flow style, single-digit values and in_chans at its default: no prefix is a valid config of another network
SHORT = (
    "format: 1\narchitecture: {layout: C-C-T-T, depths: [2, 1, 1, 2, 1], widths: [16, 24, 32, 64, 96]}\n"
    "image_size: 32\nnum_classes: 4\nin_chans: 3\nprovenance: {}\n"
)


@pytest.mark.parametrize("cut", range(len(SHORT)))
def test_model_yaml_truncated_at_each_byte(cut, tmp_path, capsys):
    """Every prefix is refused with one paragraph, or (a cut inside the last line's trailing ``{}`` or
    newline) read as the very same network: never another one."""
    src = tmp_path / "model.yaml"
    src.write_text(SHORT[:cut])
    before = _snapshot(tmp_path)
    rc, out, err = _cli([src, "--format", "timm", "--out", tmp_path / "out"], capsys)
    if rc == 0:
        written = read_timm_export(tmp_path / "out").model_config
        assert written == load_model_config(_write(tmp_path / "full.yaml", SHORT)), cut
        return
    assert rc == 2 and err.startswith("nas-export: error: ") and "Traceback" not in err and "\n\n" not in err.strip()
    assert str(src) in " ".join(err.split())
    assert _snapshot(tmp_path) == before


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ checkpoints
def _state(mc: ModelConfig = MC, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(mc).state_dict()


def _saved(obj: Any, **kw: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


class Pickled:
    """Any class: torch.load(weights_only=True) refuses to unpickle it."""


def _ckpt(**changes: Any) -> bytes:
    raw = {"format": CHECKPOINT_FORMAT, "model_config": MC.to_dict(), "state_dict": _state()}
    for key, value in changes.items():
        if value is _DELETE:
            del raw[key]
        else:
            raw[key] = value
    return _saved(raw)


def _nan_state() -> dict[str, torch.Tensor]:
    state = _state()
    state["head.fc.weight"][0, 0] = float("nan")
    return state


def _odd_state(kind: str) -> dict[str, torch.Tensor]:
    state = _state()
    w = state["head.fc.weight"]
    state["head.fc.weight"] = {
        "sparse": lambda: w.to_sparse(),
        "meta": lambda: torch.empty(w.shape, device="meta"),
        "complex": lambda: w.to(torch.complex64),
    }[kind]()
    return state


def _foreign_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    return buf.getvalue()


OTHER = ModelConfig(Architecture.parse("C-C-T-T L=2,1,1,2,2 D=16,24,32,64,96"), 4, 32, 1)
BIG = {**MC.to_dict(), "architecture": {**MC.arch.to_dict(), "widths": [16, 24, 32, 64, 8000]}}
CHECKPOINT_ROWS: list[tuple[str, Callable[[], bytes], tuple[str, ...]]] = [
    ("empty", lambda: b"", ("is empty",)),
    ("one-byte", lambda: b"P", ("damaged, truncated or not a torch file",)),
    ("random-bytes", lambda: bytes(range(256)) * 4, ("not a torch file",)),
    ("text", lambda: b"architecture: x\n", ("not a torch file",)),
    ("foreign-zip", _foreign_zip, ("truncated, damaged or not a torch file",)),
    ("pickled-object", lambda: _saved({"model_config": Pickled()}), ("pickled Python objects", "Pickled")),
    ("pickled-function", lambda: _saved({"state_dict": os.system}), ("pickled Python objects",)),
    ("legacy-pickled-object", lambda: _saved(Pickled(), _use_new_zipfile_serialization=False), ("pickled Python",)),
    ("a-tensor", lambda: _saved(torch.zeros(3)), ("it holds Tensor, not a mapping",)),
    ("a-list", lambda: _saved([1, 2]), ("it holds list, not a mapping",)),
    ("bare-state-dict", lambda: _saved(_state()), ("unknown key(s)",)),
    ("timm-style-checkpoint", lambda: _saved({"state_dict": _state(), "epoch": 3}), ("unknown key(s) epoch",)),
    ("no-model-config", lambda: _ckpt(model_config=_DELETE), ("model_config are missing",)),
    ("no-state-dict", lambda: _ckpt(state_dict=_DELETE), ("state_dict are missing",)),
    ("empty-state-dict", lambda: _ckpt(state_dict={}), ("non-empty mapping",)),
    ("state-dict-list", lambda: _ckpt(state_dict=[1]), ("non-empty mapping",)),
    ("state-entry-not-tensor", lambda: _ckpt(state_dict={**_state(), "x": 3}), ("entry 'x' is int",)),
    ("nan-weights", lambda: _ckpt(state_dict=_nan_state()), ("head.fc.weight holds NaN",)),
    ("format-newer", lambda: _ckpt(format=7), ("`format`", "newer coatnas")),
    ("format-text", lambda: _ckpt(format="1"), ("`format`", "format version")),
    (
        "config-depth-million",
        lambda: _ckpt(model_config=_set("architecture.depths[1]", 10**6)(MC.to_dict())),
        (
            "(its model_config)",
            "architecture.depths[1]",
            "sane range",
        ),
    ),
    ("config-not-mapping", lambda: _ckpt(model_config="C-C-T-T"), ("(its model_config)", "must be a mapping")),
    ("config-unknown-key", lambda: _ckpt(model_config={**MC.to_dict(), "x": 1}), ("`x`: unknown key",)),
    ("config-larger-than-weights", lambda: _ckpt(model_config=BIG), ("parameters but the file holds only",)),
    ("weights-of-another-network", lambda: _ckpt(state_dict=_state(OTHER)), ("do not fit its own model config",)),
    ("vit-checkpoint", lambda: _ckpt(model_config=VIT | {"format": 0}), ("sane range",)),
    # tensors that are no weights: checked before their values are read (torch's own errors were tracebacks,
    # and a complex weight was copied into a real one, dropping its imaginary part without a word)
    ("sparse-tensor", lambda: _ckpt(state_dict=_odd_state("sparse")), ("head.fc.weight is a sparse_coo tensor",)),
    ("meta-tensor", lambda: _ckpt(state_dict=_odd_state("meta")), ("head.fc.weight holds no data",)),
    ("complex-tensor", lambda: _ckpt(state_dict=_odd_state("complex")), ("head.fc.weight is complex",)),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in CHECKPOINT_ROWS], ids=[r[0] for r in CHECKPOINT_ROWS])
def test_checkpoint_refused(make, fragments, tmp_path, capsys):
    src = tmp_path / "model.pt"
    src.write_bytes(make())
    _refused([src, "--format", "timm", "--out", tmp_path / "out"], capsys, tmp_path, str(src), *fragments)


def test_checkpoint_truncated_anywhere(tmp_path, capsys):
    """A checkpoint cut at 24 places (every part of the zip: header, pickle, tensors, directory)."""
    raw = checkpoint_bytes(MC, _state())
    cuts = sorted(
        {1, 2, 3, 4, 30, 64, 100, 200, 512, 1000, len(raw) - 1, len(raw) - 22, len(raw) - 100}
        | {len(raw) * k // 12 for k in range(1, 12)}
    )
    for cut in cuts:
        src = tmp_path / "model.pt"
        src.write_bytes(raw[:cut])
        _refused([src, "--format", "timm", "--out", tmp_path / "out"], capsys, tmp_path, str(src), "not a checkpoint")


def test_checkpoint_reader_refuses_in_process(tmp_path):
    """The reader itself (what nas-export and any notebook use): a UserError, never torch's error."""
    src = tmp_path / "model.pt"
    src.write_bytes(_saved({"x": Pickled()}))
    with pytest.raises(UserError, match="pickled Python objects") as info:
        read_checkpoint(src)
    assert "weights_only=False" not in str(info.value)


def test_checkpoint_named_like_yaml_and_yaml_named_like_checkpoint(tmp_path, capsys):
    """The content decides: a checkpoint saved as .yaml is read as a checkpoint; a YAML named model.pt is a
    file that is not a checkpoint."""
    ckpt = tmp_path / "weights.yaml"
    ckpt.write_bytes(checkpoint_bytes(MC, _state()))
    rc, out, err = _cli([ckpt, "--format", "timm", "--out", tmp_path / "a"], capsys)
    assert rc == 0 and (tmp_path / "a" / WEIGHTS_FILE).is_file(), err
    fake = tmp_path / "model.pt"
    fake.write_text(_yaml(_doc()))
    _refused([fake, "--format", "timm", "--out", tmp_path / "b"], capsys, tmp_path, "not a torch file")


# ----------------------------------------------------------------------------------------- odd sources
def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "model.pt")
    return tmp / "model.pt"


def _dangling(tmp: Path) -> Path:
    (tmp / "model.yaml").symlink_to(tmp / "gone.yaml")
    return tmp / "model.yaml"


def _folder_with_damaged_ckpt(tmp: Path) -> Path:
    (tmp / "trained").mkdir()
    (tmp / "trained" / "model.pt").write_bytes(b"PK\x03\x04garbage")
    return tmp / "trained"


def _missing(tmp: Path) -> Path:
    return tmp / "nope"


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


SOURCE_ROWS = [
    ("fifo", _fifo, ("not a regular file",)),
    ("dangling-link", _dangling, ("not a regular file",)),
    ("folder-with-damaged-checkpoint", _folder_with_damaged_ckpt, ("model.pt", "not a checkpoint")),
    ("missing", _missing, ("no such run directory",)),
    ("empty-folder", _empty_folder, ("experiment.json",)),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in SOURCE_ROWS], ids=[r[0] for r in SOURCE_ROWS])
def test_odd_source_refused(make, fragments, tmp_path, capsys):
    src = make(tmp_path)
    _refused([src, "--format", "timm", "--out", tmp_path / "out"], capsys, tmp_path, *fragments)


def test_model_reader_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "m.yaml")
    with pytest.raises(UserError, match="is a FIFO"):
        load_model_config(tmp_path / "m.yaml")


# ---------------------------------------------------------------------------------------------- flags
FLAG_ROWS = [
    ("name-upper", ["--name", "My_Net"], ("--name 'My_Net'", "lower-case")),
    ("name-dot", ["--name", "a.b"], ("--name 'a.b'",)),
    ("name-slash", ["--name", "a/b"], ("--name 'a/b'",)),
    ("name-leading-digit", ["--name", "1net"], ("--name '1net'",)),
    ("name-empty", ["--name", ""], ("--name ''",)),
    ("name-keyword", ["--name", "class"], ("--name 'class'", "keyword")),
    ("name-hyphen", ["--name", "my-net"], ("--name 'my-net'",)),
    ("rank-with-file", ["--rank", "2"], ("--rank and --trial pick a trial",)),
    ("trial-with-file", ["--trial", "3"], ("--rank and --trial pick a trial",)),
    ("rank-zero", ["--rank", "0"], ("--rank must be >= 1",)),
    ("rank-text", ["--rank", "two"], ("--rank", "invalid int")),
    ("rank-and-trial", ["--rank", "1", "--trial", "2"], ("not allowed with argument",)),
    ("format-unknown", ["--format", "tflite"], ("--format", "invalid choice")),
]


@pytest.mark.parametrize("flags,fragments", [r[1:] for r in FLAG_ROWS], ids=[r[0] for r in FLAG_ROWS])
def test_flag_refused(flags, fragments, tmp_path, capsys):
    src = save_model_config(MC, tmp_path / "model.yaml")
    argv = [src, "--format", "timm", "--out", tmp_path / "out", *flags]
    if "--format" in flags:
        argv = [src, "--out", tmp_path / "out", *flags]
    _refused(argv, capsys, tmp_path, *fragments)


def test_yaml_format_refuses_a_file_and_a_name(tmp_path, capsys):
    src = save_model_config(MC, tmp_path / "model.yaml")
    _refused([src, "--out", tmp_path / "x.yaml"], capsys, tmp_path, "is a file", "--format timm")
    _refused([src, "--name", "n", "--out", tmp_path / "x.yaml"], capsys, tmp_path, "only applies with --format timm")


# -------------------------------------------------------------------------------------------- outputs
def _fake_run(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    for name in ("experiment.json", "trials.jsonl", "space.yaml", "best.yaml"):
        (run / name).write_text("{}\n")
    (run / "tune").mkdir()
    return run


def _out_link_to_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "precious").mkdir()
    (tmp / "precious" / CONFIG_FILE).write_text("mine\n")
    (tmp / "out").symlink_to(tmp / "precious")
    return tmp / "out", ["--force"]


def _config_is_link(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").mkdir()
    (tmp / "target.txt").write_text("mine\n")
    (tmp / "out" / CONFIG_FILE).symlink_to(tmp / "target.txt")
    return tmp / "out", ["--force"]


def _weights_is_link(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").mkdir()
    (tmp / "target.bin").write_text("mine\n")
    (tmp / "out" / WEIGHTS_FILE).symlink_to(tmp / "target.bin")
    return tmp / "out", ["--force"]


def _existing_export(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").mkdir()
    (tmp / "out" / CONFIG_FILE).write_text("an earlier export\n")
    return tmp / "out", []


def _out_is_file(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").write_text("a file\n")
    return tmp / "out", ["--force"]


def _out_is_run(tmp: Path) -> tuple[Path, list[str]]:
    return _fake_run(tmp), ["--force"]


def _out_inside_run_tune(tmp: Path) -> tuple[Path, list[str]]:
    return _fake_run(tmp) / "tune", ["--force"]


def _out_below_a_file(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "afile").write_text("x\n")
    return tmp / "afile" / "out", []


def _out_config_is_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out" / CONFIG_FILE).mkdir(parents=True)
    return tmp / "out", ["--force"]


def _out_config_is_fifo(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").mkdir()
    os.mkfifo(tmp / "out" / CONFIG_FILE)
    return tmp / "out", ["--force"]


def _out_dangling_link(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "out").symlink_to(tmp / "nowhere")
    return tmp / "out", []


def _out_readonly(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)
    return tmp / "ro" / "out", []


OUTPUT_ROWS = [
    ("out-link-to-folder", _out_link_to_folder, ("symbolic link",)),
    ("config-json-is-link", _config_is_link, ("symbolic link", "not even --force")),
    ("weights-is-link", _weights_is_link, ("symbolic link", "not even --force")),
    ("existing-export-without-force", _existing_export, ("already exists", "--force")),
    ("out-is-a-file", _out_is_file, ("not a folder",)),
    ("out-is-a-run", _out_is_run, ("search run directory", "not even with --force")),
    ("out-is-a-run-folder", _out_inside_run_tune, ("search run directory",)),
    ("out-below-a-file", _out_below_a_file, ("is a file, not a folder",)),
    ("config-json-is-folder", _out_config_is_folder, ("a folder",)),
    ("config-json-is-fifo", _out_config_is_fifo, ("a FIFO",)),
    ("out-dangling-link", _out_dangling_link, ("symbolic link",)),
]


@pytest.mark.parametrize("make,fragments", [r[1:] for r in OUTPUT_ROWS], ids=[r[0] for r in OUTPUT_ROWS])
def test_output_refused(make, fragments, tmp_path, capsys):
    src = tmp_path / "model.pt"
    src.write_bytes(checkpoint_bytes(MC, _state()))
    out, flags = make(tmp_path)
    _refused([src, "--format", "timm", "--out", out, *flags], capsys, tmp_path, *fragments)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder(tmp_path, capsys):
    src = save_model_config(MC, tmp_path / "model.yaml")
    out, _ = _out_readonly(tmp_path)
    _refused([src, "--format", "timm", "--out", out], capsys, tmp_path, "not writable")


def test_refused_source_with_force_keeps_the_earlier_export(tmp_path, capsys):
    """--force replaces an export only with a good one: a refused source leaves the folder as it was."""
    good = tmp_path / "model.pt"
    good.write_bytes(checkpoint_bytes(MC, _state()))
    rc, _, err = _cli([good, "--format", "timm", "--out", tmp_path / "out"], capsys)
    assert rc == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text(_yaml(_set("architecture.depths[1]", 10**6)(_doc())))
    _refused([bad, "--format", "timm", "--out", tmp_path / "out", "--force"], capsys, tmp_path, "sane range")
    assert read_timm_export(tmp_path / "out").weights.is_file()


# ------------------------------------------------------------------------------ config.json of an export
@pytest.fixture
def exported(tmp_path) -> Path:
    return export_timm(MC, tmp_path / "exp", state=_state(), name="coatnas_hostile")


def test_config_json_truncated_at_each_byte(exported):
    """Every prefix of config.json is refused by its reader with one paragraph naming the file."""
    path = exported / CONFIG_FILE
    whole = path.read_bytes()
    assert read_timm_export(exported).name == "coatnas_hostile"
    for cut in range(len(whole.rstrip())):
        path.write_bytes(whole[:cut])
        with pytest.raises(UserError) as info:
            read_timm_export(exported)
        text = str(info.value)
        assert str(path) in text and "\n" not in text and "Re-export" in text, (cut, text)


def _edit(change: Callable[[dict], None]) -> Callable[[dict], dict]:
    def edit(data: dict) -> dict:
        data = copy.deepcopy(data)
        change(data)
        return data

    return edit


CONFIG_ROWS: list[tuple[str, Callable[[dict], Any], str]] = [
    (
        "model-args-depth-million",
        _edit(lambda d: d["model_args"]["model_cfg"]["depths"].__setitem__(0, 10**6)),
        ("`model_args.model_cfg.depths[0]` does not match"),
    ),
    (
        "coatnas-depth-million",
        _edit(lambda d: d["coatnas"]["architecture"]["depths"].__setitem__(1, 10**6)),
        ("architecture.depths[1]"),
    ),
    ("img-size-edited", _edit(lambda d: d["model_args"].__setitem__("img_size", 64)), "model_args.img_size"),
    ("se-channels-edited", _edit(lambda d: d["model_args"]["se_channels"].__setitem__("0.0", 999)), "se_channels"),
    (
        "weights-path-traversal",
        _edit(lambda d: d["pretrained_cfg"].__setitem__("file", "../../etc/passwd")),
        ("pretrained_cfg.file"),
    ),
    ("name-with-dot", _edit(lambda d: d.__setitem__("architecture", "a.b")), "not a usable timm model name"),
    ("name-not-text", _edit(lambda d: d.__setitem__("architecture", 5)), "not a usable timm model name"),
    ("format-newer", _edit(lambda d: d.__setitem__("format", TIMM_FORMAT + 1)), "newer coatnas"),
    ("format-text", _edit(lambda d: d.__setitem__("format", "1")), "not a format version"),
    ("unknown-key", _edit(lambda d: d.__setitem__("label_names", ["a"])), "unknown key(s) label_names"),
    ("no-coatnas", _edit(lambda d: d.pop("coatnas")), "coatnas are missing"),
    ("vit-coatnas", _edit(lambda d: d.__setitem__("coatnas", VIT | {"format": 0, "in_chans": 1})), "sane range"),
    ("odd-image", _edit(lambda d: d["coatnas"].__setitem__("image_size", 33)), "even image_size"),
    ("a-list", lambda d: [d], "not a mapping"),
    ("hf-transformers-config", lambda d: {"architectures": ["BertModel"], "hidden_size": 768}, "unknown key(s)"),
]


@pytest.mark.parametrize("change,fragment", [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS])
def test_config_json_refused(change, fragment, exported):
    path = exported / CONFIG_FILE
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(UserError) as info:
        read_timm_export(exported)
    text = str(info.value)
    assert str(path) in text and fragment in text and "\n" not in text, text


def test_config_json_nan_and_special_files(exported, tmp_path):
    path = exported / CONFIG_FILE
    path.write_text(path.read_text().replace('"num_classes": 4', '"num_classes": NaN', 1))
    with pytest.raises(UserError, match="NaN"):
        read_timm_export(exported)
    path.unlink()
    with pytest.raises(UserError, match="no config.json there"):
        read_timm_export(exported)
    os.mkfifo(path)
    with pytest.raises(UserError, match="FIFO"):
        read_timm_export(exported)


def test_config_json_with_a_repeated_key_is_refused(exported):
    """JSON keeps the last of two equal keys without a word; no file of ours has two."""
    path = exported / CONFIG_FILE
    path.write_text(path.read_text().replace("{", '{"num_classes": 1000, ', 1))
    with pytest.raises(UserError) as info:
        read_timm_export(exported)
    assert "'num_classes' twice" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["sparse", "meta", "complex", "complex-safetensors"])
def test_export_weights_that_are_no_weights_are_refused(exported, kind):
    """A sparse or meta tensor only fits the pickled pytorch_model.bin of a format-1 export; complex ones fit both."""
    from safetensors.torch import save

    from nas.export.timm import LEGACY_WEIGHTS_FILE, read_timm_weights, timm_config, to_timm_state_dict

    state = to_timm_state_dict(_state(), MC)
    w = state["head.fc.weight"]
    state["head.fc.weight"] = {
        "sparse": lambda: w.to_sparse(),
        "meta": lambda: torch.empty(w.shape, device="meta"),
        "complex": lambda: w.to(torch.complex64),
        "complex-safetensors": lambda: w.to(torch.complex64),
    }[kind]()
    if kind.endswith("safetensors"):
        (exported / WEIGHTS_FILE).write_bytes(save({k: v.contiguous() for k, v in state.items()}))
    else:
        (exported / WEIGHTS_FILE).unlink()
        config = timm_config(MC, "coatnas_hostile", weights=True, fmt=1)
        (exported / CONFIG_FILE).write_text(json.dumps(config))
        (exported / LEGACY_WEIGHTS_FILE).write_bytes(_saved(state))
    with pytest.raises(UserError) as info:
        read_timm_weights(read_timm_export(exported))
    text = str(info.value)
    assert "head.fc.weight" in text and "does not belong to" in text and "\n" not in text, text


# ------------------------------------------------------------------------- format versions and migration
def test_new_files_carry_their_format(tmp_path):
    assert yaml.safe_load(save_model_config(MC, tmp_path / "m.yaml").read_text())["format"] == MODEL_FORMAT
    raw = torch.load(io.BytesIO(checkpoint_bytes(MC, _state())), weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and ModelConfig.from_dict(raw["model_config"]) == MC
    folder = export_timm(MC, tmp_path / "e", name="coatnas_fmt")
    assert json.loads((folder / CONFIG_FILE).read_text())["format"] == TIMM_FORMAT


def _written_by_main_before_formats(tmp: Path) -> tuple[Path, Path, Path]:
    """A model YAML, a checkpoint and a timm export exactly as the code before format versions wrote them."""
    yaml_path = tmp / "old.yaml"
    yaml_path.write_text(yaml.safe_dump(MC.to_dict(), sort_keys=False))
    from nas.export.timm import LEGACY_WEIGHTS_FILE, timm_config, to_timm_state_dict

    state = _state()
    ckpt = tmp / "old.pt"
    ckpt.write_bytes(_saved({"state_dict": state, "model_config": MC.to_dict()}))
    folder = tmp / "old-export"
    folder.mkdir()
    config = timm_config(MC, "coatnas_old", weights=True, fmt=0)  # pytorch_model.bin, timm's data defaults
    assert "format" not in config
    config["coatnas"] = MC.to_dict()
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / LEGACY_WEIGHTS_FILE).write_bytes(_saved(to_timm_state_dict(state, MC)))
    return yaml_path, ckpt, folder


def test_files_from_before_format_versions_are_migrated(tmp_path, capsys):
    yaml_path, ckpt, folder = _written_by_main_before_formats(tmp_path)
    assert load_model_config(yaml_path) == MC
    old = read_checkpoint(ckpt)
    assert old.format == 0 and old.model_config == MC and set(old.state_dict) == set(_state())
    export = read_timm_export(folder)
    assert export.format == 0 and export.model_config == MC and export.name == "coatnas_old"
    # and each exports as today's files do
    rc, _, err = _cli([ckpt, "--format", "timm", "--out", tmp_path / "new"], capsys)
    assert rc == 0, err
    assert read_timm_export(tmp_path / "new").format == TIMM_FORMAT
    from nas.export.timm import read_timm_weights

    new, old_weights = read_timm_weights(read_timm_export(tmp_path / "new")), read_timm_weights(export)
    assert new.keys() == old_weights.keys() and all(torch.equal(new[k], old_weights[k]) for k in new)
    rc, _, err = _cli([yaml_path, "--format", "timm", "--out", tmp_path / "new2"], capsys)
    assert rc == 0, err


def test_provenance_dates_are_read_as_text_and_nan_never_written(tmp_path):
    doc = _doc()
    doc["provenance"] = {"when": "2024-05-01"}
    src = tmp_path / "m.yaml"
    src.write_text(_yaml(doc).replace("'2024-05-01'", "2024-05-01"))
    assert load_model_config(src).provenance == {"when": "2024-05-01"}
    from dataclasses import replace

    nan = replace(MC, provenance={"metrics": {"score": float("nan")}})
    back = load_model_config(save_model_config(nan, tmp_path / "n.yaml"))
    assert back.provenance == {"metrics": {"score": None}}
