"""Sane limits of every count, size and range a user gives (YAML keys and command-line flags).

Each limit is far above any sensible use and low enough that a value inside it cannot hang the cost
model or the dry run, allocate unbounded memory before training, or overflow a seed. A value outside
its range is a one-paragraph :class:`~nas.errors.ConfigError` naming the file, the key and the range.
The table is documented in docs/space.md ("Limits") and docs/search.md; tests/test_bad_input.py
exercises it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from nas.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy and torch seeds are 32-bit
MAX_CHOICES = 1024  # values one choice list (or {min, max, step} range) of the space may expand to
MAX_GRID = 100_000  # candidates the grid sampler may queue

# dotted key (the last part(s) of the path) -> (lowest, highest) allowed, inclusive
RANGES: dict[str, tuple[float, float]] = {
    # space: (space.py checks these per choice, with the choice-list length above)
    "space.input.image_size": (32, 1024),
    "space.input.channels": (1, 64),
    "depth": (1, 64),  # blocks per stage (and 3x3 convs of the stem)
    "width": (1, 8192),  # channels of a stage or the stem
    "patch_size": (1, 1024),
    # model configs (nas-train CONFIG)
    "image_size": (8, 1024),
    "num_classes": (1, 100_000),
    "in_chans": (1, 64),
    "depths": (1, 64),
    "widths": (1, 8192),
    # train:
    "train.epochs": (1, 10_000),
    "train.steps": (1, 100_000_000),
    "train.batch_size": (2, 65_536),
    "train.eval_batch_size": (1, 65_536),
    "train.lr": (0, 10),
    "train.weight_decay": (0, 10),
    "train.grad_clip": (0, 1e6),
    "train.seed": (0, SEED_MAX),
    "train.data.seed": (0, SEED_MAX),
    "train.data.limit": (2, 100_000_000),
    "train.data.synthetic_samples": (4, 1_000_000),
    "train.data.synthetic_classes": (2, 100_000),
    # objective:
    "objective.train_eval_limit": (1, 100_000_000),
    "objective.weight_generalization": (0, 1e6),
    "objective.weight_capacity": (0, 1e6),
    # search:
    "search.trials": (1, 100_000),
    "search.seed": (0, SEED_MAX),
    "search.max_concurrent": (1, 4096),
    "search.cpus_per_trial": (0, 1024),
    "search.gpus_per_trial": (0, 64),
    "search.max_retries": (0, 100),
    "search.max_skips": (1, 100_000),
    "search.startup_trials": (1, 10_000),
    "search.scheduler.grace_period": (1, 1_000_000),
    "search.scheduler.reduction_factor": (1, 1000),
    "search.scheduler.max_t": (1, 1_000_000),
    "search.time_budget": (1, 30 * 86_400),  # seconds (a duration such as 2h: nas.search.config.parse_duration)
    # study (nas-fidelity's study YAML):
    "study.architectures": (2, 10_000),
    "study.seed": (0, SEED_MAX),
    "study.seeds": (0, SEED_MAX),  # each seed of proxies.NAME.seeds and reference.seeds
    "study.seeds_per_protocol": (1, 100),  # how many seeds one protocol lists
    "study.proxies": (1, 100),  # how many proxy protocols
    "study.zero_cost_batch": (2, 4096),
    "study.max_concurrent": (1, 4096),
    "study.cpus_per_trial": (0, 1024),  # and > 0 (a study's worker uses them as torch threads)
    "study.gpus_per_trial": (0, 64),
    "study.max_retries": (0, 100),
    "study.bootstrap": (10, 100_000),
    "study.ceiling_architectures": (3, 10_000),
    "study.reference_architectures": (3, 10_000),
    # environment only (trainers.data.download)
    "COATNAS_DOWNLOAD_DEADLINE_S": (1, 7 * 86_400),  # a whole download, seconds
    "COATNAS_DOWNLOAD_MAX_MB": (1, 1_000_000),  # an archive's size, MB
    # command-line only
    "max_jobs": (1, 100_000_000),  # nas-fidelity --max-jobs
    "samples": (1, 10_000),  # nas-search --dry-run --samples
    "threads": (1, 1024),  # nas-train --threads
}


def _fmt(v: float) -> str:
    return f"{int(v):,}".replace(",", "_") if float(v).is_integer() and abs(v) >= 10_000 else f"{v:g}"


def allowed_text(key: str) -> str:
    lo, hi = RANGES[key]
    return f"from {_fmt(lo)} to {_fmt(hi)}"


def check_value(value: Any, key: str, file: str | None, shown: str | None = None) -> None:
    """Raise :class:`ConfigError` when ``value`` (a number or ``None``) is outside ``RANGES[key]``."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = RANGES[key]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, shown or key, "must be a finite number", allowed_text(key), value=value)
    if not lo <= value <= hi:
        raise ConfigError(file, shown or key, "is outside its sane range", allowed_text(key), value=value)


def check_ranges(obj: Any, prefix: str, file: str | None) -> None:
    """Check every field of the dataclass ``obj`` (recursively) that has an entry in :data:`RANGES`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, key, file)
        elif key in RANGES:
            check_value(value, key, file)


def int_choice_limit(key: str) -> tuple[str, int] | None:
    """``(RANGES key, highest value)`` for a space choice key such as ``space.stages.S2.depth``."""
    for name in (key, key.rsplit(".", 1)[-1]):
        if name in RANGES:
            return name, int(RANGES[name][1])
    return None
