"""The search objectives: one registry of named axes, the paper's two (generalization, capacity), their
score, and the Pareto front over any number of axes.

:data:`OBJECTIVES` is the one table every consumer reads (Optuna's directions and metric names, trial
records, the leaderboard and its Pareto front, the report, the per-round reports of a trial): a new axis is
an entry here and, when a worker measures it, a function in a room of its own (``trainers/objectives/latency.py``
measures ``latency``). Definitions and the reasons for them: ``docs/objective.md``. No torch here.

:data:`ZERO_COST` is the registry of the training-free proxies (``trainers/objectives/zerocost.py``): their
names are read here, by the config layer, without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nas.registry import Registry, load

DEFAULT_AXES = ("generalization", "capacity")


@dataclass(frozen=True)
class LatencyConfig:
    """How the ``latency`` objective is measured (the ``objective.latency`` section; ``trainers.objectives.latency``).

    Args:
        batch_size: images per forward pass.
        repeats: timed forward passes; the median is the latency.
        warmup: untimed forward passes before them.
        max_ms: a budget: a candidate slower than this is recorded ``infeasible`` before any training
            (``null``: no budget). Measured on the worker's own device and threads.
    """

    batch_size: int = field(
        default=1, metadata={"check": lambda v: 1 <= v <= 4096, "allowed": "an integer from 1 to 4096"}
    )
    repeats: int = field(
        default=20, metadata={"check": lambda v: 3 <= v <= 10_000, "allowed": "an integer from 3 to 10000"}
    )
    warmup: int = field(default=3, metadata={"check": lambda v: 0 <= v <= 1000, "allowed": "an integer from 0 to 1000"})
    max_ms: float | None = field(
        default=None,
        metadata={"check": lambda v: v is None or v > 0, "allowed": "a number of milliseconds > 0, or null"},
    )


@dataclass(frozen=True)
class ObjectiveConfig:
    """How a trial turns trainings into the two axes (the ``objective:`` section).

    Args:
        mode: ``both`` trains twice (a small subset for generalization, the full split for capacity);
            ``single`` trains once on the full split and reads both axes from it.
        subset_fraction: share of each class of the training split used by the generalization training.
        gap_penalty: generalization = val_acc - gap_penalty * max(0, train_acc - val_acc).
        capacity_metric: ``accuracy`` (final training accuracy), ``loss`` (1 - loss / ln K) or ``mean``.
        weight_generalization: weight of generalization in ``score``.
        weight_capacity: weight of capacity in ``score``.
        train_eval_limit: training examples evaluated for the final fit (stratified), to bound its cost.
        val_eval_limit: validation examples measured (a fixed stratified subset of about this many, rounded
            per class, at least one per class, chosen by ``train.seed``), to bound the cost of a measurement;
            ``None``: the whole validation split.
        axes: the objectives the search optimises jointly (Optuna's directions, the Pareto front), names of
            :data:`OBJECTIVES`; ``score`` stays the weighted mean of generalization and capacity.
        latency: how ``latency`` is measured, and its optional budget ``max_ms``.
    """

    mode: Literal["both", "single"] = "both"
    subset_fraction: float = field(
        default=0.2, metadata={"check": lambda v: 0.0 < v <= 1.0, "allowed": "a number in (0, 1]"}
    )
    gap_penalty: float = field(
        default=0.25, metadata={"check": lambda v: 0.0 <= v <= 1.0, "allowed": "a number from 0 to 1"}
    )
    capacity_metric: Literal["accuracy", "loss", "mean"] = "mean"
    weight_generalization: float = field(default=1.0, metadata={"check": lambda v: v >= 0, "allowed": "a number >= 0"})
    weight_capacity: float = field(default=1.0, metadata={"check": lambda v: v >= 0, "allowed": "a number >= 0"})
    train_eval_limit: int = field(default=4096, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})
    val_eval_limit: int | None = field(
        default=None,
        metadata={
            "check": lambda v: v is None or v >= 1,
            "allowed": "an integer >= 1 (validation images measured), or null (the whole validation split)",
        },
    )
    axes: tuple[str, ...] = DEFAULT_AXES
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def __post_init__(self) -> None:
        from nas.errors import ConfigError

        if self.weight_generalization + self.weight_capacity <= 0:
            raise ConfigError(
                None,
                "objective.weight_generalization",
                "and `objective.weight_capacity` are both 0",
                "at least one weight > 0",
                value=(self.weight_generalization, self.weight_capacity),
            )
        unknown = [a for a in self.axes if a not in OBJECTIVES]
        if unknown or not self.axes or len(set(self.axes)) != len(self.axes):
            raise ConfigError(
                None,
                "objective.axes",
                f"names an unknown objective ({unknown[0]!r})" if unknown else "is empty or names an objective twice",
                f"a list of distinct objectives from: {', '.join(OBJECTIVES)}",
                value=list(self.axes),
            )


@dataclass(frozen=True)
class Objective:
    """One named axis of the search.

    Args:
        name: the key in trial records, Optuna's metric name and the leaderboard column.
        direction: ``maximize`` or ``minimize``.
        failed: the value a failed trial gets for it (the worst plausible), unless it was measured.
        description: what it measures, for docs and reports.
        unit: shown after values (``ms``).
        measure: ``module:function`` a worker calls to measure it before training, as
            ``fn(arch, cfg, image_size=, in_chans=, num_classes=, device=, threads=) -> float``;
            ``None``: the trainer's :class:`~trainers.training.result.TrialResult` carries it.
        limit: the budget the objective config sets on it (``cfg -> bound or None``); a candidate beyond it
            is ``infeasible`` without training.
    """

    name: str
    direction: Literal["maximize", "minimize"]
    failed: float
    description: str
    unit: str = ""
    measure: str | None = None
    limit: Callable[[ObjectiveConfig], float | None] | None = None

    def bound(self, cfg: ObjectiveConfig) -> float | None:
        """The budget ``cfg`` sets on this objective, if any."""
        return self.limit(cfg) if self.limit is not None else None

    def beyond(self, value: float, bound: float) -> bool:
        """``value`` is worse than the budget ``bound``."""
        return value > bound if self.direction == "minimize" else value < bound


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "generalization",
            "maximize",
            0.0,
            "validation accuracy after training on a small subset, less a "
            "penalty for the train/validation gap (docs/objective.md)",
        ),
        Objective("capacity", "maximize", 0.0, "how well a training on the full split fits it (docs/objective.md)"),
        Objective(
            "latency",
            "minimize",
            1e9,
            "median inference latency of one batch on the worker's device (objective.latency)",
            unit="ms",
            measure="trainers.objectives.latency:measure_latency",
            limit=lambda cfg: cfg.latency.max_ms,
        ),
    )
}


# zero-cost proxy name -> its function (``fn(ProxyInput) -> float``, higher = better; docs in zerocost.py), in
# the order nas-fidelity reports them. search.prescreen.proxy and study.zero_cost name these.
ZERO_COST = Registry(
    "zero-cost proxy",
    {
        name: f"trainers.objectives.zerocost:{name}"
        for name in ("params", "macs", "synflow", "naswot", "grad_norm", "snip", "jacov")
    },
)


def objectives_of(cfg: ObjectiveConfig | Sequence[str] | None) -> tuple[Objective, ...]:
    """The :class:`Objective` of each axis of ``cfg`` (an ObjectiveConfig or axis names; ``None``: the
    default axes), in order."""
    names = DEFAULT_AXES if cfg is None else getattr(cfg, "axes", cfg)
    return tuple(OBJECTIVES[n] for n in names)


def measured_objectives(cfg: ObjectiveConfig) -> list[Objective]:
    """The objectives a worker measures before training under ``cfg``: those with a ``measure`` that are an
    axis of ``cfg`` or have a budget set there."""
    return [o for o in OBJECTIVES.values() if o.measure and (o.name in cfg.axes or o.bound(cfg) is not None)]


def measure_objectives(arch: Any, cfg: ObjectiveConfig, **context: Any) -> tuple[dict[str, float], str]:
    """Measure each of :func:`measured_objectives`. Returns the values and, for a candidate beyond a budget,
    the reason (else ``""``). ``context``: image_size, in_chans, num_classes, device, threads."""
    values: dict[str, float] = {}
    for o in measured_objectives(cfg):
        bound = o.bound(cfg)
        values[o.name] = v = float(load(o.measure)(arch, cfg, **context))
        if bound is not None and o.beyond(v, bound):
            return values, f"{o.name} {v:.4g} {o.unit} is beyond its budget {bound:g} {o.unit}".replace("  ", " ")
    return values, ""


def _clip(v: float) -> float:
    return 0.0 if not math.isfinite(v) else min(1.0, max(0.0, v))


def generalization(val_acc: float, train_acc: float, cfg: ObjectiveConfig) -> float:
    """Validation accuracy minus ``gap_penalty`` times the (positive) train/validation gap, in [0, 1]."""
    return _clip(val_acc - cfg.gap_penalty * max(0.0, train_acc - val_acc))


def capacity(train_acc: float, train_loss: float, num_classes: int, cfg: ObjectiveConfig) -> float:
    """How well the full training split is fitted, in [0, 1] (loss is plain cross-entropy, no smoothing)."""
    fit_loss = _clip(1.0 - train_loss / math.log(max(2, num_classes))) if math.isfinite(train_loss) else 0.0
    if cfg.capacity_metric == "accuracy":
        return _clip(train_acc)
    if cfg.capacity_metric == "loss":
        return fit_loss
    return _clip(0.5 * (_clip(train_acc) + fit_loss))


def score(generalization: float, capacity: float, cfg: ObjectiveConfig) -> float:
    """Weighted mean of the two axes with the weights normalised to sum 1: in [0, 1]."""
    wg, wc = cfg.weight_generalization, cfg.weight_capacity
    return _clip((wg * _clip(generalization) + wc * _clip(capacity)) / (wg + wc))


def round_axes(row: dict, gen: float | None, cfg: ObjectiveConfig, num_classes: int) -> dict[str, float]:
    """The running axes after one training round ``row`` (``regime``, ``val_acc``, ``train_acc``,
    ``train_loss``): generalization from the row itself in the generalization regime (and in ``single``
    mode), else ``gen``, that regime's final value; capacity from the row's fit. The trainer reports these
    each round; a table replay recomputes them the same way."""
    if row["regime"] == "generalization" or cfg.mode == "single" or gen is None:
        g = generalization(row["val_acc"], row["train_acc"], cfg)
    else:
        g = gen
    c = capacity(row["train_acc"], row["train_loss"], num_classes, cfg)
    return {"generalization": g, "capacity": c, "score": score(g, c, cfg)}


def pareto_mask(points: Sequence[Sequence[float]], directions: Sequence[str] | None = None) -> list[bool]:
    """Which points are on the Pareto front (each coordinate maximised, or as ``directions`` says).

    A point is off the front when another point is at least as good on every axis and strictly better on
    one. Duplicates do not dominate each other: equal points are all on the front, or all off it.
    A point with a NaN coordinate is never on the front and dominates nothing.
    """
    signs = [-1.0 if d == "minimize" else 1.0 for d in (directions or ())]
    pts = [tuple(float(v) * (signs[i] if i < len(signs) else 1.0) for i, v in enumerate(p)) for p in points]
    valid = [not any(math.isnan(v) for v in p) for p in pts]
    if all(len(p) == 2 for p in pts):
        return _pareto_2d(pts, valid)
    mask = [False] * len(pts)
    for i, p in enumerate(pts):
        if valid[i]:
            mask[i] = not any(valid[j] and q != p and all(a >= b for a, b in zip(q, p)) for j, q in enumerate(pts))
    return mask


def _pareto_2d(pts: list[tuple[float, ...]], valid: list[bool]) -> list[bool]:
    """:func:`pareto_mask` for two axes, both maximised, in O(n log n)."""
    order = sorted((i for i in range(len(pts)) if valid[i]), key=lambda i: (-pts[i][0], -pts[i][1]))
    mask = [False] * len(pts)
    best_b = -math.inf  # best second coordinate among points with a strictly larger first coordinate
    j = 0
    while j < len(order):
        a = pts[order[j]][0]
        group = [i for i in order[j:] if pts[i][0] == a]
        top_b = pts[group[0]][1]
        for i in group:  # same first coordinate: only the largest second coordinate survives
            mask[i] = pts[i][1] == top_b and top_b > best_b
        best_b = max(best_b, top_b)
        j += len(group)
    return mask
