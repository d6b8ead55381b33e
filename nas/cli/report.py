"""``nas-report RUN_DIR``: write the leaderboard, a Pareto-front PNG and a markdown summary of a search run."""

from __future__ import annotations

import sys

from nas.cli import ArgumentParser, run_cli

PROG = "nas-report"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Leaderboard, Pareto plot and summary of a search run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a search (e.g. runs/coatnet)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write the report files into DIR instead of RUN_DIR (for a "
        "read-only run); existing report files there are only replaced with --force",
    )
    p.add_argument("--force", action="store_true", help="replace existing report files in --out DIR")
    return p


def _main(args) -> int:
    from nas.fsio import read_json
    from nas.search.leaderboard import format_table
    from nas.search.report import write_report

    paths = write_report(args.run_dir, args.out, force=args.force)
    rows = read_json(
        paths["leaderboard_json"],
        _rows,
        what="The leaderboard just written,",
        fix="Another process replaced it; run nas-report again.",
    )
    print(format_table(rows))
    for key in ("leaderboard_csv", "pareto_png", "report_md"):
        print(f"{PROG}: wrote {paths[key]}")
    return 0


def _rows(data):
    """The rows of leaderboard.json (as :func:`nas.search.leaderboard.build_rows` wrote them)."""
    from nas.fsio import Invalid

    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise Invalid("it is not a list of leaderboard rows")
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
