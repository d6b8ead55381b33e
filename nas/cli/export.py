"""``nas-export``: write the model config of a trial of a search run.

    nas-export runs/coatnet --out model.yaml             # the best trial
    nas-export runs/coatnet --rank 3 --out third.yaml
    nas-export runs/coatnet --trial 12 --out t12.yaml    # Optuna trial number or architecture id

``nas.build_model(nas.load_model_config("model.yaml"))`` rebuilds the network; ``nas-train model.yaml``
trains it.
"""
from __future__ import annotations

import sys

from nas.errors import UserError

from . import ArgumentParser, run_cli

PROG = "nas-export"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Export a trial of a search run as a model config YAML.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a search (e.g. runs/coatnet)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, metavar="K", help="leaderboard rank (1 = best, the default)")
    which.add_argument("--trial", metavar="ID", help="Optuna trial number or architecture id")
    p.add_argument("--out", metavar="FILE", default="model.yaml", help="output YAML (default model.yaml); an "
                   "existing file is only replaced with --force, and never a file of a run directory")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    return p


def _main(args) -> int:
    from nas.export import export_from_run, load_model_config

    if args.rank is not None and args.rank < 1:
        raise UserError(f"--rank must be >= 1 (got {args.rank}).")
    path = export_from_run(args.run_dir, args.out, rank=args.rank, trial=args.trial, force=args.force)
    mc = load_model_config(path)
    prov = mc.provenance
    print(f"{PROG}: trial {prov.get('trial')} {mc.arch} ({mc.image_size}px x{mc.in_chans}, {mc.num_classes} "
          f"classes, score {prov.get('metrics', {}).get('score')}) -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
