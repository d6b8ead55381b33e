"""coatnas -> timm: timm builds the identical network and loads the converted weights.

Runs in ``.venv-timm`` (``make test-timm``), with the real timm and torchvision; the default install has
neither, so these tests live outside ``tests/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from nas.export.model_config import load_trained_model, save_model_config
from nas.export.timm import WEIGHTS_FILE, export_timm
from nas.export.timm_model import CoatnasMaxxVit, register
from nas.model.arch import Architecture, BlockOptions, ModelConfig
from nas.model.builder import build_model

torch.set_num_threads(1)

CASES = [
    # (architecture, options, image size): every layout, both downsampling modes, SE widths that differ
    # from timm's in the first block of a stage, rel_attn none, no SE, rel-bias tables of several sizes
    ("C-C-T-T L=2,2,2,2,1 D=16,24,32,64,96", {}, 32),
    ("C-C-C-C L=2,1,2,1,2 D=16,16,32,48,64", {"downsample": "dwconv"}, 32),
    ("C-T-T-T L=2,1,2,1,1 D=16,32,32,64,64", {"rel_attn": "none", "se_ratio": 0.0}, 48),
    ("T-T-T-T L=2,1,1,1,1 D=16,32,64,64,96", {"head_dim": 16, "ffn_expansion": 2.0}, 64),
    ("C-C-C-T L=2,2,1,1,1 D=8,16,24,40,64", {"se_ratio": 0.5, "mbconv_expansion": 2.0}, 40),
]


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic random, so a wrong mapping cannot hide behind an init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if t.ndim == 1 else 0.0))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5, generator=g)


def _pair(text: str, opts: dict, size: int, tmp_path: Path, seed: int = 0):
    arch = Architecture.parse(text, BlockOptions(**opts))
    mc = ModelConfig(arch=arch, num_classes=7, image_size=size, in_chans=3)
    ours = build_model(mc)
    _randomize(ours, seed)
    folder = export_timm(mc, tmp_path / "export", state=ours.state_dict())
    name = register(folder)
    theirs = timm.create_model(name, pretrained=True)
    return mc, ours, theirs, name


@pytest.mark.parametrize("text,opts,size", CASES, ids=[c[0].split()[0] for c in CASES])
def test_same_outputs_and_parameters(text, opts, size, tmp_path):
    mc, ours, theirs, _ = _pair(text, opts, size, tmp_path)
    assert isinstance(theirs, CoatnasMaxxVit)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (4, 7)
    assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item()), (a - b).abs().max()
    # training mode (BatchNorm on batch statistics): same outputs and same gradients for the input
    ours.train(), theirs.train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(xa), theirs(xb)
    assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())
    a.square().sum().backward(), b.square().sum().backward()
    scale = xa.grad.abs().max().item()
    assert (xa.grad - xb.grad).abs().max().item() < 1e-4 * scale, (xa.grad - xb.grad).abs().max().item() / scale


def test_without_weights_builds_the_same_shapes(tmp_path):
    arch = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,24,32,64,96")
    mc = ModelConfig(arch=arch, num_classes=5, image_size=32, in_chans=1)
    folder = export_timm(mc, tmp_path / "arch-only")
    assert not (folder / WEIGHTS_FILE).exists()
    model = timm.create_model(register(folder, "coatnas_test_shapes"))
    ours = build_model(mc)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert sorted(v.shape for v in model.state_dict().values() if v.ndim) == sorted(
        v.shape for v in _timm_state(mc, ours).values() if v.ndim
    )
    # timm's usual knobs work on the registered model: another classifier
    assert timm.create_model("coatnas_test_shapes", num_classes=3)(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def _timm_state(mc, model):
    from nas.export.timm import to_timm_state_dict

    return to_timm_state_dict(model.state_dict(), mc)


def _cli(command: str, *args) -> None:
    """Run one of the package's console scripts from this venv; it must exit 0."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / command), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr


def test_nas_train_checkpoint_through_the_cli(tmp_path):
    """nas-train a small model, nas-export its folder --format timm, load it in timm: same logits."""
    arch = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64")
    yaml_path = save_model_config(
        ModelConfig(arch=arch, num_classes=10, image_size=16, in_chans=1), tmp_path / "model.yaml"
    )
    _cli(
        "nas-train",
        yaml_path,
        "--data",
        "synthetic",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--quiet",
        "--out",
        tmp_path / "trained",
    )
    _cli(
        "nas-export",
        tmp_path / "trained",
        "--format",
        "timm",
        "--name",
        "coatnas_cli_test",
        "--out",
        tmp_path / "timm",
    )
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["architecture"] == "coatnas_cli_test" and config["pretrained_cfg"]["file"] == WEIGHTS_FILE
    ours, mc = load_trained_model(tmp_path / "trained")
    theirs = timm.create_model(register(tmp_path / "timm"), pretrained=True)
    # timm's data config is the trained model's: its training split's mean/std, 16 px, crop 1.0, bilinear
    data = timm.data.resolve_data_config({}, model=theirs)
    assert data["input_size"] == (1, 16, 16) and (data["crop_pct"], data["crop_mode"]) == (1.0, "center")
    assert data["mean"] == mc.preprocessing.mean and data["std"] == mc.preprocessing.std
    assert data["interpolation"] == "bilinear" and "state_dict" not in theirs.pretrained_cfg
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-5)


def test_timm_script_runner(tmp_path):
    """``python -m nas.export.timm_model FOLDER -- SCRIPT`` registers the export before the script runs."""
    arch = Architecture.parse("C-C-C-C L=2,1,1,1,1 D=8,16,16,32,32")
    folder = export_timm(ModelConfig(arch=arch, num_classes=4, image_size=32), tmp_path / "e", name="coatnas_runner")
    script = tmp_path / "script.py"
    script.write_text("import sys, timm\nm = timm.create_model(sys.argv[1])\nprint(type(m).__name__, m.num_classes)\n")
    run = subprocess.run(
        [sys.executable, "-m", "nas.export.timm_model", str(folder), "--", str(script), "coatnas_runner"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["CoatnasMaxxVit", "4"]
