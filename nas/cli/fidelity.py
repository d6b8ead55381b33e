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
    p.add_argument(
        "study",
        nargs="?",
        metavar="STUDY.yaml",
        help="study YAML: a path, or a bundled study such as fidelity-cifar.yaml (omit with --resume)",
    )
    p.add_argument(
        "--name",
        metavar="NAME",
        help="study directory runs/NAME (default: the study file's name); letters, digits, '.', '_', '-'",
    )
    p.add_argument(
        "--study-dir",
        metavar="DIR",
        help="study directory DIR instead of runs/NAME: a new or empty folder, or this study's own directory",
    )
    p.add_argument("--resume", metavar="DIR", help="continue the study saved in DIR, as it was started")
    p.add_argument(
        "--max-jobs",
        type=int,
        metavar="N",
        help="stop after N new jobs; the rest waits for a rerun (N from 1 to 100_000_000)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the report (fidelity.md, fidelity.json, scatter.png) of what is recorded; train nothing",
    )
    p.add_argument(
        "--address",
        metavar="ADDRESS",
        help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); default: this machine",
    )
    return p


def _study_dir(args) -> Path:
    from nas.errors import UserError

    if args.resume:
        return Path(args.resume)
    if args.study_dir is not None:
        return Path(args.study_dir)
    if args.name is not None:
        name, what = args.name, f"--name {args.name!r} is not a usable study name"
    else:
        name = Path(args.study).stem
        what = f"The study file's name {name!r} cannot name its study directory runs/NAME (pass --name NAME)"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise UserError(
            f"{what}: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters."
        )
    return Path("runs") / name


def _check_flags(args) -> None:
    """Flags that contradict each other or are out of range (nas.limits), before anything is read."""
    from nas.errors import UserError
    from nas.limits import check_value

    for flag, value in (("--resume", args.resume), ("--study-dir", args.study_dir)):
        if value is not None and not value.strip():
            raise UserError(f"{flag} '' names no folder. Give the study directory's path.")
    if not args.study and not args.resume:
        raise UserError("give a study YAML (e.g. `nas-fidelity fidelity-cifar.yaml`) or `--resume DIR`.")
    if args.study and args.resume:
        raise UserError("give either a study YAML or `--resume DIR`, not both: a saved study resumes as it was.")
    if args.resume and (args.name is not None or args.study_dir is not None):
        flag = "--name" if args.name is not None else "--study-dir"
        raise UserError(f"--resume DIR names the study directory already; drop {flag}.")
    if args.name is not None and args.study_dir is not None:
        raise UserError("give either --name NAME (runs/NAME) or --study-dir DIR, not both.")
    check_value(args.max_jobs, "max_jobs", None, "--max-jobs")
    if args.address is not None and args.address.strip() not in ("local",):  # refused before anything is read
        from nas.runtime.cluster import parse_address

        parse_address(args.address)
    if args.report_only:
        for flag, value in (("--max-jobs", args.max_jobs), ("--address", args.address)):
            if value is not None:
                raise UserError(f"{flag} has no effect with --report-only, which trains nothing; drop one of them.")


def _main(args) -> int:
    from nas.errors import UserError
    from nas.fidelity import format_tables_of, run_study, write_report

    _check_flags(args)
    sdir = _study_dir(args)
    status = {"stopped": False}
    if args.report_only:
        if args.study:  # the study the YAML names must be the one in the folder
            from nas.fidelity.config import load_study
            from nas.fidelity.studydir import StudyDir

            study = load_study(args.study)
            if StudyDir(sdir).exists() and StudyDir(sdir).read_record().fingerprint != study.fingerprint():
                raise UserError(
                    f"{sdir} holds a study with other settings than {args.study}; report it with "
                    f"`nas-fidelity --report-only --resume {sdir}`."
                )
    else:
        status = run_study(
            None if args.resume else args.study, study_dir=sdir, address=args.address, max_jobs=args.max_jobs
        )
    paths = write_report(sdir)
    print(format_tables_of(sdir))
    print(f"{PROG}: wrote {', '.join(str(p) for p in paths.values() if p.is_file())}")
    if status["stopped"]:  # 128 + the signal, like nas-search: 130 SIGINT, 143 SIGTERM, 129 SIGHUP
        return 128 + signal.Signals[status.get("signal") or "SIGINT"]
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
