"""Memory per trial worker: the dataset loaded by every worker (per process) against one copy in Ray's
object store read by all of them (``trainers.data.shared``), in the same run.

    .venv/bin/python scripts/bench_memory.py [--npz data/cifar10-train.npz] [--workers 2] [--image-size 32]

For each mode, ``--workers`` Ray actors (1 CPU each, as trial workers) import torch and the loader, read
their memory, get the dataset the way a trial does (``process``: ``trainers.data.loading.load_dataset``;
``shared``: ``trainers.data.shared.worker_dataset`` over the driver's ``share_datasets``), touch every training
image once (an epoch of batches of 256, so that shared pages are mapped in) and read their memory again.
Memory is from ``/proc/<pid>/smaps_rollup``: RSS counts shared pages in full in every process, PSS divides
them among the processes mapping them, USS (private pages) is what the worker alone costs. A missing
``--npz`` is replaced by random uint8 images of the CIFAR-10 shape (``scripts/prepare_cifar.py`` makes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def smaps() -> dict[str, int]:
    """RSS, PSS and USS (bytes) of this process."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    for line in open("/proc/self/smaps_rollup"):
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        kb = int(parts[0]) * 1024
        if key == "Rss":
            out["rss"] = kb
        elif key == "Pss":
            out["pss"] = kb
        elif key in ("Private_Clean", "Private_Dirty"):
            out["uss"] += kb
    return out


class Worker:
    """One trial worker's view: load the dataset as ``mode`` says and report memory before and after."""

    def ready(self) -> int:
        import torch  # noqa: F401 - the baseline includes torch and the loader, as in a trial worker

        import trainers.data.loading  # noqa: F401
        import trainers.data.shared  # noqa: F401

        torch.set_num_threads(1)
        return os.getpid()

    def load(self, mode: str, cfg, size: int, shared) -> dict:
        import gc

        import torch

        from trainers.data.loading import load_dataset
        from trainers.data.shared import worker_dataset

        gc.collect()
        before = smaps()
        t0 = time.perf_counter()
        ds = load_dataset(cfg, size, 3) if mode == "process" else worker_dataset(cfg, size, 3, shared)
        load_s = time.perf_counter() - t0
        total = 0.0
        for i in range(0, len(ds.x_train), 256):  # one pass over every training image
            total += float(ds.x_train[torch.arange(i, min(i + 256, len(ds.x_train)))][:, :, 0, 0].sum())
        gc.collect()
        after = smaps()
        return {
            "before": before,
            "after": after,
            "load_s": load_s,
            "images": len(ds.x_train) + len(ds.x_val),
            "stored": str(ds.x_train.raw.dtype),
            "checksum": total,
        }


def run_mode(ray, mode: str, cfg, size: int, workers: int) -> tuple[list[dict], float]:
    from trainers.data.shared import share_datasets

    actor = ray.remote(num_cpus=1)(Worker)
    procs = [actor.remote() for _ in range(workers)]
    ray.get([p.ready.remote() for p in procs])
    t0 = time.perf_counter()
    shared = share_datasets([cfg], size, 3) if mode == "shared" else None
    share_s = time.perf_counter() - t0
    rows = ray.get([p.load.remote(mode, cfg, size, shared) for p in procs])
    for p in procs:
        ray.kill(p)
    del shared
    return rows, share_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", default=str(ROOT / "data" / "cifar10-train.npz"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=32, help="32: uint8 as stored; another size: float32")
    args = ap.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from bench_data import npz_or_random  # scripts/ is on sys.path when a script runs

    from trainers.data.config import DataConfig

    with tempfile.TemporaryDirectory() as tmp:
        npz = npz_or_random(args.npz, tmp)
        cfg = DataConfig(name="npz", path=str(Path(npz).absolute()))
        ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=True, configure_logging=False)
        try:
            results = {m: run_mode(ray, m, cfg, args.image_size, args.workers) for m in ("process", "shared")}
        finally:
            ray.shutdown()
    mb = 1e6
    first = results["process"][0][0]
    print(
        f"source {args.npz}: {first['images']:,} images at {args.image_size} px stored {first['stored']}, "
        f"{args.workers} concurrent workers; memory added by getting the dataset and one pass over it"
    )
    print(f"{'mode':8s} {'worker':>6s} {'RSS +MB':>8s} {'PSS +MB':>8s} {'USS +MB':>8s} {'get s':>6s}")
    mean = {}
    for mode, (rows, share_s) in results.items():
        for i, r in enumerate(rows):
            d = {k: (r["after"][k] - r["before"][k]) / mb for k in ("rss", "pss", "uss")}
            print(f"{mode:8s} {i:6d} {d['rss']:8.1f} {d['pss']:8.1f} {d['uss']:8.1f} {r['load_s']:6.2f}")
        mean[mode] = {
            k: sum((r["after"][k] - r["before"][k]) / mb for r in rows) / len(rows) for k in ("rss", "pss", "uss")
        }
        if mode == "shared":
            print(f"shared: the driver's loading task took {share_s:.2f} s (one load for the node)")
    assert len({r["checksum"] for rows, _ in results.values() for r in rows}) == 1, "the modes saw other data"
    p, s = mean["process"], mean["shared"]
    print(
        "per worker, process / shared: "
        + ", ".join(
            f"{k.upper()} {p[k]:.1f} / {s[k]:.1f} MB = {p[k] / s[k]:.1f}x"
            if s[k] > 0.05
            else f"{k.upper()} {p[k]:.1f} / {s[k]:.1f} MB"
            for k in ("rss", "pss", "uss")
        )
    )


if __name__ == "__main__":
    main()
