"""The leaderboard: finished trials ranked by score, with the Pareto front of the run's objective axes
(generalization and capacity unless ``objective.axes`` names others; ``trainers.objectives.registry.OBJECTIVES``).

Derived from ``trials.jsonl`` (and, in a run with a ``finalists:`` section, ``finalists.jsonl``) only, so it
can be rebuilt at any time (``nas-report``). Verified finalists (``nas.search.finalists``) come first, by their
mean score over the verification seeds, with the columns :data:`VERIFIED_COLUMNS`; the rest follow by proxy score.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from nas.fsio import atomic_write
from nas.search.record import TrialRecord
from nas.search.rundir import RunDir
from trainers.objectives.registry import OBJECTIVES, objectives_of, pareto_mask

COLUMNS = (
    "rank",
    "trial",
    "id",
    "layout",
    "depths",
    "widths",
    "grid",
    "params",
    "macs",
    "generalization",
    "capacity",
    "score",
    "pareto",
    "status",
    "reason",
)
# A run with verified finalists: the mean score over the verification seeds, its 95% interval, the ok seeds,
# and whether the finalist is statistically tied with the verified best (empty: not told, a single seed).
VERIFIED_COLUMNS = ("verified", "verified_lo", "verified_hi", "verified_n", "verified_failed", "tied")


def latest_records(records: list[TrialRecord]) -> list[TrialRecord]:
    """One record per architecture id (the first recorded; later ones would be re-runs)."""
    seen: dict[str, TrialRecord] = {}
    for rec in records:
        seen.setdefault(rec.id, rec)
    return list(seen.values())


def extra_columns(records: list[TrialRecord], axes: Sequence[str] = ()) -> list[str]:
    """Objectives beyond generalization and capacity that are axes or that some record carries."""
    return [n for n in OBJECTIVES if n not in COLUMNS and (n in axes or any(n in r.values for r in records))]


def _cell(v: float) -> float | None:
    """A value as the leaderboard shows it (JSON has no infinity: an infinite value is shown as none)."""
    return round(v, 4) if math.isfinite(v) else None


def build_rows(
    records: list[TrialRecord],
    axes: Sequence[str] | None = None,
    image_size: int | None = None,
    finalists: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Leaderboard rows: ``ok`` trials by score (best first), then the rest; the Pareto front of ``ok``
    trials over ``axes`` (default: generalization, capacity); a column for every other objective; with
    ``image_size``, each stage's token grid (``grid``: S1..S4 map sides, ``16/8/4/2``). The records are typed
    (:meth:`TrialRecord.from_json` refused NaN), so the sort is total. ``finalists``: the run's verified
    finalists (``nas.search.finalists.Verified`` by id, best first): those with a verified mean are ranked
    first in that order, and every row gets the :data:`VERIFIED_COLUMNS`."""
    from nas.model.geometry import token_grid

    recs = latest_records(records)
    objectives = objectives_of(axes)
    extra = extra_columns(recs, [o.name for o in objectives])
    ok = [r for r in recs if r.ok]
    rest = [r for r in recs if not r.ok]
    mask = pareto_mask([[r.value(o.name) for o in objectives] for r in ok], [o.direction for o in objectives])
    front = {r.id for r, m in zip(ok, mask) if m}
    ok.sort(key=lambda r: (-r.score, -r.value("generalization"), r.metric("params"), r.id))
    rest.sort(key=lambda r: (-r.score, r.id))
    if finalists:
        order = [k for k, v in finalists.items() if v.mean is not None]
        first = {k: i for i, k in enumerate(order)}
        ok.sort(key=lambda r: first.get(r.id, len(first)))  # stable: the rest stay in proxy order
    rows = []
    for i, r in enumerate(ok + rest):
        arch = r.arch
        rows.append(
            {
                "rank": i + 1 if r.ok else None,
                "trial": r.number,
                "id": r.id,
                "layout": arch["layout"],
                "depths": ",".join(map(str, arch["depths"])),
                "widths": ",".join(map(str, arch["widths"])),
                "grid": token_grid(r.architecture(), image_size) if image_size else "",
                "params": int(r.metric("params")),
                "macs": int(r.metric("macs")),
                "generalization": _cell(r.value("generalization")) or 0.0,
                "capacity": _cell(r.value("capacity")) or 0.0,
                "score": round(r.score, 4),
                "pareto": r.id in front,
                "status": r.status,
                "reason": r.reason,
                "arch": r.arch_str,
                **{n: _cell(r.values[n]) if n in r.values else None for n in extra},
            }
        )
        if finalists:
            v = finalists.get(r.id)
            rows[-1].update(v.row() if v is not None else dict.fromkeys(VERIFIED_COLUMNS))
    return rows


def write_leaderboard(
    run: RunDir, records: list[TrialRecord] | None = None, axes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Rewrite ``leaderboard.csv`` and ``leaderboard.json`` atomically; return the rows. ``axes``: the run's
    objective axes when the caller has them (the driver), else read from its ``space.yaml``."""
    from nas.search.finalists import verified_of

    records = run.read_records() if records is None else records
    rows = build_rows(records, axes or run.axes(), run.image_size(), verified_of(run, records))
    atomic_write(run.leaderboard_csv, rows_csv(rows))
    atomic_write(run.leaderboard_json, json.dumps(rows, indent=1))
    return rows


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The CSV text of leaderboard rows."""
    buf = io.StringIO()
    extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS and k != "arch" and k not in VERIFIED_COLUMNS]
    verified = [k for k in VERIFIED_COLUMNS if k in (rows[0] if rows else {})]
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "arch", *extra, *verified], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def format_table(rows: list[dict[str, Any]], limit: int | None = 20) -> str:
    """A fixed-width text table of the leaderboard (``*`` marks the Pareto front; with verified finalists, their
    mean over seeds, 95% interval, ok seeds and tie with the best)."""
    extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS and k != "arch" and k not in VERIFIED_COLUMNS]
    ver = bool(rows) and "verified" in rows[0]
    head = (
        "rank",
        "trial",
        "layout",
        "L (S0..S4)",
        "D (S0..S4)",
        "grid S1..S4",
        "params",
        "MACs",
        "gen",
        "cap",
        *(f"{k} ({OBJECTIVES[k].unit})" if OBJECTIVES[k].unit else k for k in extra),
        "score",
        *(("verified", "95% interval", "n", "tied") if ver else ()),
        "pareto",
        "status",
    )
    lines = []
    shown = rows if limit is None else rows[:limit]
    for r in shown:
        lines.append(
            (
                "-" if r["rank"] is None else str(r["rank"]),
                str(r["trial"]),
                r["layout"],
                r["depths"],
                r["widths"],
                r.get("grid", ""),
                f"{r['params'] / 1e6:.3f}M",
                f"{r['macs'] / 1e6:.1f}M",
                f"{r['generalization']:.3f}",
                f"{r['capacity']:.3f}",
                *("-" if r[k] is None else f"{r[k]:.3f}" for k in extra),
                f"{r['score']:.3f}",
                *(_verified_cells(r) if ver else ()),
                "*" if r["pareto"] else "",
                r["status"] + (f" ({r['reason'][:40]})" if r["status"] != "ok" and r["reason"] else ""),
            )
        )
    left = {2, 3, 4, 5, len(head) - 1}
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i in left else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*l) for l in lines]
    if limit is not None and len(rows) > limit:
        out.append(f"... {len(rows) - limit} more in leaderboard.csv")
    return "\n".join(out)


def _verified_cells(r: dict[str, Any]) -> tuple[str, ...]:
    """The verified columns of a text-table row: mean, interval, n, tie (``-`` where not verified)."""
    if r.get("verified") is None:
        return ("-", "", "", "")
    iv = "-" if r["verified_lo"] is None else f"[{r['verified_lo']:.3f}, {r['verified_hi']:.3f}]"
    tied = {True: "yes", False: "no", None: "?"}[r["tied"]]
    return (f"{r['verified']:.3f}", iv, str(r["verified_n"]), tied)
