"""What measuring every round costs, timed directly and checked against the table's own estimate.

    python scripts/bench_round_cost.py                  # 10 candidates of bench-cifar-rounds-250-v1.json, 2 repeats

For a stratified sample of the table's candidates (the same number per layout), trains each with the
shipped one-round-per-regime protocol and with the table's finer rounds, alternating (A B B A) in one
process with one thread, and prints the median ratio of their seconds. The same ratio is estimated from the
table's recorded seconds: every round's `round_s` over that less the `eval_s` of the rounds before each
regime's last (what scripts/bench_early_stop.py counts as the one-round protocol's cost). Also checks that
both protocols give the same result, as the table says they should (the measurements do not change the
training). Needs data/cifar10-train.npz (scripts/prepare_cifar.py).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import sys
import time

import torch
from bench_early_stop import light_eval_s  # scripts/ is on the path when run as a script

from nas.search.config import load_experiment
from trainers.data.loading import load_dataset
from trainers.training.proxy import train_candidate
from trainers.training.tabular import load_table, table_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="bench-cifar-rounds-250-replay.yaml")
    p.add_argument("--per-layout", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    exp = load_experiment(a.space)
    table = load_table(table_path(exp.search.trainer))
    fine = exp.train
    coarse = dataclasses.replace(fine, report_every=None, round_eval_limit=None)
    data = load_dataset(fine.data, exp.space.image_size, exp.space.in_chans)
    by_layout = collections.defaultdict(list)
    for e in table.entries.values():
        if e.ok and len(by_layout[e.layout]) < a.per_layout:
            by_layout[e.layout].append(e)
    train_candidate(next(iter(by_layout.values()))[0].arch, data, coarse, exp.objective)
    measured, estimated = [], []
    for entries in by_layout.values():
        for e in entries:
            arch = e.arch
            secs = {"coarse": [], "fine": []}
            for i in range(a.repeats):
                for name in ("coarse", "fine") if i % 2 == 0 else ("fine", "coarse"):
                    t0 = time.perf_counter()
                    r = train_candidate(arch, data, coarse if name == "coarse" else fine, exp.objective)
                    secs[name].append(time.perf_counter() - t0)
                    assert r.status == "ok" and r.metrics["cap_train_loss"] == e.metrics["cap_train_loss"], (
                        f"{arch}: the {name} protocol's result differs from the table's"
                    )
            hist = e.history
            light = sum(light_eval_s(hist))
            total = sum(h["round_s"] for h in hist)
            measured.append(statistics.median(secs["fine"]) / statistics.median(secs["coarse"]))
            estimated.append(total / (total - light))
            print(
                f"{e.arch_str[:60]:60s} one round {statistics.median(secs['coarse']):5.2f} s, "
                f"2 rounds {statistics.median(secs['fine']):5.2f} s: x{measured[-1]:.3f} (table x{estimated[-1]:.3f})",
                flush=True,
            )
    print(
        f"\nfiner rounds cost x{statistics.median(measured):.3f} the one-round protocol, timed "
        f"(min {min(measured):.3f}, max {max(measured):.3f}); x{statistics.median(estimated):.3f} estimated "
        f"from the table (min {min(estimated):.3f}, max {max(estimated):.3f}); {len(measured)} candidates, "
        f"torch {torch.__version__}, 1 thread"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
