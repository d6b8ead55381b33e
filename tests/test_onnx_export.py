"""``nas-export --format onnx``: the export runs in onnxruntime with PyTorch's outputs (batch 1 and 5 through the
dynamic batch axis), carries the preprocessing and class names in its metadata, and refuses (nothing written)
what it cannot do: an export that disagrees with PyTorch, an existing output without --force, a missing source,
an opset the exporter cannot write, a missing onnx install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nas.cli.export import main as export_cli
from nas.errors import UserError
from nas.export.model_config import load_model_config, load_trained_model, save_model_config, save_trained
from nas.export.onnx import compare, export_onnx, load_onnx_source, onnx_session, read_onnx_metadata
from nas.model.arch import Architecture, ModelConfig, Preprocessing
from nas.model.builder import build_model
from nas.search import RunDir, load_experiment
from nas.search.record import TrialRecord
from nas.search.rundir import RunMeta

C_ONLY = "C-C-C-C L=2,1,1,1,1 D=8,8,16,16,32"
CCTT = "C-C-T-T L=1,1,1,1,1 D=8,8,16,32,32"
VIT = "ViT_REL L=1,1,1,1,1 D=32,32,32,32,32"
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = export_cli(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def _trained(folder, text: str, *, in_chans: int = 3, classes=("cat", "dog", "bird", "fish")) -> ModelConfig:
    """A trained-model folder as nas-train writes it, with random weights and BatchNorm statistics."""
    arch = Architecture.parse(text)
    if arch.is_vit:
        from dataclasses import replace

        arch = replace(arch, patch_size=4)
    mc = ModelConfig(
        arch=arch,
        num_classes=len(classes),
        image_size=32,
        in_chans=in_chans,
        preprocessing=Preprocessing((0.49, 0.48, 0.45)[:in_chans], (0.25, 0.24, 0.26)[:in_chans]),
        class_names=tuple(classes),
    )
    torch.manual_seed(1)
    model = build_model(mc)
    for m in model.modules():  # BatchNorm that is not the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_trained(folder, mc, model.state_dict())
    return mc


def _run(sess, x: torch.Tensor) -> np.ndarray:
    return sess.run(["logits"], {"input": x.numpy()})[0]


@pytest.mark.parametrize("text", [C_ONLY, CCTT, VIT], ids=["C-C-C-C", "C-C-T-T", "ViT_REL"])
def test_trained_model_exports_and_matches_pytorch(text, tmp_path, capsys):
    mc = _trained(tmp_path / "m", text)
    out = tmp_path / "onnx"
    rc, line, err = _cli([str(tmp_path / "m"), "--format", "onnx", "--out", str(out)], capsys)
    assert rc == 0, err
    assert "trained weights" in line and "top-1 agrees 16/16" in line and "opset 20" in line, line
    model, _ = load_trained_model(tmp_path / "m")
    sess = onnx_session(out)
    assert sess.get_inputs()[0].shape[0] == "batch"  # the dynamic axis
    gen = torch.Generator().manual_seed(3)
    for n in (1, 5):
        x = torch.randn(n, 3, 32, 32, generator=gen)
        got = _run(sess, x)
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (n, 4)
        assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
        assert (got.argmax(1) == ref.argmax(1)).all()
    # the metadata, read back with onnx itself
    proto = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["mean"]) == pytest.approx([0.49, 0.48, 0.45])
    assert json.loads(meta["std"]) == pytest.approx([0.25, 0.24, 0.26])
    assert json.loads(meta["class_names"]) == ["cat", "dog", "bird", "fish"]
    assert (meta["image_size"], meta["in_chans"], meta["weights"]) == ("32", "3", "trained")
    assert meta["resize"] == "shorter-side-center-crop" and meta["interpolation"] == "bilinear"
    assert meta["architecture"] == str(mc.arch)
    assert json.loads(meta["coatnas.model_config"])["architecture"] == mc.arch.to_dict()
    assert not any(p.key == "pkg.torch.onnx.stack_trace" for n in proto.graph.node for p in n.metadata_props)
    assert read_onnx_metadata(out)["class_names"] == ["cat", "dog", "bird", "fish"]
    assert load_model_config(out / "model.yaml") == mc  # the model config beside it
    # the check would have caught another network's outputs
    torch.manual_seed(7)
    other = build_model(mc).eval()
    raw = (out / "model.onnx").read_bytes()
    assert not compare(raw, other, torch.randn(4, 3, 32, 32)).ok


def test_nas_train_output_on_digits(tmp_path, capsys):
    from nas.cli.train import main as train_cli

    cfg = save_model_config(
        ModelConfig(arch=Architecture.parse(CCTT), num_classes=10, image_size=32, in_chans=1), tmp_path / "c.yaml"
    )
    train = [str(cfg), "--data", "digits", "--steps", "2", "--batch-size", "16", "--threads", "1", "--quiet"]
    assert train_cli([*train, "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    rc, line, err = _cli([str(tmp_path / "t"), "--format", "onnx", "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    meta = read_onnx_metadata(tmp_path / "o")
    assert meta["class_names"] == [str(i) for i in range(10)] and len(meta["mean"]) == 1 and meta["in_chans"] == "1"
    assert "top-1 agrees 16/16" in line


def test_config_without_weights_static_batch_and_force(tmp_path, capsys):
    mc = ModelConfig(arch=Architecture.parse(CCTT), num_classes=3, image_size=32, in_chans=1)
    cfg = save_model_config(mc, tmp_path / "c.yaml")
    out = tmp_path / "o"
    argv = [str(cfg), "--format", "onnx", "--out", str(out), "--static-batch"]
    rc, line, err = _cli(argv, capsys)
    assert rc == 0, err
    assert "random weights" in line and "batch 1" in line and "batches of 1" in line
    sess = onnx_session(out / "model.onnx")
    assert sess.get_inputs()[0].shape == [1, 1, 32, 32]
    meta = read_onnx_metadata(out)
    assert meta["weights"] == "random" and "mean" not in meta and meta["class_names"] == ["0", "1", "2"]
    # an existing export is only replaced with --force
    before = (out / "model.onnx").read_bytes()
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and "--force" in err and (out / "model.onnx").read_bytes() == before
    rc, line, err = _cli([*argv[:-1], "--force", "--no-check"], capsys)
    assert rc == 0 and "not checked" in line
    assert onnx_session(out).get_inputs()[0].shape[0] == "batch"


def test_disagreement_is_refused_and_nothing_written(tmp_path):
    mc = ModelConfig(arch=Architecture.parse(C_ONLY), num_classes=3, image_size=32, in_chans=3)
    model = build_model(mc)
    with pytest.raises(UserError, match="does not reproduce PyTorch") as err:
        export_onnx(model, mc, tmp_path / "o", tolerance=1e-15, trained=False)  # below float32 rounding
    assert "max |diff|" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()
    assert model.training  # handed back as it came


def test_errors_name_the_fix(tmp_path, capsys):
    cfg = save_model_config(
        ModelConfig(arch=Architecture.parse(C_ONLY), num_classes=3, image_size=32, in_chans=3), tmp_path / "c.yaml"
    )
    cases = [
        ([str(tmp_path / "missing"), "--format", "onnx"], "no such file or folder"),
        ([str(tmp_path), "--format", "onnx"], "holds no trained model"),
        ([str(cfg), "--format", "onnx", "--rank", "2"], "Drop them"),
        ([str(cfg), "--format", "onnx", "--opset", "12"], "Allowed: 18.."),
        ([str(cfg), "--format", "onnx", "--opset", "26"], "cannot write opset 26"),
        ([str(cfg), "--format", "yaml", "--no-check"], "only applies with --format onnx"),
        ([str(cfg), "--format", "onnx", "--name", "x"], "--name names a timm model"),
        ([str(SPACES / "coatnet.yaml"), "--format", "onnx"], "is a search YAML"),
    ]
    for argv, fragment in cases:
        rc, _, err = _cli([*argv, "--out", str(tmp_path / "o")], capsys)
        assert rc == 2 and fragment in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o").exists()


def test_without_onnxruntime_names_the_extra(tmp_path, capsys, monkeypatch):
    cfg = save_model_config(
        ModelConfig(arch=Architecture.parse(C_ONLY), num_classes=3, image_size=32, in_chans=3), tmp_path / "c.yaml"
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    rc, _, err = _cli([str(cfg), "--format", "onnx", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "pip install 'coatnas[onnx]'" in err and "onnxruntime" in err
    assert not (tmp_path / "o").exists()


def test_a_search_run_trial_is_a_source(write_space, tmp_path):
    from nas.model.cost import count_cost

    exp = load_experiment(write_space())
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_experiment(exp, "r")
    meta = {"format": 1, "name": "r", "fingerprint": exp.space.fingerprint(), "source": "s", "sessions": []}
    rd.write_meta(RunMeta.from_json(meta))
    archs = list(exp.space.enumerate(2))
    for i, (a, s) in enumerate(zip(archs, [0.3, 0.8])):
        cost = count_cost(a, image_size=32, num_classes=4, in_chans=1)
        rec = {"id": a.id, "arch": a.to_dict(), "arch_str": str(a), "number": i, "status": "ok", "reason": ""}
        rec.update(generalization=s, capacity=s, score=s, history=[])
        rec["metrics"] = {"params": float(cost.params), "macs": float(cost.macs), "num_classes": 4.0}
        rd.append_record(TrialRecord.from_json(rec))
    model, mc, trained = load_onnx_source(rd.path, rank=2)
    assert mc.arch == archs[0] and not trained and not model.training
    again, _, _ = load_onnx_source(rd.path, rank=2)  # seeded: the same random weights each time
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(UserError, match="out of range"):
        load_onnx_source(rd.path, rank=3)


def test_ort_session_of_a_damaged_file(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load this model"):
        onnx_session(tmp_path)
    assert ort.get_device()  # onnxruntime imported for real here
