"""A trainer that returns at once (``search.trainer: instant_trainer:train``), for measuring the search driver.

``scripts/bench_driver.py`` uses it: a trial then costs the worker nothing (no torch work, no data touched),
so what a search's wall time measures is the driver (Optuna's ask/tell, records, leaderboard, progress) and
Ray Tune's hand-off of each trial.

The result is a deterministic function of the architecture, with some structure for a sampler to learn, as a
real proxy has: every feature of the candidate (each stage's block letter, depth and width, each block
option) has a fixed weight drawn from a hash of its name, generalization and capacity are the mean of those
weights (under two salts) plus a small per-architecture term from ``arch.id``. So TPE and NSGA-II converge on
a region and propose candidates already trained there, as they do on a real search. It reports no rounds
(``on_epoch`` is not called): a scheduler has nothing to act on.

Importable on the driver and on every Ray worker: put ``scripts/`` on ``PYTHONPATH`` of the process that
starts Ray (a local instance) or of every ``ray start`` (a cluster); bench_driver.py does both.
"""

from __future__ import annotations

import hashlib

from trainers.training.result import TrialResult

NOISE = 0.2  # share of the per-architecture term (the rest is the learnable per-feature weights)


def unit(text: str) -> float:
    """A fixed number in [0, 1) for ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def features(arch) -> list[str]:
    """The candidate's features: S1..S4 block letters, S0..S4 depths and widths, the block options."""
    out = [f"B{i + 1}={b}" for i, b in enumerate(arch.layout)]
    out += [f"L{i}={d}" for i, d in enumerate(arch.depths)]
    out += [f"D{i}={w}" for i, w in enumerate(arch.widths)]
    out += [f"{k}={v}" for k, v in sorted(arch.to_dict().get("options", {}).items())]
    return out


def axes_of(arch) -> tuple[float, float]:
    """(generalization, capacity) of ``arch``, each in [0, 1)."""
    feats = features(arch)
    gen = sum(unit("g:" + f) for f in feats) / len(feats)
    cap = sum(unit("c:" + f) for f in feats) / len(feats)
    return (1 - NOISE) * gen + NOISE * unit("g:" + arch.id), (1 - NOISE) * cap + NOISE * unit("c:" + arch.id)


def train(arch, dataset, train, objective, *, num_threads, on_epoch, image_size) -> TrialResult:
    """The ``search.trainer`` contract (docs/api.md): a finished, deterministic result at once."""
    gen, cap = axes_of(arch)
    return TrialResult(status="ok", generalization=gen, capacity=cap, score=(gen + cap) / 2, metrics={"wall_s": 0.0})
