"""What keeping S3's map costs per proxy trial, against the halving geometry and a stride-1 stem, timed.

    python scripts/bench_stage_stride.py                 # 10 architectures of coatnet-cifar.yaml, 2 repeats

For a sample of the space's candidates stratified over layouts (the conv-stem layouts: ViT_REL has no
stages that downsample), trains each with the space's own proxy protocol in three geometries, in one
process with one thread, alternating the order between repeats: "halving" (stride-2 stem, every stage halving
the map: S1..S4 at 8/4/2/1 for 32 px, the space before issue 20), with ``strides=2,2,1,2`` (S3 keeps S2's map:
8/4/4/2, the shipped space now) and with a stride-1 stem (16/8/4/2). Prints each one's seconds and the median
ratios to the first, with the MACs ratio of ``count_cost`` beside them. Needs data/cifar10-train.npz
(scripts/prepare_cifar.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time

import torch

from nas.model.cost import count_cost
from nas.search.config import load_experiment
from trainers.data.loading import load_dataset
from trainers.training.proxy import train_candidate

GEOMETRIES = {  # "halving": coatnet-cifar.yaml before S3 kept its map
    "halving": {"strides": (2, 2, 2, 2), "stem_stride": 2},
    "S3 stride 1": {"strides": (2, 2, 1, 2), "stem_stride": 2},
    "stem stride 1": {"strides": (2, 2, 2, 2), "stem_stride": 1},
}


def sample(space, per_layout: int, seed: int, vit: bool = False) -> list:
    """``per_layout`` distinct candidates of each layout of ``space`` (ViT_REL only with ``vit``), by ``seed``."""
    rng, out, seen = random.Random(seed), [], set()
    layouts = [lay for lay in space.layouts if vit or lay != "ViT_REL"]
    for lay in layouts:
        for _ in range(20_000):
            if sum(a.layout_name == lay for a in out) == per_layout:
                break
            a = space.sample(rng)
            if a.layout_name == lay and a.id not in seen:
                out.append(a)
                seen.add(a.id)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="coatnet-cifar.yaml")
    p.add_argument("--per-layout", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    exp = load_experiment(a.space)
    size, k, chans = exp.space.image_size, 10, exp.space.in_chans
    data = load_dataset(exp.train.data, size, chans)
    archs = sample(exp.space, a.per_layout, a.seed)
    train_candidate(archs[0], data, exp.train, exp.objective)  # warm-up (the space's own geometry)
    ratios: dict[str, list[float]] = {g: [] for g in GEOMETRIES if g != "halving"}
    macs: dict[str, list[float]] = {g: [] for g in ratios}
    for arch in archs:
        variants = {g: dataclasses.replace(arch, **kw) for g, kw in GEOMETRIES.items()}
        secs: dict[str, list[float]] = {g: [] for g in variants}
        order = list(variants)
        for i in range(a.repeats):
            for g in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                r = train_candidate(variants[g], data, exp.train, exp.objective)
                secs[g].append(time.perf_counter() - t0)
                assert r.status == "ok", f"{variants[g]}: {r.status} {r.reason}"
        base = statistics.median(secs["halving"])
        base_macs = count_cost(variants["halving"], size, k, chans).macs
        line = [f"{str(variants['halving'])[:52]:52s} halving {base:5.2f} s"]
        for g in ratios:
            ratios[g].append(statistics.median(secs[g]) / base)
            macs[g].append(count_cost(variants[g], size, k, chans).macs / base_macs)
            line.append(f"{g} x{ratios[g][-1]:.2f} (MACs x{macs[g][-1]:.2f})")
        print(", ".join(line), flush=True)
    print()
    for g in ratios:
        print(
            f"{g}: x{statistics.median(ratios[g]):.2f} the seconds of a proxy trial (median of {len(archs)}; "
            f"min {min(ratios[g]):.2f}, max {max(ratios[g]):.2f}); MACs x{statistics.median(macs[g]):.2f}"
        )
    print(f"{a.space}, {a.repeats} repeats alternating, torch {torch.__version__}, 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
