"""``nas-fidelity STUDY.yaml``: train sampled architectures under proxy and reference protocols and report
how well each proxy (and each zero-cost proxy) ranks them."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from nas.cli import ArgumentParser, run_cli

PROG = "nas-fidelity"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Fidelity study: rank agreement of proxy protocols and zero-cost "
        "proxies with a long reference training (docs/fidelity.md).",
        epilog="Exit status: 0 done; 2 a user error (one paragraph, nothing changed); 130 Ctrl-C "
        "(SIGINT), 143 SIGTERM, 129 SIGHUP: finished jobs are kept, `--resume DIR` goes on.",
    )
    p.add_argument("study", nargs="?", metavar="STUDY.yaml", help="study YAML (e.g. fidelity-cifar.yaml)")
    p.add_argument("--name", help="study directory runs/NAME (default: the study file's name)")
    p.add_argument("--study-dir", metavar="DIR", help="study directory (instead of runs/NAME)")
    p.add_argument("--resume", metavar="DIR", help="continue the study saved in DIR")
    p.add_argument("--max-jobs", type=int, metavar="N", help="stop after N new jobs (the rest waits for a rerun)")
    p.add_argument("--report-only", action="store_true", help="write the report of what is recorded; train nothing")
    p.add_argument("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); default: this machine")
    return p


def _study_dir(args) -> Path:
    if args.resume:
        return Path(args.resume)
    if args.study_dir:
        return Path(args.study_dir)
    name = args.name or (Path(args.study).stem if args.study else None)
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        from nas.errors import UserError

        raise UserError(
            f"--name {name!r} is not a usable study name: letters, digits, '.', '_' and '-', starting "
            "with a letter or digit."
        )
    return Path("runs") / name


def _main(args) -> int:
    from nas.errors import UserError
    from nas.fidelity import format_tables_of, run_study, write_report

    if not args.study and not args.resume:
        raise UserError("give a study YAML (e.g. `nas-fidelity fidelity-cifar.yaml`) or `--resume DIR`.")
    if args.study and args.resume:
        raise UserError("give either a study YAML or `--resume DIR`, not both: a saved study resumes as it was.")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise UserError(f"--max-jobs {args.max_jobs} is out of range: allowed an integer >= 1.")
    sdir = _study_dir(args)
    status = {"stopped": False}
    if not args.report_only:
        status = run_study(
            None if args.resume else args.study, study_dir=sdir, address=args.address, max_jobs=args.max_jobs
        )
    if not (sdir / "study.json").is_file():
        raise UserError(f"{sdir} is not a study directory (no study.json).")
    paths = write_report(sdir)
    print(format_tables_of(sdir))
    print(f"{PROG}: wrote {paths['md']}, {paths['json']}, {paths['png']}")
    if status["stopped"]:  # 128 + the signal, like nas-search: 130 SIGINT, 143 SIGTERM, 129 SIGHUP
        return 128 + signal.Signals[status.get("signal") or "SIGINT"]
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
