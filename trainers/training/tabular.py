"""A tabulated benchmark: every candidate of a small space trained once, replayed instead of trained.

A table file (JSON, ``format: coatnas-table/1``) holds the search YAML it was built from (space and
protocol), the code version, hardware and seeds that produced it, and one entry per candidate: the raw
measurements of the proxy training (the accuracies and losses the objective is computed from), its
per-round history, the zero-cost proxies and, for a sample, the reference training.

``search.trainer: table:PATH`` in a search YAML replays a search on the table with the real driver, Optuna
and Ray: :func:`replay` reports the recorded rounds to the scheduler and returns the recorded result, with
the two axes and the score recomputed from the raw measurements under the YAML's own ``objective:``
(so gap penalty, capacity metric and weights can be explored on the table). Building one:
``nas-fidelity`` with ``architectures: all``, then ``scripts/make_table.py`` (docs/benchmark.md).

This module imports neither torch nor Ray.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trainers.objectives.registry as obj
from trainers.training.result import TrialResult

__all__ = [
    "TABLE_FORMAT",
    "TABLE_PREFIX",
    "Table",
    "load_table",
    "replay",
    "is_table",
    "table_path",
    "protocol_mismatch",
]

TABLE_FORMAT = "coatnas-table/1"
TABLE_PREFIX = "table:"
# train:/objective: keys that do not change a recorded training (where it ran, how it is scored)
_FREE_KEYS = {
    "train.device",
    "train.precision",
    "train.data.path",
    "objective.gap_penalty",
    "objective.capacity_metric",
    "objective.weight_generalization",
    "objective.weight_capacity",
}


def is_table(trainer: str | None) -> bool:
    """Whether ``search.trainer`` names a table (``table:PATH``) rather than a ``module:function``."""
    return bool(trainer) and trainer.startswith(TABLE_PREFIX)


def table_path(trainer: str) -> str:
    return trainer[len(TABLE_PREFIX) :]


@dataclass(frozen=True)
class Table:
    """A loaded table: its metadata and its entries by architecture id."""

    path: str
    meta: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def search_yaml(self) -> dict[str, Any]:
        return self.meta["search_yaml"]

    def get(self, arch_id: str) -> dict[str, Any] | None:
        return self.entries.get(arch_id)

    def best(self, key: str = "score", cfg: obj.ObjectiveConfig | None = None) -> float:
        """The best ``generalization``/``capacity``/``score`` of the ok entries under ``cfg``."""
        vals = [
            axes(e, cfg or objective_of(self), self.num_classes)[key]
            for e in self.entries.values()
            if e["status"] == "ok"
        ]
        return max(vals)


_CACHE: dict[tuple[str, float], Table] = {}


def load_table(path: str | os.PathLike) -> Table:
    """Read a table file (cached per process by path and modification time). :class:`ValueError` names
    what is wrong with a file that is not a table."""
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime)
    if key in _CACHE:
        return _CACHE[key]
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise ValueError(f"{p} is not a coatnas table (its `format` is {got!r}, expected {TABLE_FORMAT!r})")
    for k in ("search_yaml", "num_classes", "objective", "protocol", "entries"):
        if k not in data:
            raise ValueError(f"{p} is not a complete coatnas table: the key {k!r} is missing")
    entries = {e["id"]: e for e in data["entries"]}
    table = Table(path=str(p), meta={k: v for k, v in data.items() if k != "entries"}, entries=entries)
    _CACHE.clear()
    _CACHE[key] = table
    return table


def protocol_mismatch(table: Table, protocol: dict[str, Any]) -> list[str]:
    """Differences between a run's flat protocol (``nas.search.config.protocol_of``) and the table's, except
    the keys that do not change a recorded training (device, precision, data path, and the objective's
    scoring: gap penalty, capacity metric and weights are recomputed)."""
    from trainers.training.config import default_protocol

    rec, defaults = table.meta["protocol"], default_protocol()  # a key the table lacks meant its default
    keys = {
        k
        for k in set(rec) | set(protocol)
        if k.startswith(("train.", "objective.")) and k not in _FREE_KEYS and k != "train.data.files"
    }
    return [
        f"{k}: table {rec.get(k, '(none)')!r}, YAML {protocol.get(k, '(none)')!r}"
        for k in sorted(keys)
        if rec.get(k, defaults.get(k)) != protocol.get(k)
    ]


def axes(entry: dict[str, Any], cfg: obj.ObjectiveConfig, num_classes: int) -> dict[str, float]:
    """generalization, capacity and score of an ok entry, from its raw measurements under ``cfg``."""
    m = entry["metrics"]
    g = obj.generalization(m["gen_val_acc"], m["gen_train_acc"], cfg)
    c = obj.capacity(m["cap_train_acc"], m["cap_train_loss"], num_classes, cfg)
    return {"generalization": g, "capacity": c, "score": obj.score(g, c, cfg)}


def _rounds(entry: dict[str, Any], cfg: obj.ObjectiveConfig, num_classes: int) -> list[dict[str, Any]]:
    """The recorded per-round history with the running axes recomputed as the trainer computes them."""
    out, gen = [], None
    for row in entry.get("history") or []:
        a = obj.round_axes(row, gen, cfg, num_classes)
        if row["regime"] == "generalization":
            gen = a["generalization"]
        out.append({**row, **a})
    return out


def replay(
    arch: Any,
    table: Table,
    objective: obj.ObjectiveConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrialResult:
    """The recorded outcome of ``arch`` (an :class:`~nas.model.arch.Architecture`): its rounds reported to
    ``on_epoch`` as a training would report them (a scheduler may stop it), then its result. The metric
    ``table_train_s`` is the recorded training's cost, so a replayed search can count the compute it
    would have spent."""
    entry = table.get(arch.id)
    if entry is None:
        return TrialResult.failed("error", f"{arch} (id {arch.id}) is not in the table {table.path}")
    recorded_s = float(entry["metrics"].get("wall_s", math.nan))
    base = {
        "params": float(entry["metrics"].get("params", 0.0)),
        "macs": float(entry["metrics"].get("macs", 0.0)),
        "table_train_s": recorded_s,
    }
    if entry["status"] != "ok":
        return TrialResult(status=entry["status"], reason=entry.get("reason", ""), metrics=base)
    k = table.num_classes
    rounds = _rounds(entry, objective, k)
    for i, row in enumerate(rounds, start=1):
        if on_epoch is not None:
            on_epoch(
                i,
                {
                    **{k2: float(v) for k2, v in row.items() if isinstance(v, (int, float))},
                    "epoch_total": float(i),
                    "rounds_total": float(len(rounds)),
                },
            )
    a = axes(entry, objective, k)
    metrics = {
        **{k2: float(v) for k2, v in entry["metrics"].items() if isinstance(v, (int, float))},
        **base,
        **a,
        "num_classes": float(k),
    }
    return TrialResult(status="ok", metrics=metrics, history=rounds, **a)


def objective_of(table: Table) -> obj.ObjectiveConfig:
    """The objective the table was built with."""
    names = {f.name for f in dataclasses.fields(obj.ObjectiveConfig)}
    return obj.ObjectiveConfig(**{k: v for k, v in table.meta["objective"].items() if k in names})
