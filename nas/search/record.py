"""The trial record: one finished trial as ``trials.jsonl`` holds it, built in one place.

Every record a search writes (a trained candidate, a worker that failed, a trial stopped early, a trial
recovered from the Optuna study) is a :class:`TrialRecord`; on disk it is one flat JSON object per line, with
each objective's value under its own name (``generalization``, ``capacity``, ``latency``, ...), so files
written before the registry of objectives read the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainers.objectives.registry import OBJECTIVES, Objective

__all__ = ["TrialRecord", "axis_values"]

_FIELDS = ("id", "arch", "arch_str", "number", "tune_trial_id", "status", "reason", "score", "metrics", "history")


@dataclass
class TrialRecord:
    """One finished trial.

    Args:
        values: the objectives measured for it, by name (a failed training may still carry a latency).
        extra: anything else recorded beside (``recovered_from``, ...).
    """

    id: str
    arch: dict[str, Any]
    arch_str: str
    number: int | None
    tune_trial_id: str | None
    status: str
    reason: str = ""
    score: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_trial(cls, arch, number: int | None, tune_trial_id: str | None, status: str, **kw: Any) -> TrialRecord:
        """A record of ``arch`` (an :class:`~nas.model.arch.Architecture`) and the trial that ran it."""
        return cls(
            id=arch.id,
            arch=arch.to_dict(),
            arch_str=str(arch),
            number=number,
            tune_trial_id=tune_trial_id,
            status=status,
            **kw,
        )

    @classmethod
    def from_payload(cls, arch, number: int | None, tune_trial_id: str | None, payload: dict[str, Any]) -> TrialRecord:
        """The record of a worker's final result (``TrialResult.to_dict()`` with the worker's metrics):
        generalization and capacity from the result, every other objective from its metrics."""
        metrics = payload["metrics"]
        values = {"generalization": payload["generalization"], "capacity": payload["capacity"]}
        values.update({k: float(metrics[k]) for k in OBJECTIVES if k not in values and k in metrics})
        return cls.of_trial(
            arch,
            number,
            tune_trial_id,
            payload["status"],
            reason=payload["reason"],
            score=payload["score"],
            values=values,
            metrics=metrics,
            history=payload["history"],
        )

    def to_json(self) -> dict[str, Any]:
        """The flat dict written to ``trials.jsonl``."""
        out = {k: getattr(self, k) for k in _FIELDS[:7]}
        for name in ("generalization", "capacity"):  # always present, as in every trials.jsonl so far
            out[name] = float(self.values.get(name, OBJECTIVES[name].failed))
        out.update({k: float(v) for k, v in self.values.items() if k not in out})
        out.update({"score": float(self.score), "metrics": self.metrics, "history": self.history, **self.extra})
        return out


def axis_values(rec: dict[str, Any], objectives: Sequence[Objective]) -> list[float]:
    """The values to tell Optuna for a record (a dict from ``trials.jsonl``): each objective's own value
    for an ``ok`` trial, its ``failed`` value otherwise (and where the record lacks it)."""
    ok = rec.get("status") == "ok"
    return [float(rec[o.name]) if ok and o.name in rec else o.failed for o in objectives]
