"""coatnas and timm label image files alike: a trained model exported with ``nas-export --format timm``, loaded
with ``timm.create_model(name, pretrained=True)`` and fed by timm's own data config
(``resolve_data_config({}, model=model)`` + ``create_transform``, through timm's ``ImageDataset``), gives the
same top-1 class as coatnas (``load_trained_model``, the resize policy via ``decode_rgb(file, (size, size))``,
then ``(x / 255 - mean) / std``) on at least 99% of a folder of generated images of assorted sizes, aspect
ratios (square, wide, tall, smaller and larger than the model), colour modes (RGB, grey, RGBA, palette) and
formats (PNG, JPEG). The measurement on CIFAR-10 is ``scripts/check_timm_agreement.py`` (docs/model.md).

Runs in ``.venv-timm`` (``make test-timm``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image

from nas.export.model_config import load_trained_model, save_trained
from nas.export.timm_model import register
from nas.model.arch import Architecture, ModelConfig, Preprocessing
from nas.model.builder import build_model
from trainers.data.readers import decode_rgb

torch.set_num_threads(1)

SIZE = 32
CLASSES = ("reddish", "greenish", "bluish", "greyish")
# (width, height): square, wide, tall, smaller and larger than the model, the model's size and one off it
SIZES = [
    (32, 32),
    (31, 32),
    (32, 33),
    (64, 64),
    (48, 32),
    (32, 48),
    (100, 37),
    (37, 100),
    (17, 17),
    (20, 13),
    (13, 20),
    (3, 7),
    (200, 8),
    (8, 200),
    (640, 480),
    (480, 640),
    (333, 333),
    (96, 65),
]
MODES = ["RGB", "RGB", "RGB", "L", "RGBA", "P"]


def _colour_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is their dominant colour (or none: grey), with texture, in [0, 1]."""
    y = torch.randint(0, len(CLASSES), (n,), generator=g)
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.5 + 0.1
    for i, label in enumerate(y.tolist()):
        if label < 3:
            base[i, label] += 0.35
        else:
            base[i] = base[i].mean()
    x = base + 0.15 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, ModelConfig]:
    """A small model trained for a few steps of plain torch on colour images, saved as nas-train saves one."""
    folder = tmp_path_factory.mktemp("trained")
    g = torch.Generator().manual_seed(0)
    x, y = _colour_batch(512, g)
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    mc = ModelConfig(
        arch=Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64"),
        num_classes=len(CLASSES),
        image_size=SIZE,
        preprocessing=Preprocessing(tuple(mean.tolist()), tuple(std.tolist())),
        class_names=CLASSES,
    )
    torch.manual_seed(0)
    model = build_model(mc)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    xn = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = F.cross_entropy(model(xn[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_trained(folder, mc, model.state_dict())
    return folder, mc


def _write_images(root: Path, n: int, seed: int) -> None:
    """``n`` generated images under ``root/images/`` (timm's ImageDataset wants a class folder): blends of two
    random colours with noise and a random rectangle, each at a size, mode and format of its own."""
    rng = np.random.default_rng(seed)
    folder = root / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        a, b = rng.random(3), rng.random(3)
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
        img = (1 - t) * a + t * b + rng.normal(0, 0.1, (h, w, 3))
        x0, y0 = rng.integers(0, max(1, w // 2)), rng.integers(0, max(1, h // 2))
        img[y0 : y0 + h // 3 + 1, x0 : x0 + w // 3 + 1] = rng.random(3)
        im = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), "RGB")
        mode = MODES[i % len(MODES)]
        if mode == "P":
            im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        elif mode != "RGB":
            im = im.convert(mode)
        jpeg = mode in ("RGB", "L") and i % 4 == 0
        im.save(folder / f"{i:04d}.{'jpg' if jpeg else 'png'}", quality=90)


def _coatnas_inputs(files: list[Path], mc: ModelConfig) -> torch.Tensor:
    """The network's input for each file the coatnas way: the resize policy, then (x / 255 - mean) / std."""
    mean = torch.tensor(mc.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(mc.preprocessing.std).view(3, 1, 1)
    out = []
    for f in files:
        x = torch.from_numpy(np.array(decode_rgb(f, (mc.image_size, mc.image_size)))).permute(2, 0, 1).float() / 255
        out.append((x - mean) / std)
    return torch.stack(out)


def _nas_export(source: Path, out: Path, name: str) -> None:
    exe = Path(sys.executable).parent / "nas-export"
    run = subprocess.run(
        [str(exe), str(source), "--format", "timm", "--name", name, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "note:" not in run.stderr, run.stderr


def test_timm_predicts_as_coatnas_on_a_folder_of_images(trained, tmp_path):
    folder, mc = trained
    _nas_export(folder, tmp_path / "export", "coatnas_agreement")
    _write_images(tmp_path, 216, seed=1)

    theirs = timm.create_model(register(tmp_path / "export"), pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=theirs)
    assert config["input_size"] == (3, SIZE, SIZE) and config["interpolation"] == "bilinear"
    assert (config["crop_pct"], config["crop_mode"]) == (1.0, "center")
    assert config["mean"] == mc.preprocessing.mean and config["std"] == mc.preprocessing.std
    assert tuple(theirs.pretrained_cfg["label_names"]) == CLASSES
    dataset = timm.data.ImageDataset(str(tmp_path / "images"), transform=timm.data.create_transform(**config))
    files = [Path(dataset.filename(i, absolute=True)) for i in range(len(dataset))]
    assert len(files) == 216
    x_timm = torch.stack([dataset[i][0] for i in range(len(dataset))])

    ours, _ = load_trained_model(folder)
    x_ours = _coatnas_inputs(files, mc)
    with torch.no_grad():
        a, b = ours(x_ours), theirs(x_timm)
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    diff = (a - b).abs().max().item()
    print(
        f"\ntimm vs coatnas on {len(files)} generated images: top-1 agreement {agree:.2%}, max |logit diff| "
        f"{diff:.2e} (logits up to {a.abs().max().item():.2f}), max |input diff| {(x_ours - x_timm).abs().max():.2e}"
    )
    assert agree >= 0.99, agree
    assert len(set(a.argmax(1).tolist())) >= 3, "the model must tell images apart for agreement to mean anything"
    assert diff < 1e-3 * max(1.0, a.abs().max().item()), diff


def test_timm_defaults_would_not_feed_the_network_as_coatnas_does(trained, tmp_path):
    """Why the data config matters: timm's defaults (what config.json left to timm before format 2: ImageNet
    mean/std, crop 0.875, bicubic) give other inputs for the same files, while the exported config gives the
    same pixels to float rounding."""
    folder, mc = trained
    _nas_export(folder, tmp_path / "export", "coatnas_agreement_defaults")
    _write_images(tmp_path, len(SIZES), seed=2)
    model = timm.create_model(register(tmp_path / "export"), pretrained=True)
    exported = timm.data.resolve_data_config({}, model=model)
    defaults = timm.data.resolve_data_config({"input_size": (3, SIZE, SIZE)})
    assert defaults["crop_pct"] == 0.875 and defaults["mean"] != exported["mean"]
    files = sorted((tmp_path / "images").iterdir())
    x_ours = _coatnas_inputs(files, mc)
    for config, close in ((exported, True), (defaults, False)):
        tf = timm.data.create_transform(**config)
        x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
        assert torch.allclose(x, x_ours, atol=1e-5) is close, config
