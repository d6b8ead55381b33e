"""The search objective: the paper's two axes (generalization, capacity), their score and Pareto front.

Definitions and the reasons for them: ``docs/objective.md``. This module knows nothing about torch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ObjectiveConfig", "generalization", "capacity", "score", "round_axes", "pareto_mask"]


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
    """

    mode: Literal["both", "single"] = "both"
    subset_fraction: float = field(default=0.2, metadata={"check": lambda v: 0.0 < v <= 1.0,
                                                          "allowed": "a number in (0, 1]"})
    gap_penalty: float = field(default=0.25, metadata={"check": lambda v: 0.0 <= v <= 1.0,
                                                       "allowed": "a number from 0 to 1"})
    capacity_metric: Literal["accuracy", "loss", "mean"] = "mean"
    weight_generalization: float = field(default=1.0, metadata={"check": lambda v: v >= 0,
                                                                "allowed": "a number >= 0"})
    weight_capacity: float = field(default=1.0, metadata={"check": lambda v: v >= 0, "allowed": "a number >= 0"})
    train_eval_limit: int = field(default=4096, metadata={"check": lambda v: v >= 1, "allowed": "an integer >= 1"})

    def __post_init__(self) -> None:
        if self.weight_generalization + self.weight_capacity <= 0:
            from nas.errors import ConfigError
            raise ConfigError(None, "objective.weight_generalization",
                              "and `objective.weight_capacity` are both 0", "at least one weight > 0",
                              value=(self.weight_generalization, self.weight_capacity))


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


def pareto_mask(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points are on the Pareto front when maximising both coordinates.

    A point is off the front when another point is at least as good on both axes and strictly better on
    one. Duplicates do not dominate each other: equal points are all on the front, or all off it.
    A point with a NaN coordinate is never on the front and dominates nothing.
    """
    pts = [(float(a), float(b)) for a, b in points]
    valid = [not (math.isnan(a) or math.isnan(b)) for a, b in pts]
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
