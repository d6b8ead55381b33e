"""Cost-model speed: per-candidate time of `count_cost` (cold and cached) against building the module on
the meta device and summing parameters (the reference), for a small 32-px candidate and CoAtNet-4 at 224.

    .venv/bin/python scripts/bench_cost.py
"""

from __future__ import annotations

import time

import torch

from nas import Architecture, build_model
from nas.model.cost import clear_cost_cache, count_cost
from nas.model.presets import get


def per_call(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    cases = [
        ("small C-C-T-T @32", Architecture.parse("C-C-T-T L=2,1,2,2,1 D=16,32,64,96,128"), 32, 10, 1),
        ("coatnet-4 @224", get("coatnet-4"), 224, 1000, 3),
    ]
    print(f"{'candidate':<20} {'cold count_cost':>16} {'cached':>10} {'meta build':>12} {'meta/cold':>10}")
    for name, arch, size, classes, chans in cases:

        def cold():
            clear_cost_cache()
            count_cost(arch, size, classes, chans)

        def meta():
            with torch.device("meta"):
                sum(p.numel() for p in build_model(arch, classes, size, chans).parameters())

        t_cold = per_call(cold, 200)
        t_hot = per_call(lambda: count_cost(arch, size, classes, chans), 2000)
        t_meta = per_call(meta, 3)
        print(
            f"{name:<20} {t_cold * 1e6:>13.1f} us {t_hot * 1e6:>7.2f} us {t_meta * 1e3:>9.1f} ms "
            f"{t_meta / t_cold:>9.0f}x"
        )


if __name__ == "__main__":
    main()
