"""A trainer with a deterministic result and a random duration (``search.trainer: jitter_trainer:train``): the
order in which trials finish changes from run to run, their results do not. For the tests of ordered proposals
(the same seed, the same search, whatever the timing)."""

from __future__ import annotations

import hashlib
import random
import time

from trainers.training.result import TrialResult

_CLOCK = random.SystemRandom()  # not seeded: the timing is meant to differ between runs


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def train(arch, dataset, train, objective, *, num_threads, on_epoch, image_size) -> TrialResult:
    time.sleep(_CLOCK.uniform(0.0, 0.6))
    feats = [f"B{i}={b}" for i, b in enumerate(arch.layout)] + [f"L{i}={d}" for i, d in enumerate(arch.depths)]
    feats += [f"D{i}={w}" for i, w in enumerate(arch.widths)]
    gen = 0.8 * sum(_unit("g:" + f) for f in feats) / len(feats) + 0.2 * _unit("g:" + arch.id)
    cap = 0.8 * sum(_unit("c:" + f) for f in feats) / len(feats) + 0.2 * _unit("c:" + arch.id)
    return TrialResult(status="ok", generalization=gen, capacity=cap, score=(gen + cap) / 2, metrics={"wall_s": 0.0})
