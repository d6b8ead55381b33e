"""Memory of a loaded dataset: images kept as uint8 against the float32 tensors held before.

    .venv/bin/python scripts/bench_data.py [--npz data/cifar10-train.npz] [--limit N] [--before REF]
    .venv/bin/python scripts/bench_data.py --stream-folder data/cifar10/train [--limit N] [--threads T]

Each measurement runs in a fresh Python process that imports torch and the loader, reads its resident
memory (``VmRSS``), loads the npz source at its own size (32 px for CIFAR-10: the images stay uint8), and
reads ``VmRSS`` again and the peak (``VmHWM``). Modes:

- ``uint8``: ``trainers.data.loading.load_dataset`` as it is (images stored as uint8, batches normalised on use);
- ``float32``: the same dataset then held as normalised float32 tensors, the representation before
  (``Images.float()``; the uint8 copy dropped);
- ``before`` (with ``--before REF``, default the commit before the change): the loader of git revision REF
  itself (its ``trainers/data/loading.py`` and ``trainers/data/safe_pickle.py``), for its real peak.

Also the cost of building one normalised batch of 256 from each storage. A missing ``--npz`` file is
replaced by random uint8 images of the CIFAR-10 shape (memory depends only on the shape).
Ratios are within one run; see docs/trainer.md for the recorded figures.

With ``--stream-folder`` it compares instead, in one process, an ``imagefolder`` source loaded into memory
against the same folder streamed (``stream_above_mb: 0``, ``trainers.data.stream``): the set-up time, the
images/s of drawing random training batches of 256 (``x_train[idx]``, decode threads 1 and ``--threads``),
and the training images/s of ``trainers.training.proxy.fit`` (30 steps of 64 on a small CoAtNet, 32 px, one torch
thread, one decode thread), with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, gc
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out
mode, npz, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy, torch
torch.set_num_threads(1)
if mode == "before":
    sys.path.insert(0, sys.argv[4])
    from trainers_before.data import DataConfig, load_dataset
else:
    from trainers.data.loading import DataConfig, Dataset, load_dataset
base = status()
cfg = DataConfig(name="npz", path=npz, limit=limit or None)
d = load_dataset(cfg, 32, 3)
if mode == "float32":
    held = Dataset(d.x_train.float(), d.y_train, d.x_val.float(), d.y_val, d.num_classes, d.in_chans, d.name)
    from trainers.data.loading import clear_dataset_cache
    clear_dataset_cache()
    del d
    gc.collect()
    d = held
after = status()
x = d.x_train
stored = x.raw if hasattr(x, "raw") else x
idx = torch.randperm(len(x))[:256]
batch_us = float("inf")
for _ in range(15):  # best of 15 rounds of 20: the machine may be shared
    t0 = time.perf_counter()
    for _ in range(20):
        xb = x[idx]
    batch_us = min(batch_us, (time.perf_counter() - t0) / 20 * 1e6)
print(json.dumps({"mode": mode, "images": len(x) + len(d.x_val), "stored": str(stored.dtype),
                  "data_bytes": stored.numel() * stored.element_size() * (len(x) + len(d.x_val)) // len(x),
                  "base_rss": base["VmRSS"], "rss": after["VmRSS"], "peak": after["VmHWM"],
                  "batch_us": batch_us, "batch_dtype": str(xb.dtype)}))
"""


def npz_or_random(npz: str, tmp: str) -> str:
    """``npz`` if it exists, else 50,000 random uint8 32x32x3 images with 10 labels written into ``tmp``."""
    if Path(npz).is_file():
        return npz
    import numpy as np

    print(f"{npz} not found: using 50,000 random uint8 images of 32x32x3 instead")
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, "random.npz")
    np.savez(path, x=rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8), y=np.arange(50_000) % 10)
    return path


def measure(mode: str, npz: str, limit: int, before_dir: str = "") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, npz, str(limit), before_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def before_package(ref: str, into: Path) -> str:
    """A copy of revision ``ref``'s loader as package ``trainers_before`` under ``into``."""
    pkg = into / "trainers_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("data.py", "safe_pickle.py"):
        text = subprocess.run(
            ["git", "show", f"{ref}:trainers/{name}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        (pkg / name).write_text(text)
    return str(into)


def batch_rate(x, batches: int = 20, batch: int = 256, seed: int = 0) -> float:
    """Images/s of drawing ``batches`` random batches of ``batch`` normalised training images from ``x``."""
    import time

    import torch

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(batches):
        x[torch.randint(0, len(x), (batch,), generator=gen)]
    return batches * batch / (time.perf_counter() - t0)


def fit_rate(ds, steps: int = 30) -> float:
    """Training images/s of ``trainers.training.proxy.fit`` on ``ds`` (its ``images_per_s``: training-loop time,
    evaluation excluded) for ``steps`` steps of 64 on a small CoAtNet at the dataset's size."""
    import torch

    from nas import Architecture, build_model
    from trainers.training.config import TrainConfig
    from trainers.training.fit import fit

    torch.manual_seed(0)
    arch = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=32,32,64,64,128")
    model = build_model(arch, num_classes=ds.num_classes, image_size=ds.image_size, in_chans=ds.in_chans)
    small = torch.arange(64)
    view = type(ds)(
        ds.x_train, ds.y_train, ds.x_val.subset(small), ds.y_val[:64], ds.num_classes, ds.in_chans, ds.name
    )  # a 64-image validation split: the evaluation is not what is measured
    gen = fit(
        model,
        view,
        TrainConfig(steps=steps, batch_size=64, bn_recalibrate=0, device="cpu"),
        device=torch.device("cpu"),
        eval_idx=small,
        report_every=steps,
    )
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value.metrics["images_per_s"]


def stream_main(args) -> None:
    import time

    import torch

    from trainers.data.config import DataConfig
    from trainers.data.loading import read_dataset

    torch.set_num_threads(1)
    cfg = DataConfig(name="imagefolder", path=args.stream_folder, limit=args.limit or None)
    data, rows = {}, {}
    for mode, above in (("in-memory", None), ("streamed", 0.0)):
        t0 = time.perf_counter()
        data[mode] = read_dataset(DataConfig(**{**cfg.__dict__, "stream_above_mb": above}), 32, 3)
        rows[mode] = {"set-up s": time.perf_counter() - t0, "batches 1 thread": batch_rate(data[mode].x_train)}
    x = data["streamed"].x_train
    x.threads = args.threads
    rows["streamed"][f"batches {args.threads} threads"] = batch_rate(x)
    x.threads = 1
    for _ in range(args.repeats):  # alternated, best of each: the machine may be shared
        for mode, ds in data.items():
            rows[mode]["fit img/s"] = max(rows[mode].get("fit img/s", 0.0), fit_rate(ds))
    n = len(x) + len(data["streamed"].x_val)
    print(
        f"{args.stream_folder}: {n:,} images at 32 px; random batches of 256 (img/s); fit: 30 steps of 64, "
        f"1 torch thread, best of {args.repeats}"
    )
    for mode, r in rows.items():
        print(f"{mode:9s} " + "  ".join(f"{k} {v:8.1f}" if k.endswith(" s") else f"{k} {v:8.0f}" for k, v in r.items()))
    m, s_ = rows["in-memory"], rows["streamed"]
    print(
        f"streamed / in-memory: set-up {s_['set-up s'] / m['set-up s']:.3f}x, batches "
        f"{s_['batches 1 thread'] / m['batches 1 thread']:.3f}x (1 decode thread), "
        f"{s_[f'batches {args.threads} threads'] / m['batches 1 thread']:.3f}x ({args.threads} decode threads), "
        f"fit {s_['fit img/s'] / m['fit img/s']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", default=str(ROOT / "data" / "cifar10-train.npz"))
    ap.add_argument("--limit", type=int, default=0, help="keep this many images (0: all)")
    ap.add_argument("--before", default="dd3b4e6", help="git revision with the float32 loader ('' to skip)")
    ap.add_argument("--stream-folder", help="an image folder: compare streaming it against loading it")
    ap.add_argument("--threads", type=int, default=2, help="decode threads of the streamed batches (with 1)")
    ap.add_argument("--repeats", type=int, default=3, help="fit measurements per mode, alternated (best kept)")
    args = ap.parse_args()
    if args.stream_folder:
        return stream_main(args)
    with tempfile.TemporaryDirectory() as tmp:
        npz = npz_or_random(args.npz, tmp)
        modes = ["uint8", "float32"] + (["before"] if args.before else [])
        before_dir = before_package(args.before, Path(tmp)) if args.before else ""
        rows = [measure(m, npz, args.limit, before_dir) for m in modes]
    print(f"source {args.npz}, {rows[0]['images']:,} images at 32x32x3, torch {__import__('torch').__version__}")
    print(f"{'mode':8s} {'stored':14s} {'images MB':>10s} {'RSS +MB':>8s} {'peak +MB':>9s} {'batch of 256':>13s}")
    mb = 1e6
    for r in rows:
        print(
            f"{r['mode']:8s} {r['stored']:14s} {r['data_bytes'] / mb:10.1f} {(r['rss'] - r['base_rss']) / mb:8.1f} "
            f"{(r['peak'] - r['base_rss']) / mb:9.1f} {r['batch_us']:10.0f} us"
        )
    new = rows[0]
    for r in rows[1:]:
        print(
            f"{r['mode']} / uint8: images {r['data_bytes'] / new['data_bytes']:.2f}x, resident "
            f"{(r['rss'] - r['base_rss']) / (new['rss'] - new['base_rss']):.2f}x, peak "
            f"{(r['peak'] - r['base_rss']) / (new['peak'] - new['base_rss']):.2f}x; a normalised batch from "
            f"uint8 takes {new['batch_us'] / r['batch_us']:.2f}x the time of one from {r['mode']}"
        )


if __name__ == "__main__":
    main()
