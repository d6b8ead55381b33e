"""``nas-report``: a search run's leaderboard, Pareto-front plot and markdown summary.

Everything is derived from the run directory's ``trials.jsonl`` (the single source of truth), so a report
can be written at any time, also while the search runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UserError

if TYPE_CHECKING:
    from nas.search.record import TrialRecord
    from nas.search.rundir import RunMeta


# Figure geometry: 8 x 5.5 inches at 200 dpi = 1600 x 1100 px, 2.3x the 704 x 528 of the first version, so the
# PNG stays sharp on a slide; fonts are sized in points for that figure.
PARETO_FIGSIZE = (8.0, 5.5)
PARETO_DPI = 200


def _quantile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending list (numpy's default method)."""
    pos = q * (len(sorted_vals) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_vals) - 1)
    return sorted_vals[i] + (sorted_vals[j] - sorted_vals[i]) * (pos - i)


def axis_limits(
    values: Sequence[float],
    keep: Sequence[float] = (),
    *,
    fence: float = 1.5,
    min_fence: float = 0.05,
    squash: float = 2.0,
    margin: float = 0.08,
    min_span: float = 0.02,
) -> tuple[float, float]:
    """A robust axis range for ``values`` (one axis of the ok trials; the axes are accuracies in 0..1).

    Values beyond Tukey's fences (``fence`` x the interquartile range outside the quartiles, at least
    ``min_fence``, so that a run whose trials mostly tie still shows its near neighbours) are outliers; they
    are left out of the range only when they would squash the rest, i.e. when the full range is more than
    ``squash`` x the range of the others. ``keep`` are values that are always inside (the best trial).
    The range is padded by ``margin`` of its span on each side and is at least ``min_span`` wide.
    Pure (no plotting), so a test can check the limits without rendering."""
    vals = sorted(v for v in values if math.isfinite(v))
    kept = [v for v in keep if math.isfinite(v)]
    if not vals and not kept:
        return (0.0, 1.0)
    chosen = vals + kept
    if len(vals) >= 4:
        q1, q3 = _quantile(vals, 0.25), _quantile(vals, 0.75)
        reach = max(fence * (q3 - q1), min_fence)
        inside = [v for v in vals if q1 - reach <= v <= q3 + reach] + kept
        full = max(chosen) - min(chosen)
        if inside and full > squash * max(max(inside) - min(inside), min_span):
            chosen = inside
    lo, hi = min(chosen), max(chosen)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    pad = margin * (hi - lo)
    return (lo - pad, hi + pad)


@dataclass(frozen=True)
class ParetoView:
    """What the Pareto plot shows: the axis limits, the ok rows inside them, those beyond (drawn as markers on
    the edge), the best row (rank 1) and the front (by generalization)."""

    xlim: tuple[float, float]
    ylim: tuple[float, float]
    inside: list[dict[str, Any]]
    clipped: list[dict[str, Any]]
    best: dict[str, Any] | None
    front: list[dict[str, Any]]


def pareto_view(rows: list[dict[str, Any]]) -> ParetoView:
    """The limits and the partition of the leaderboard rows for :func:`plot_pareto` (pure, testable)."""
    ok = [r for r in rows if r["status"] == "ok"]
    best = min(ok, key=lambda r: r["rank"]) if ok else None
    keep_x = [best["generalization"]] if best else []
    keep_y = [best["capacity"]] if best else []
    xlim = axis_limits([r["generalization"] for r in ok], keep_x)
    ylim = axis_limits([r["capacity"] for r in ok], keep_y)

    def within(r: dict[str, Any]) -> bool:
        return xlim[0] <= r["generalization"] <= xlim[1] and ylim[0] <= r["capacity"] <= ylim[1]

    return ParetoView(
        xlim=xlim,
        ylim=ylim,
        inside=[r for r in ok if within(r)],
        clipped=[r for r in ok if not within(r)],
        best=best,
        front=sorted((r for r in ok if r["pareto"]), key=lambda r: (r["generalization"], -r["capacity"])),
    )


def _edge_marker(r: dict[str, Any], view: ParetoView) -> tuple[float, float, str]:
    """Where a clipped row is drawn (on the edge it lies beyond) and the triangle pointing its way."""
    (x0, x1), (y0, y1) = view.xlim, view.ylim
    x, y = r["generalization"], r["capacity"]
    over = {
        "<": (x0 - x) / (x1 - x0),
        ">": (x - x1) / (x1 - x0),
        "v": (y0 - y) / (y1 - y0),
        "^": (y - y1) / (y1 - y0),
    }
    return min(max(x, x0), x1), min(max(y, y0), y1), max(over, key=over.get)


def _place_labels(ax, fig, items: list[tuple[float, float, str, dict[str, Any]]]) -> None:
    """Annotate points, moving each label to the first of a few offsets where it overlaps no label placed
    before it (nor leaves the axes); the first offset when none is free."""
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    offsets = [(7, 7), (7, -13), (-7, 7), (-7, -13), (7, 20), (7, -26), (-7, 20), (-7, -26), (0, 32), (0, -38)]
    placed = []
    for x, y, text, style in items:
        ann = None
        for dx, dy in offsets:
            if ann is not None:
                ann.remove()
            ann = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx >= 0 else "right",
                multialignment="left",
                **style,
            )
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            inside = ax_box.contains(box.x0, box.y0) and ax_box.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(b) for b in placed):
                break
        else:
            ann.remove()
            dx, dy = offsets[0]
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha="left", **style)
            box = ann.get_window_extent(renderer)
        placed.append(box)


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Generalization vs capacity of the ok trials, one colour per layout, at slide resolution (PNG, 1600 px
    wide): the best trial (rank 1) starred and labelled with its architecture and score; the Pareto front
    joined and labelled with each point's layout and rank; the axes clipped to a robust range
    (:func:`axis_limits`) with the trials beyond drawn as triangles on the edge and counted in the x label."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas.fsio import atomic_write

    view = pareto_view(rows)
    ok = view.inside + view.clipped
    fig, ax = plt.subplots(figsize=PARETO_FIGSIZE, dpi=PARETO_DPI)
    layouts = sorted({r["layout"] for r in ok})
    cmap = plt.get_cmap("tab10")
    color = {lay: cmap(i % 10) for i, lay in enumerate(layouts)}
    for lay in layouts:
        pts = [r for r in view.inside if r["layout"] == lay]
        ax.scatter(
            [r["generalization"] for r in pts],
            [r["capacity"] for r in pts],
            color=color[lay],
            label=lay,
            s=36,
            alpha=0.8,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
    for r in view.clipped:
        x, y, marker = _edge_marker(r, view)
        ax.scatter(
            [x],
            [y],
            marker=marker,
            s=60,
            color=color[r["layout"]],
            edgecolors="black",
            linewidths=0.6,
            clip_on=False,
            zorder=4,
        )
    if view.front:
        ax.plot(
            [r["generalization"] for r in view.front],
            [r["capacity"] for r in view.front],
            "k--",
            lw=1.2,
            label="Pareto front",
            zorder=2,
        )
    b = view.best
    if b is not None:
        ax.scatter(
            [b["generalization"]],
            [b["capacity"]],
            marker="*",
            s=380,
            color="gold",
            edgecolors="black",
            linewidths=1.0,
            label="best (rank 1)",
            zorder=5,
        )
    ax.set_xlim(*view.xlim)
    ax.set_ylim(*view.ylim)
    xlabel = "generalization (higher is better)"
    if view.clipped:
        n = len(view.clipped)
        xlabel += f"\n{n} trial{'s' if n != 1 else ''} beyond the axes, drawn as triangles on the edge"
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel("capacity (higher is better)", fontsize=11)
    ax.set_title(title or "generalization vs capacity", fontsize=13)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    if ok:
        legend = ax.legend(fontsize=9, loc="best", framealpha=0.85)
        for handle in legend.legend_handles:  # the star at the size of the other markers
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([60])
    else:
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes, fontsize=12)
    fig.tight_layout()
    items = []
    if b is not None:
        items.append(
            (
                b["generalization"],
                b["capacity"],
                f"#1 {b.get('arch') or b['layout']}\nscore {b['score']:.3f}",
                {
                    "fontsize": 9,
                    "fontweight": "bold",
                    "bbox": {"boxstyle": "round,pad=0.3", "fc": "lightyellow", "ec": "0.4", "alpha": 0.95},
                    "zorder": 6,
                },
            )
        )
    inside = {id(r) for r in view.inside}
    for r in view.front:
        if r is b or id(r) not in inside:
            continue
        items.append(
            (r["generalization"], r["capacity"], f"{r['layout']} #{r['rank']}", {"fontsize": 8.5, "zorder": 6})
        )
    _place_labels(ax, fig, items)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PARETO_DPI)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def _md_table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            if c in ("params",):
                v = f"{v / 1e6:.3f}M"
            elif c == "macs":
                v = f"{v / 1e6:.1f}M"
            elif c == "pareto":
                v = "yes" if v else ""
            elif v is None:
                v = "-"
            cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return out


def summary_markdown(rows: list[dict[str, Any]], meta: RunMeta, exp: Any, records: list[TrialRecord]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    from nas.search.leaderboard import COLUMNS, extra_columns

    shown = [c for c in COLUMNS if c not in ("id", "reason")]  # the leaderboard's, further objectives after capacity
    at = shown.index("capacity") + 1
    cols = [*shown[:at], *extra_columns(records, exp.objective.axes), *shown[at:]]
    lines = [
        f"# Search report: {meta.name}",
        "",
        f"- space: `{meta.source}` (fingerprint `{meta.fingerprint}`, {exp.space.size():,} candidates)",
        f"- data: {exp.train.data.name}, {exp.space.image_size}px x{exp.space.in_chans}; objective mode "
        f"{exp.objective.mode}; sampler {exp.search.sampler}",
        f"- trials: {len(rows)} finished ({len(ok)} ok, {len(failed)} failed or stopped) of "
        f"{exp.search.trials} wanted; {len(meta.sessions)} driver session(s)",
        f"- wall time of training: {sum(r.metric('wall_s') for r in records):.0f} s (sum over trials)",
        *_proxy_lines(exp, meta),
        "",
    ]
    if ok:
        b = ok[0]
        lines += [
            f"**Best**: trial {b['trial']}, {b['arch'] or b['layout']}: score {b['score']:.3f} "
            f"(generalization {b['generalization']:.3f}, capacity {b['capacity']:.3f}), "
            f"{b['params'] / 1e6:.3f}M params. Exported as `best.yaml`.",
            "",
        ]
        lines += [
            "## Best per layout",
            "",
            "The paper's question: which layout generalizes and which has capacity.",
            "",
        ]
        per = {}
        for r in ok:
            per.setdefault(r["layout"], r)
        lines += _md_table(sorted(per.values(), key=lambda r: -r["score"]), cols)
        lines += ["", "## Pareto front (generalization vs capacity)", "", "![Pareto front](pareto.png)", ""]
        lines += _md_table([r for r in ok if r["pareto"]], cols)
    lines += ["", "## Leaderboard (top 20)", ""] + _md_table(rows[:20], cols)
    lines += _verified_section(rows, records, meta)
    if failed:
        lines += ["", "## Failed or stopped trials", ""]
        lines += [
            f"- trial {r['trial']} ({r['layout']} L={r['depths']} D={r['widths']}): {r['status']}: {r['reason']}"
            for r in failed
        ]
    return "\n".join(lines) + "\n"


def _verified_section(rows: list[dict[str, Any]], records: list[TrialRecord], meta: RunMeta) -> list[str]:
    """The "Verified finalists" section: each finalist's mean score over the verification seeds, its 95%
    interval and tie with the best, and the verification's cost beside the search's (``nas.search.finalists``)."""
    ver = [r for r in rows if r.get("verified") is not None]
    if not ver:
        return []
    entry = meta.extra.get("finalists") or {}
    over = {k: v for k, v in (entry.get("overrides") or {}).items() if v}
    lines = [
        "",
        "## Verified finalists",
        "",
        f"The top candidates by proxy score were trained again, {entry.get('seeds', '?')} seed(s) each, under the "
        f"verification protocol (overrides {over or 'none'}); they are ranked by their mean score over the seeds, "
        "with its 95% t-interval. `tied`: the 95% Welch interval of the difference with the best's mean includes 0 "
        "(`?`: not told, a single seed on a side). Rank 1 is exported as `best.yaml`.",
        "",
        "| rank | trial | architecture | proxy score | verified | 95% interval | n | tied |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ver:
        iv = "-" if r["verified_lo"] is None else f"[{r['verified_lo']:.3f}, {r['verified_hi']:.3f}]"
        tied = {True: "yes", False: "no", None: "?"}[r["tied"]]
        lines.append(
            f"| {r['rank']} | {r['trial']} | {r['arch']} | {r['score']:.3f} | {r['verified']:.3f} | {iv} | "
            f"{r['verified_n']} | {tied} |"
        )
    search = [t.metric("wall_s") for t in records if t.metric("wall_s") > 0]
    # the last session that verified: its cost counts every training of the current protocol, all sessions
    cost = next((s["verification"] for s in reversed(meta.sessions) if isinstance(s.get("verification"), dict)), None)
    if cost is not None and search:
        verified_s = float(cost.get("verification_wall_s") or 0.0)
        mean = sum(search) / len(search)
        lines += [
            "",
            f"Cost: {verified_s:.0f} s of training in {cost.get('trainings', '?')} verification trainings, against "
            f"{sum(search):.0f} s in {len(search)} search trials ({verified_s / sum(search):.0%}); "
            f"{verified_s / mean:.1f} proxy-trial equivalents (wall times summed over trainings).",
        ]
    return lines


REPORT_FILES = ("leaderboard.csv", "leaderboard.json", "pareto.png", "report.md")


def write_report(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, force: bool = False
) -> dict[str, Path]:
    """Write ``leaderboard.csv``/``.json``, ``pareto.png`` and ``report.md`` into the run directory, or into
    the folder ``out`` (for a run that is read-only to this user; existing report files there are only
    replaced with ``force``)."""
    import json

    from nas.fsio import atomic_write, check_output_dir, make_dirs
    from nas.search.leaderboard import build_rows, rows_csv, write_leaderboard
    from nas.search.rundir import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run_dir}: no such run directory. Pass the folder a search wrote (e.g. runs/<name>).")
    meta = run.read_meta()
    exp = run.read_experiment()
    records = run.read_records()
    if out is None:
        if not os.access(run.path, os.W_OK | os.X_OK):
            raise UserError(
                f"{run.path} is not writable by this user (read-only run directory), so the report "
                "cannot be written into it. Pass `--out DIR` to write the report files "
                f"({', '.join(REPORT_FILES)}) into another folder."
            )
        rows = write_leaderboard(run, records)
        folder = run.path
        from nas.search.finalists import summary_files, verified_of

        verified = verified_of(run, records)
        if verified:  # finalists.csv/.json are derived from finalists.jsonl too: rebuilt with the report
            summary_files(run, verified)
    else:
        folder = check_output_dir(out, REPORT_FILES, force=force)
        make_dirs(folder)
        from nas.search.finalists import verified_of

        rows = build_rows(records, run.axes(), run.image_size(), verified_of(run, records))
        atomic_write(folder / "leaderboard.csv", rows_csv(rows))
        atomic_write(folder / "leaderboard.json", json.dumps(rows, indent=1))
    png = plot_pareto(rows, folder / "pareto.png", title=f"{meta.name}: {len(rows)} trials")
    md = folder / "report.md"
    atomic_write(md, summary_markdown(rows, meta, exp, records))
    return {
        "leaderboard_csv": folder / "leaderboard.csv",
        "leaderboard_json": folder / "leaderboard.json",
        "pareto_png": png,
        "report_md": md,
    }


def _proxy_lines(exp, meta) -> list[str]:
    """The weight-sharing proxy's line of the report: its settings and the time its sessions spent on the
    supernets (``supernet_s`` in experiment.json; training them, or reading them back), which the trials' wall
    time above leaves out."""
    sn = exp.train.supernet
    if sn is None:
        return []
    times = [float(s["supernet_s"]) for s in meta.sessions if isinstance(s.get("supernet_s"), (int, float))]
    spent = f"took {sum(times):.0f} s" if times else "was not timed (no session recorded `supernet_s`)"
    return [
        f"- proxy: weight sharing (docs/supernet.md): supernets of {sn.steps} steps ({sn.regimes} regimes), "
        f"{sn.finetune_steps} fine-tuning step(s) per trial; the supernets' training {spent}, not counted in the "
        "trials' wall time"
    ]
