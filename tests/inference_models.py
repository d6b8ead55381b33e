"""Models and images for the tests of ``nas-eval`` and ``nas-predict``, and the preprocessing written out by
hand (PIL and numpy, from the documented policy, not through coatnas's own functions) to check them against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas import Architecture
from nas.export.model_config import load_trained_model, save_model_config, save_trained
from nas.model.arch import ModelConfig, Preprocessing
from nas.model.builder import build_model

ARCH = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=8,8,16,16,32")
# (width, height) of the image files: square at and away from the model's 16 px, landscape, portrait
SIZES = [(16, 16), (8, 8), (24, 20), (20, 30), (40, 40), (13, 29)]
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def train_digits(folder: Path) -> Path:
    """A model trained briefly by ``nas-train`` on the embedded digits (16 px grey, classes `0`..`9`)."""
    from nas.cli.train import main

    cfg = save_model_config(ModelConfig(arch=ARCH, num_classes=10, image_size=16, in_chans=1), folder / "m.yaml")
    out = folder / "digits-model"
    args = [str(cfg), "--data", "digits", "--steps", "60", "--batch-size", "64", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    return out


def rgb_model(folder: Path, *, in_chans: int = 3, preprocessing: bool = True, seed: int = 0) -> Path:
    """An untrained RGB model with named classes (cat, dog, bird) and a mean/std of its own, saved as
    ``nas-train`` saves one."""
    pre = Preprocessing((0.45, 0.5, 0.55, 0.5)[:in_chans], (0.2, 0.25, 0.3, 0.2)[:in_chans])
    mc = ModelConfig(
        arch=ARCH,
        num_classes=3,
        image_size=16,
        in_chans=in_chans,
        preprocessing=pre if preprocessing else None,
        class_names=("cat", "dog", "bird"),
    )
    torch.manual_seed(seed)
    model = build_model(mc)
    with torch.no_grad():  # a head that separates the classes, so that ties of the argmax never happen
        model.head.fc.weight.mul_(20)
    return save_trained(folder, mc, model.state_dict())


def digit_pngs(root: Path, indices, *, classes=None, rgb_every: int = 3) -> dict[Path, int]:
    """Digits as image files of :data:`SIZES` (grey, some RGB, some JPEG) under ``root/<class>/``; {file: label}."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = {}
    for j, i in enumerate(indices):
        label = int(d.target[i])
        if classes is not None and label not in classes:
            continue
        img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize(SIZES[j % len(SIZES)], Image.NEAREST)
        if j % rgb_every == 0:
            img = img.convert("RGB")
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"{i}.jpg" if j % 7 == 3 else f"{i}.png")
        img.save(path)
        out[path] = label
    return out


def colour_pngs(root: Path, names: list[str], per_class: int = 4, seed: int = 0) -> dict[Path, str]:
    """Random colour images of :data:`SIZES` under ``root/<name>/`` for each class name; {file: class name}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            w, h = SIZES[j % len(SIZES)]
            path = root / name / f"{j}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            out[path] = name
    return out


def by_hand(path: Path, config: ModelConfig) -> torch.Tensor:
    """The network input of one image file, computed from the documented policy: RGB; shorter side to the
    model's size (the longer one rounded down) with PIL's bilinear filter; the centre square; /255; luminance
    for a grey model; then the model's own mean/std."""
    s = config.image_size
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if (w, h) != (s, s):
        nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - s) / 2)), int(round((nw - s) / 2))
        im = im.crop((left, top, left + s, top + s))
    a = np.asarray(im, np.float32) / 255.0
    if config.in_chans == 1:
        a = (a * LUMA).sum(-1, keepdims=True)
    pre = config.preprocessing
    a = (a - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def array_by_hand(x: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """The network input of uint8 grey arrays (N, H, W): /255, shorter side to the model's size (torch bilinear),
    the centre square, the model's mean/std."""
    s = config.image_size
    t = torch.from_numpy(x).float()[:, None] / 255.0
    h, w = t.shape[-2:]
    nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    t = torch.nn.functional.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    top, left = int(round((nh - s) / 2)), int(round((nw - s) / 2))
    t = t[..., top : top + s, left : left + s]
    pre = config.preprocessing
    return (t - torch.tensor(pre.mean).view(1, -1, 1, 1)) / torch.tensor(pre.std).view(1, -1, 1, 1)


@torch.no_grad()
def logits_by_hand(model_dir: Path, x: torch.Tensor) -> torch.Tensor:
    model, _ = load_trained_model(model_dir)
    return model(x)
