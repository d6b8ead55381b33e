"""Zero-cost pre-screen: score many sampled candidates without training, queue the best as the first trials.

The ``search.prescreen`` section turns it on. At the start of a new run the driver samples ``candidates``
distinct architectures within the budgets, scores each with one training-free proxy of
``trainers.objectives.zerocost`` (a fraction of a second each), and queues the best ``keep`` in the Optuna study, so
they are the first trials trained (in place of random start-up trials); the sampler takes over from there.
docs/fidelity.md measures which proxy ranks CIFAR-10 candidates best and what a pre-screen keeps.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrescreenConfig:
    """The ``search.prescreen`` section.

    Args:
        proxy: the zero-cost proxy, a name of ``trainers.objectives.registry.ZERO_COST`` (``snip``,
            ``naswot``, ``grad_norm``, ...; ``null``: no pre-screen).
        candidates: architectures sampled and scored.
        keep: the best this many are queued as the first trials.
        batch_size: images of the one batch each score uses.
    """

    proxy: str | None = None
    candidates: int = field(default=128, metadata={"check": lambda v: 1 <= v <= 100_000, "allowed": "1..100000"})
    keep: int = field(default=8, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    batch_size: int = field(default=64, metadata={"check": lambda v: 2 <= v <= 4096, "allowed": "2..4096"})


def prescreen(exp: Any, seed: int = 0) -> list[tuple[Any, float]]:
    """``(architecture, proxy value)`` of the sampled candidates, best first (NaN values last)."""
    import math

    import torch

    from nas.model.cost import count_cost
    from trainers.data.loading import load_dataset
    from trainers.objectives.zerocost import zero_cost_scores

    cfg: PrescreenConfig = exp.search.prescreen
    space = exp.space
    dataset = load_dataset(exp.train.data, space.image_size, space.in_chans)
    b = space.budgets
    rng = random.Random(seed)
    archs, seen = [], set()
    for _ in range(50 * cfg.candidates):
        if len(archs) >= min(cfg.candidates, space.size()):
            break
        a = space.sample(rng)
        if a.id in seen:
            continue
        seen.add(a.id)
        if not b.unlimited and not b.allows(
            count_cost(a, image_size=space.image_size, num_classes=dataset.num_classes, in_chans=space.in_chans)
        ):
            continue
        archs.append(a)
    threads = torch.get_num_threads()
    scored = []
    try:
        torch.set_num_threads(1)
        for a in archs:
            v = zero_cost_scores(a, dataset, [cfg.proxy], batch_size=cfg.batch_size, seed=seed)[cfg.proxy]
            scored.append((a, v))
    finally:
        torch.set_num_threads(threads)
    return sorted(scored, key=lambda av: (math.isnan(av[1]), -av[1] if not math.isnan(av[1]) else 0.0))


def enqueue_prescreened(study: Any, exp: Any, seed: int = 0) -> tuple[int, int, float]:
    """Queue the best ``keep`` pre-screened candidates in ``study``; return (queued, scored, seconds)."""
    t0 = time.perf_counter()
    cfg: PrescreenConfig = exp.search.prescreen
    ranked = prescreen(exp, seed)
    for rank, (a, v) in enumerate(ranked[: cfg.keep], 1):
        study.enqueue_trial(
            exp.space.encode(a),
            user_attrs={"prescreen": cfg.proxy, "prescreen_value": float(v), "prescreen_rank": rank},
        )
    return min(cfg.keep, len(ranked)), len(ranked), time.perf_counter() - t0
