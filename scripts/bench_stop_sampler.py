"""Compute to a good architecture: a sampler with and without early stopping, on a tabulated benchmark.

    python scripts/bench_stop_sampler.py                  # tpe, bench-cifar-rounds-250-replay.yaml, asha rf 4, 20 seeds
    python scripts/bench_stop_sampler.py --sampler random --seeds 5

scripts/bench_early_stop.py asks whether early stopping keeps the winners of a fixed set of candidates
(random proposals). This asks what a user pays for a good result: each seed runs the same search with the
real driver, Ray Tune and the table trainer, once without a scheduler and once with early stopping. A
sampler's proposals depend on what it was told (a stopped trial is told as pruned), so the two runs see
different candidates. Per run: the compute spent until a finished trial first scores within 0.5 pp of the
table's best (the recorded seconds of the rounds each trial ran, trials in the order they finished),
whether that happened within the trials, the best finished score, and the compute of the whole run. The run
without a scheduler is costed as the shipped protocol would run it (one round per regime: the recorded
seconds less those of the early measurements). Compute is given in trial-equivalents: the table's median
cost of one trial under the shipped protocol.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_early_stop import light_eval_s, replay_once, run_s  # scripts/ is on the path when run as a script

from nas.search.config import load_experiment
from trainers.training.tabular import load_table, table_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="bench-cifar-rounds-250-replay.yaml")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--scheduler", default="asha", choices=["asha", "pareto"])
    p.add_argument("--reduction-factor", type=float, default=4.0)
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--within", type=float, default=0.005, help="the target: this far below the table's best")
    p.add_argument("--max-concurrent", type=int, default=2)
    a = p.parse_args(argv)
    base = load_experiment(a.space)
    table = load_table(table_path(base.search.trainer))
    target = table.best() - a.within
    trial_s = statistics.median(
        sum(h["round_s"] for h in e.history) - sum(light_eval_s(e.history)) for e in table.entries.values() if e.ok
    )
    stop = (a.scheduler, a.reduction_factor, a.grace_period)
    settings = [("none", (None, None, None)), (f"{a.scheduler} rf={a.reduction_factor:g}", stop)]
    out: dict[str, list[dict]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            for name, setting in settings:
                recs, _ = replay_once(base, Path(tmp), seed, name, setting, a)
                r = _cost_to_target(recs, table, target, one_round=setting[0] is None)
                out[name].append(r)
                print(
                    f"seed {seed} {name:8s}: {r['stopped']} stopped, within {a.within * 100:g} pp after "
                    f"{r['to_target_s'] / trial_s:.1f} trial-equivalents"
                    + ("" if r["reached"] else " (not reached: whole run)")
                    + f", best {r['best']:.4f}, whole run {r['spent_s'] / trial_s:.1f}",
                    flush=True,
                )
    print(
        f"\n{a.sampler}, {a.trials} trials, {a.seeds} seeds; target: score >= {target:.4f} (table best "
        f"{table.best():.4f}); a trial-equivalent is {trial_s:.2f} s (one-round protocol, median)\n"
    )
    print("| setting | reached | compute to target: median [IQR] | best score: median | compute of the run |")
    print("|---|---|---|---|---|")
    for name, _ in settings:
        rs = out[name]
        q = statistics.quantiles([r["to_target_s"] / trial_s for r in rs], n=4)
        print(
            f"| {name} | {sum(r['reached'] for r in rs)}/{len(rs)} | {q[1]:.1f} [{q[0]:.1f}, {q[2]:.1f}] | "
            f"{statistics.median(r['best'] for r in rs):.4f} | "
            f"{statistics.median(r['spent_s'] for r in rs) / trial_s:.1f} |"
        )
    return 0


def _cost_to_target(recs: list[dict], table, target: float, one_round: bool) -> dict:
    """Compute spent (recorded round seconds) until the first finished trial at or above ``target``; with
    ``one_round``, every trial costs what the one-round protocol would (no early measurements)."""
    spent, to_target, best = 0.0, None, float("-inf")
    for r in recs:
        hist = table.get(r["id"]).history
        spent += run_s(r, hist) - (sum(light_eval_s(hist)) if one_round else 0.0)
        if r["status"] == "ok":
            best = max(best, r["score"])
            if to_target is None and r["score"] >= target:
                to_target = spent
    return {
        "reached": to_target is not None,
        "to_target_s": spent if to_target is None else to_target,
        "best": best,
        "spent_s": spent,
        "stopped": sum(r["status"] == "stopped" for r in recs),
    }


if __name__ == "__main__":
    sys.exit(main())
