"""The trial record: one finished trial as ``trials.jsonl`` holds it, written and read back in one place.

Every record a search writes (a trained candidate, a worker that failed, a trial stopped early, a trial
recovered from the Optuna study) is a :class:`TrialRecord`; on disk it is one flat JSON object per line, with
each objective's value under its own name (``generalization``, ``capacity``, ``latency``, ...).

Formats (``"format"`` of each line):

- 1: the records written before the format was versioned (no ``format`` key); read as format 2 of kind
  ``search``.
- 2: adds ``"format": 2`` and ``"kind"``: ``search`` for a trial of the search (the only kind so far; a later
  ``verification`` kind, a candidate re-trained under another protocol and seed, has room beside it).

:meth:`TrialRecord.from_json` is the one reader of a line: it refuses (:class:`nas.fsio.Invalid`) a record of
the wrong shape, a NaN, an architecture that does not parse, a format or kind this version does not know.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nas.errors import UserError
from nas.fsio import Invalid, record_format
from nas.limits import check_value
from trainers.objectives.registry import OBJECTIVES, Objective
from trainers.training.result import FAILED_STATUSES

FORMAT = 2  # the format of the records this version writes
KINDS = ("search",)  # what a record is the trial of
STATUSES = ("ok", *FAILED_STATUSES, "stopped")  # the worker's statuses, and a trial stopped by the scheduler
# Metrics the leaderboard, the report and the export read: numbers where present.
NUMERIC_METRICS = ("params", "macs", "wall_s", "num_classes", "val_acc", "train_acc", "epochs")
_KNOWN = {"format", "kind", "id", "arch", "arch_str", "number", "tune_trial_id", "status", "reason", "score"}
_KNOWN |= {"metrics", "history", *OBJECTIVES}


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial.

    Args:
        values: the objectives measured for it, by name (a failed training may still carry a latency).
        extra: anything else recorded beside (``recovered_from``, ``renumbered_from``, ...).
        kind: what the trial was (:data:`KINDS`).
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
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "search"

    # ------------------------------------------------------------------------------------------ building
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

    def replace_number(self, number: int, was: int | None) -> TrialRecord:
        """This record under another trial number (``renumbered_from`` says which it had)."""
        from dataclasses import replace

        return replace(self, number=number, extra={**self.extra, "renumbered_from": was})

    # ------------------------------------------------------------------------------------------ reading
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, name: str) -> float:
        """The value of objective ``name`` (its ``failed`` value where the record lacks it)."""
        return float(self.values.get(name, OBJECTIVES[name].failed))

    def axis_values(self, objectives: Sequence[Objective]) -> list[float]:
        """The values to tell Optuna: each objective's own value for an ``ok`` trial, its ``failed`` value
        otherwise (and where the record lacks it)."""
        return [float(self.values.get(o.name, o.failed)) if self.ok else o.failed for o in objectives]

    def architecture(self):
        """The :class:`~nas.model.arch.Architecture` of the trial."""
        from nas.model.arch import Architecture

        return Architecture.from_dict(self.arch)

    def metric(self, name: str, default: float = 0.0) -> float:
        """A numeric metric (``params``, ``macs``, ``wall_s``, ...), ``default`` where absent."""
        v = self.metrics.get(name)
        return default if v is None else float(v)

    # --------------------------------------------------------------------------------------------- disk
    def to_json(self) -> dict[str, Any]:
        """The flat dict written to ``trials.jsonl`` (format :data:`FORMAT`; a NaN anywhere becomes null, so
        a record this version writes is one it reads)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "id": self.id,
            "arch": self.arch,
            "arch_str": self.arch_str,
            "number": self.number,
            "tune_trial_id": self.tune_trial_id,
            "status": self.status,
            "reason": self.reason,
        }
        for name in ("generalization", "capacity"):  # always present, as in every trials.jsonl so far
            out[name] = self.value(name)
        out.update({k: float(v) for k, v in self.values.items() if k not in out})
        for name in OBJECTIVES:
            if isinstance(out.get(name), float) and math.isnan(out[name]):
                out[name] = OBJECTIVES[name].failed
        score = float(self.score)
        out.update(
            {
                "score": score if math.isfinite(score) else 0.0,
                "metrics": _json_safe(self.metrics),
                "history": _json_safe(self.history),
                **{k: _json_safe(v) for k, v in self.extra.items() if k not in _KNOWN},
            }
        )
        return out

    @classmethod
    def from_json(cls, d: Any) -> TrialRecord:
        """The record of one decoded line of ``trials.jsonl`` (format 1 or 2); raises :class:`Invalid`
        saying what is wrong with it."""
        if not isinstance(d, dict):
            raise Invalid(f"it is a JSON {type(d).__name__}, not a trial record (one JSON object per line)")
        fmt = record_format(d, "trials.jsonl", FORMAT)
        kind = d.get("kind", "search") if fmt >= 2 else "search"
        if fmt >= 2 and "kind" not in d:
            raise Invalid("the key 'kind' is missing (every format-2 record has one)")
        if kind not in KINDS:
            raise Invalid(f"its kind {_short(kind)} is not one this version knows ({', '.join(KINDS)})")
        for key in ("id", "arch", "status", "score"):
            if key not in d:
                raise Invalid(f"the key {key!r} is missing")
        rid = d["id"]
        if not isinstance(rid, str) or not rid:
            raise Invalid(f"`id` must be a non-empty string (got {_short(rid)})")
        arch = d["arch"]
        try:
            from nas.model.arch import Architecture

            parsed = Architecture.from_dict(arch, None, "arch")
            for key in ("depths", "widths"):  # the sane limits of nas/limits.py, as for a model config
                for i, v in enumerate(getattr(parsed, key)):
                    check_value(v, key, None, f"arch.{key}[{i}]")
        except UserError as err:
            raise Invalid(f"its architecture is not one: {str(err).rstrip('.')}") from None
        number = d.get("number")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise Invalid(f"`number` must be a trial number (an integer >= 0) or null (got {_short(number)})")
        status = d["status"]
        if status not in STATUSES:
            raise Invalid(f"`status` must be one of {', '.join(STATUSES)} (got {_short(status)})")
        values = {name: _number(d[name], name) for name in OBJECTIVES if name in d}  # +/-inf: the worst
        metrics = d.get("metrics", {})
        if not isinstance(metrics, dict):
            raise Invalid(f"`metrics` must be a JSON object (got {_short(metrics)})")
        for key in NUMERIC_METRICS:
            if metrics.get(key) is not None:
                _finite(metrics[key], f"metrics.{key}")
        classes = metrics.get("num_classes")
        if classes is not None:
            try:
                check_value(classes, "num_classes", None, "metrics.num_classes")
            except UserError as err:
                raise Invalid(str(err).rstrip(".")) from None
            if classes != int(classes):
                raise Invalid(f"`metrics.num_classes` must be a whole number (got {classes})")
        history = d.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise Invalid(f"`history` must be a list of JSON objects (got {_short(history)})")
        strings = {}
        for key, default in (("arch_str", None), ("tune_trial_id", None), ("reason", "")):
            v = d.get(key, default)
            if v is not None and not isinstance(v, str):
                raise Invalid(f"`{key}` must be a string (got {_short(v)})")
            strings[key] = v
        return cls(
            id=rid,
            arch=parsed.to_dict(),  # its canonical form (a layout written as a list reads as its name)
            arch_str=strings["arch_str"] if strings["arch_str"] is not None else str(parsed),
            number=number,
            tune_trial_id=strings["tune_trial_id"],
            status=status,
            reason=strings["reason"] or "",
            score=_finite(d["score"], "score"),
            values=values,
            metrics=metrics,
            history=history,
            extra={k: v for k, v in d.items() if k not in _KNOWN},
            kind=kind,
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"`{key}` must be a number (got {_short(value)})")
    if isinstance(value, float) and math.isnan(value):
        raise Invalid(f"`{key}` is NaN, which no record of ours holds")
    return float(value)


def _finite(value: Any, key: str) -> float:
    v = _number(value, key)
    if not math.isfinite(v):
        raise Invalid(f"`{key}` must be a finite number (got {v})")
    return v


def _json_safe(obj: Any) -> Any:
    """``obj`` with every NaN float replaced by ``None`` (JSON has no NaN; our readers refuse it)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
