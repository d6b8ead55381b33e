"""Write the tabulated benchmark of a finished `nas-fidelity` study that trained every candidate.

    python scripts/make_table.py runs/bench-cifar-table search_spaces/benchmarks/bench-cifar-v1.json

The table (format coatnas-table/2, docs/benchmark.md) records the space and protocol, the code version,
hardware and seeds, and per candidate the proxy's raw measurements and per-round history, the zero-cost
proxies and the reference where the study trained it. Prints a summary.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys

from nas.cli import ArgumentParser, run_cli
from nas.fidelity.table import write_table
from trainers.training.tabular import axes, load_table

PROG = "make_table.py"


def main(argv: list[str] | None = None) -> int:
    """Write the table and print its summary; a user error is one paragraph on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("study_dir")
    p.add_argument("out")
    p.add_argument("--proxy", default="default", help="the study's proxy protocol to tabulate")
    p.add_argument("--name", help="table name (default: the space YAML's name)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--seed", type=int, help="the proxy's training seed to tabulate (default: its first)")
    return p


def _main(a: argparse.Namespace) -> int:
    path = write_table(a.study_dir, a.out, proxy=a.proxy, name=a.name, version=a.version, seed=a.seed)
    t = load_table(path)
    cfg = t.objective
    ok = [e for e in t.entries.values() if e.ok]
    by = collections.defaultdict(list)
    for e in ok:
        by[e.layout].append(axes(e, cfg, t.num_classes)["score"])
    print(
        f"{path}: {len(t.entries)} candidates, {len(ok)} ok, best score {t.best():.4f}; "
        f"{sum(bool(e.reference) for e in t.entries.values())} with a reference; "
        f"proxy training median {statistics.median(e.metrics['wall_s'] for e in ok):.1f} s"
    )
    for lay, v in sorted(by.items()):
        print(f"  {lay:8s} n={len(v):3d} score mean {statistics.fmean(v):.4f} max {max(v):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
