"""``nas-report``: a search run's leaderboard, Pareto-front plot and markdown summary.

Everything is derived from the run directory's ``trials.jsonl`` (the single source of truth), so a report
can be written at any time, also while the search runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UserError

if TYPE_CHECKING:
    from nas.search.record import TrialRecord
    from nas.search.rundir import RunMeta


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Scatter of generalization vs capacity per layout, the Pareto front joined by a line (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for layout in sorted({r["layout"] for r in ok}):
        pts = [r for r in ok if r["layout"] == layout]
        ax.scatter([r["generalization"] for r in pts], [r["capacity"] for r in pts], label=layout, s=28, alpha=0.8)
    front = sorted((r for r in ok if r["pareto"]), key=lambda r: r["generalization"])
    if front:
        ax.plot([r["generalization"] for r in front], [r["capacity"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("generalization (higher is better)")
    ax.set_ylabel("capacity (higher is better)")
    ax.set_title(title or "generalization vs capacity")
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    from nas.fsio import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
    if failed:
        lines += ["", "## Failed or stopped trials", ""]
        lines += [
            f"- trial {r['trial']} ({r['layout']} L={r['depths']} D={r['widths']}): {r['status']}: {r['reason']}"
            for r in failed
        ]
    return "\n".join(lines) + "\n"


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
    else:
        folder = check_output_dir(out, REPORT_FILES, force=force)
        make_dirs(folder)
        rows = build_rows(records, run.axes())
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
