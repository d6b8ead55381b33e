"""Measure how closely an ONNX export (``nas-export --format onnx``) reproduces PyTorch on real images.

Exports a trained model (the folder ``nas-train --out`` wrote) into a temporary folder with the command's own
code (``nas.export.onnx.export_onnx``, whose check runs on the same images), then reads ``model.onnx`` back from
disk into onnxruntime and compares its logits with PyTorch's on N images of a data source, preprocessed as the
model's ``model.yaml`` says (its resize policy through the data loader, then its mean/std):

* the largest and the mean absolute difference of the logits, and the largest PyTorch logit for scale;
* top-1 agreement (k of N, with a 95% Wilson interval);
* the accuracy of each against the labels;
* onnxruntime's time per batch over PyTorch's in the same run (medians of alternating repeats; a ratio,
  not a timing).

    python scripts/check_onnx.py runs/train-m --data npz --data-path data/cifar10-test.npz --n 2000
    python scripts/check_onnx.py runs/train-digits                      # digits (the default source)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas.errors import UserError
from nas.export.model_config import load_trained_model
from nas.export.onnx import DEFAULT_OPSET, export_onnx, onnx_session
from trainers.data.config import DataConfig
from trainers.data.loading import load_dataset


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def images(args, mc) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``args.n`` images of the source (validation split first), normalised with the model's mean/std,
    and their labels."""
    cfg = DataConfig(name=args.data, path=args.data_path, val_fraction=0.5, seed=args.seed)
    data = load_dataset(cfg, mc.image_size, mc.in_chans, key="--data-path")
    raw = torch.cat([data.x_val.raw, data.x_train.raw])
    labels = torch.cat([data.y_val, data.y_train])
    if len(raw) < args.n:
        print(f"check_onnx: the source holds {len(raw)} images; using all of them", file=sys.stderr)
    raw, labels = raw[: args.n], labels[: args.n]
    x = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
    if mc.preprocessing is not None:
        mean = torch.tensor(mc.preprocessing.mean).reshape(1, -1, 1, 1)
        std = torch.tensor(mc.preprocessing.std).reshape(1, -1, 1, 1)
    else:  # an older model without preprocessing: the source's own statistics
        mean, std = data.x_val.mean[None].cpu(), data.x_val.std[None].cpu()
    return ((x - mean) / std).contiguous(), labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a trained model: the folder nas-train --out wrote")
    p.add_argument("--data", default="digits", help="data source name (digits, npz, imagefolder, cifar10, ...)")
    p.add_argument("--data-path", default=None, help="its file or folder (npz, imagefolder, cifar10)")
    p.add_argument("--n", type=int, default=2000, help="images compared (default 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="images per onnxruntime/PyTorch call (default 64)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--repeats", type=int, default=5, help="alternating timing repeats (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the source's split (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    except UserError as err:
        print(f"check_onnx: error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    model, mc = load_trained_model(args.model)
    x, y = images(args, mc)
    n, b = len(x), args.batch_size
    print(f"model {mc.arch} ({mc.image_size}px x{mc.in_chans}, {mc.num_classes} classes) from {args.model}")
    print(f"data {args.data} {args.data_path or ''}: {n} images; torch {torch.__version__}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        res = export_onnx(model, mc, Path(tmp) / "onnx", opset=args.opset, check_inputs=x[:256], check_what="real")
        print(f"export check: {res.check.line()}")
        sess = onnx_session(res.onnx_path)

        def run_ort() -> np.ndarray:
            return np.concatenate([sess.run(["logits"], {"input": x[i : i + b].numpy()})[0] for i in range(0, n, b)])

        def run_torch() -> np.ndarray:
            with torch.no_grad():
                return torch.cat([model(x[i : i + b]) for i in range(0, n, b)]).numpy()

        got, ref = run_ort(), run_torch()
        t_ort, t_torch = [], []
        for _ in range(args.repeats):
            for fn, times in ((run_ort, t_ort), (run_torch, t_torch)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    diff = np.abs(got.astype(np.float64) - ref)
    agree = int((got.argmax(1) == ref.argmax(1)).sum())
    lo, hi = wilson(agree, n)
    acc_ort = float((got.argmax(1) == y.numpy()).mean())
    acc_torch = float((ref.argmax(1) == y.numpy()).mean())
    ratios = [a / t for a, t in zip(t_ort, t_torch)]
    print(
        f"logits: max |diff| {diff.max():.2e}, mean |diff| {diff.mean():.2e}, largest |logit| {np.abs(ref).max():.2f}"
    )
    print(f"top-1 agreement: {agree}/{n} = {agree / n:.4f} (95% Wilson interval {lo:.4f}-{hi:.4f})")
    print(f"accuracy: onnxruntime {acc_ort:.4f}, PyTorch {acc_torch:.4f}")
    print(
        f"time onnxruntime / PyTorch (batches of {b}, {args.repeats} alternating repeats): median "
        f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
