"""Measure how often timm and coatnas give the same top-1 class on CIFAR-10 test images read from files.

    .venv-timm/bin/python scripts/check_timm_agreement.py [--model DIR] [--steps 400] [--images 1000] [--seed 0]

Needs timm (``.venv-timm``: ``make timm``) and CIFAR-10 as ``data/cifar10-{train,test}.npz``
(``scripts/prepare_cifar.py`` makes them from your own download).

1. The model: ``--model DIR`` (a folder ``nas-train --out`` wrote), else a small C-C-T-T trained here with
   ``nas-train`` on ``data/cifar10-train.npz`` for ``--steps`` steps (the command is printed).
2. ``nas-export DIR --format timm``, then ``timm.create_model(name, pretrained=True)`` with timm's own data
   config: ``resolve_data_config({}, model=model)`` + ``create_transform(**cfg)``, files read by timm's
   ``ImageDataset``.
3. ``--images`` test images (a seeded sample of ``data/cifar10-test.npz``) written as files in a temporary
   folder, twice: ``native``, each as a 32x32 PNG; ``resized``, each resized (PIL bicubic) to a random width
   and height from 20 to 160 px (aspect ratios about 1:8 to 8:1, smaller and larger than the model) and saved
   as PNG or JPEG (quality 90) in turn, as a user's own folder would hold them.
4. coatnas's prediction for each file: ``load_trained_model(DIR)``, the resize policy
   (``decode_rgb(file, (size, size))``), ``(x / 255 - mean) / std``. timm's: the exported model and its data
   config. Reported: top-1 agreement with a 95% Wilson interval, the largest logit difference, both accuracies
   against the labels; and, for contrast, timm fed by its defaults (ImageNet mean/std, crop 0.875, bicubic:
   what an export of format 1 left to timm).
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import timm.data
import torch
from PIL import Image

from nas.export.model_config import load_trained_model, save_model_config
from nas.export.timm_model import register
from nas.model.arch import Architecture, ModelConfig
from trainers.data.readers import CIFAR10_CLASSES, decode_rgb

ARCH = "C-C-T-T L=2,1,1,1,1 D=32,32,64,96,128"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of the proportion ``k / n``."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()}")
    for line in (done.stdout + done.stderr).strip().splitlines():
        print("  " + line)


def train(tmp: Path, args) -> Path:
    mc = ModelConfig(arch=Architecture.parse(ARCH), num_classes=10, image_size=32, in_chans=3)
    yaml_path = save_model_config(mc, tmp / "cifar-small.yaml")
    out = tmp / "trained"
    bin_dir = Path(sys.executable).parent
    run(
        [
            str(bin_dir / "nas-train"),
            str(yaml_path),
            "--data",
            "npz",
            "--data-path",
            str(args.train),
            "--steps",
            str(args.steps),
            "--batch-size",
            "64",
            "--seed",
            str(args.seed),
            "--threads",
            str(args.threads),
            "--quiet",
            "--out",
            str(out),
        ]
    )
    return out


def write_images(root: Path, x: np.ndarray, y: np.ndarray, resized: bool, seed: int) -> None:
    """One file per image under ``root/<class>/`` (timm's ImageDataset reads a class-per-folder tree)."""
    rng = np.random.default_rng(seed)
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / CIFAR10_CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), "RGB")
        if not resized:
            im.save(folder / f"{i:05d}.png")
            continue
        w, h = (int(v) for v in rng.integers(20, 161, 2))
        im = im.resize((w, h), Image.BICUBIC)
        if i % 2:
            im.save(folder / f"{i:05d}.jpg", quality=90)
        else:
            im.save(folder / f"{i:05d}.png")


def coatnas_logits(model, mc, files: list[Path]) -> torch.Tensor:
    mean = torch.tensor(mc.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(mc.preprocessing.std).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(files), 250):
        batch = [np.array(decode_rgb(f, (mc.image_size, mc.image_size))) for f in files[start : start + 250]]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            out.append(model((x - mean) / std))
    return torch.cat(out)


def timm_logits(model, folder: Path, config: dict) -> tuple[torch.Tensor, list[Path], torch.Tensor]:
    """timm's logits for the files under ``folder`` (its ImageDataset and eval transform), the files in that
    order and their CIFAR-10 labels (from the folder names)."""
    dataset = timm.data.ImageDataset(str(folder), transform=timm.data.create_transform(**config))
    files = [Path(dataset.filename(i, absolute=True)) for i in range(len(dataset))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=250, num_workers=0)
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb, _ in loader])
    labels = torch.tensor([CIFAR10_CLASSES.index(f.parent.name) for f in files])
    return logits, files, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a trained model folder (nas-train --out); default: train one here")
    p.add_argument("--train", type=Path, default=Path("data/cifar10-train.npz"))
    p.add_argument("--test", type=Path, default=Path("data/cifar10-test.npz"))
    p.add_argument("--steps", type=int, default=400, help="nas-train steps (batch 64) when training here")
    p.add_argument("--images", type=int, default=1000, help="test images written as files (per set)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training and of the sample of test images")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}\ntorch {torch.__version__}, timm {timm.__version__}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        folder = args.model or train(tmp, args)
        if args.model is None:
            print(f"  trained in {time.perf_counter() - t0:.0f} s")
        run(
            [
                str(Path(sys.executable).parent / "nas-export"),
                str(folder),
                "--format",
                "timm",
                "--name",
                "coatnas_agreement",
                "--out",
                str(tmp / "export"),
            ]
        )
        ours, mc = load_trained_model(folder)
        theirs = timm.create_model(register(tmp / "export"), pretrained=True).eval()
        config = timm.data.resolve_data_config({}, model=theirs)
        defaults = timm.data.resolve_data_config({"input_size": (3, mc.image_size, mc.image_size)})
        print(f"timm's data config from the export: {config}")
        print(f"timm's defaults (format-1 exports):  {defaults}")
        with np.load(args.test) as data:
            x_all, y_all = data["x"], data["y"]
        pick = np.sort(np.random.default_rng(args.seed).choice(len(x_all), args.images, replace=False))
        x, y = x_all[pick], y_all[pick]
        print(
            f"\n{'images':<8} {'config':<9} {'agree':>10} {'agree %':>8} {'95% interval':>16} {'max |dlogit|':>13} "
            f"{'coatnas acc':>12} {'timm acc':>9}"
        )
        for kind in ("native", "resized"):
            root = tmp / kind
            write_images(root, x, y, kind == "resized", args.seed + 1)
            for name, cfg in (("exported", config), ("defaults", defaults)):
                b, files, labels = timm_logits(theirs, root, cfg)
                a = coatnas_logits(ours, mc, files)
                k, n = int((a.argmax(1) == b.argmax(1)).sum()), len(files)
                lo, hi = wilson(k, n)
                acc_a = (a.argmax(1) == labels).float().mean().item()
                acc_b = (b.argmax(1) == labels).float().mean().item()
                print(
                    f"{kind:<8} {name:<9} {f'{k}/{n}':>10} {100 * k / n:7.1f}% {100 * lo:7.2f}-{100 * hi:.2f}% "
                    f"{(a - b).abs().max().item():13.2e} {acc_a:12.3f} {acc_b:9.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
