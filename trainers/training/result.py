"""`TrialResult`: what one proxy training returns (the contract between trainers and the search)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["TrialResult", "Status", "FAILED_STATUSES"]

Status = Literal["ok", "diverged", "oom", "error", "infeasible"]
FAILED_STATUSES = ("diverged", "oom", "error", "infeasible")


@dataclass
class TrialResult:
    """Outcome of one candidate's proxy training.

    ``generalization`` and ``capacity`` are the paper's two axes, each in [0, 1], higher is better
    (definitions in ``docs/objective.md``); ``score`` is their normalised weighted mean, also in [0, 1].
    A failed trial (any status but ``ok``) carries its ``reason`` and the worst values (0.0).
    ``metrics`` holds every other figure (val_acc, train_acc, gap, train_loss, params, macs,
    images_per_s, wall_s, ...); ``history`` one dict per epoch.
    """

    status: Status
    generalization: float = 0.0
    capacity: float = 0.0
    score: float = 0.0
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, status: Status, reason: str, **metrics: float) -> TrialResult:
        return cls(status=status, reason=reason, metrics=dict(metrics))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            **{
                k: data[k]
                for k in ("status", "generalization", "capacity", "score", "reason", "metrics", "history")
                if k in data
            }
        )

    def __post_init__(self) -> None:
        for name in ("generalization", "capacity", "score"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
