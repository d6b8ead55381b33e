"""``nas-search``: search a YAML space; Ray Tune runs the trials, Optuna ranks them.

    nas-search --space coatnet.yaml                 # runs/coatnet; the same command again resumes it
    nas-search --space coatnet.yaml --dry-run       # size and a few candidates with params/MACs, no training
    nas-search --resume runs/coatnet --trials 16    # continue, raising the budget to 16 trials
    nas-search --space coatnet.yaml --time-budget 2h  # stop cleanly (resumable) after two hours
    nas-search --space my.yaml --address auto --gpus-per-trial 0.25 --run-dir s3://bucket/runs/x

Flags override the YAML's ``search:`` section. Ctrl-C stops cleanly; everything is saved.
"""

from __future__ import annotations

import sys

from nas.cli import ArgumentParser, run_cli
from nas.errors import UserError
from nas.search.config import SAMPLERS
from nas.space.reading import bundled_spaces

PROG = "nas-search"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Search a CoAtNet-style space: Ray Tune runs trials, Optuna ranks "
        "them on generalization vs capacity.",
        epilog="Security: the YAML key search.trainer "
        "(module:function) is imported on the driver (also by --dry-run) and imported and called on "
        "every worker: it executes code, so only use search YAML files you trust. Exit status: 0 done "
        "(or the --time-budget spent: resume with --resume RUN_DIR), 2 a user error (one paragraph, nothing "
        "changed), 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP: stopped cleanly, everything saved, resume "
        "with --resume RUN_DIR.",
    )
    p.add_argument(
        "--space",
        metavar="FILE|NAME",
        help=f"search YAML (docs/space.md), or a bundled space: {', '.join(bundled_spaces())}",
    )
    p.add_argument("--trials", type=int, help="completed trials wanted in total (on resume: the new total)")
    p.add_argument("--name", help="run name: the run directory is runs/NAME (default: the space file's stem)")
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run directory (instead of runs/NAME): a path, or a URI such as s3://bucket/runs/x, gs://..., file:///...",
    )
    p.add_argument("--max-concurrent", type=int, metavar="K", help="trials running at once")
    p.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs (= torch threads) of one trial")
    p.add_argument("--gpus-per-trial", type=float, metavar="G", help="GPUs of one trial; fractions pack trials")
    p.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        help="Optuna sampler proposing candidates (default: the YAML's search.sampler, else tpe): tpe, nsga2 "
        "(genetic, multi-objective), gp (Gaussian process), random, grid (every candidate once, small spaces)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the sampler, and of the candidates --dry-run shows (default: the YAML's search.seed, "
        "else 0; 0 to 4_294_967_295)",
    )
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to join: HOST:PORT, ray://HOST:PORT or auto")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna study in a database: postgresql://user:pw@host/db, "
        "sqlite:///study.db (default: the journal file RUN_DIR/optuna.journal)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (or the one named by --name/--run-dir)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate, print the size and sampled candidates; no training, no Ray"
    )
    p.add_argument("--samples", type=int, default=5, help="candidates shown by --dry-run (default 5)")
    p.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="wall-clock time of this session, e.g. 90s, 45m, 2h, 1h30m (default: the YAML's search.time_budget, "
        "else none): when it is spent the search stops as Ctrl-C stops it (running trials re-run on resume) and "
        "prints the resume command. A resumed session gets the budget given then (this flag, else the YAML's), "
        "not what an earlier session left",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines (data, trial starts and ends); only the final leaderboard",
    )
    p.add_argument(
        "--new-protocol",
        action="store_true",
        help="resume although train:, objective:, "
        "search.trainer or the data files changed since the run started (refused otherwise, with "
        "the diff); new trials are ranked beside the old ones and experiment.json records the change",
    )
    return p


def _check(args) -> None:
    import math

    from nas.limits import allowed_text, check_value

    for flag in ("trials", "max_concurrent", "samples"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be an integer >= 1 (got {v}).")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        v = getattr(args, flag)
        if v is not None and not math.isfinite(v):
            raise UserError(
                f"--{flag.replace('_', '-')} must be a finite number (got {v}). Allowed: "
                f"{allowed_text('search.' + flag)}."
            )
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise UserError(f"--cpus-per-trial must be > 0 (got {args.cpus_per_trial:g}).")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial must be >= 0 (got {args.gpus_per_trial:g}).")
    for flag, key in (
        ("trials", "search.trials"),
        ("max_concurrent", "search.max_concurrent"),
        ("samples", "samples"),
        ("seed", "search.seed"),
        ("cpus_per_trial", "search.cpus_per_trial"),
        ("gpus_per_trial", "search.gpus_per_trial"),
    ):
        check_value(getattr(args, flag), key, None, "--" + flag.replace("_", "-"))
    if args.time_budget is not None:
        from nas.search.config import parse_duration

        parse_duration(args.time_budget, "--time-budget")
    if isinstance(args.resume, str) and args.run_dir and args.resume != args.run_dir:
        raise UserError(
            f"--resume {args.resume} and --run-dir {args.run_dir} name different run directories; give one of them."
        )
    if args.address:
        from nas.runtime.cluster import parse_address

        parse_address(args.address)
    if not args.space and not args.resume:
        raise UserError(
            "nas-search needs `--space FILE|NAME` (a search YAML or a bundled space: "
            f"{', '.join(bundled_spaces())}) or `--resume RUN_DIR`."
        )
    if args.resume is True and not (args.name or args.run_dir or args.space):
        raise UserError("--resume needs the run directory: `--resume RUN_DIR` (or --name / --run-dir).")


def _main(args) -> int:
    _check(args)
    from nas.search import dry_run, run

    if args.dry_run:
        if not args.space:
            raise UserError("--dry-run needs `--space FILE|NAME`.")
        print(dry_run(args.space, samples=args.samples, seed=args.seed, trials=args.trials))
        return 0
    run_dir = args.resume if isinstance(args.resume, str) else args.run_dir
    res = run(
        args.space,
        trials=args.trials,
        name=args.name,
        run_dir=run_dir,
        resume=bool(args.resume),
        address=args.address,
        storage=args.storage,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        sampler=args.sampler,
        seed=args.seed,
        progress=sys.stdout if not args.quiet else False,
        new_protocol=args.new_protocol,
        time_budget=args.time_budget,
    )
    if args.quiet:
        print(res.table())
        if res.best_path:
            print(f"best -> {res.best_path}")
        if res.budget_spent:
            print(f"time budget spent; resume with `nas-search --resume {run_dir or res.run_dir}`")
    if res.interrupted and not res.budget_spent:
        from nas.runtime.signals import exit_code

        return exit_code(res.stopped_by)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
