"""Early stopping on a tabulated benchmark: ASHA against no early stopping, with the real driver and Ray Tune.

    python scripts/bench_early_stop.py                        # bench-cifar-replay.yaml, 5 seeds, 100 trials
    python scripts/bench_early_stop.py --seeds 3 --trials 60 --reduction-factor 2 3

Each seed replays the same random-sampler search (its proposals do not depend on results, so all runs see
the same candidates in the same order) once without a scheduler and once per scheduler and reduction factor
(`search.scheduler: {type: asha|pareto, grace_period: 1}`: ASHA on the per-round score, or successive
halving on the non-dominated rank of (generalization, capacity)). Prints, per setting, how many
of the full run's top 5 (by score) and of its Pareto front (generalization, capacity) finished rather than
being stopped, and the compute saved: the recorded per-round training time (`round_s` in the table) of the
rounds that stopped trials skipped, over that of every round of every trial. Wall time per search is shown
too (the replay speed target: 100 trials in under a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nas.search import RunDir, run
from nas.search.config import load_experiment
from trainers.objective import pareto_mask
from trainers.tabular import load_table, table_path


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    base = load_experiment(a.space)
    table = load_table(table_path(base.search.trainer))
    settings = [("none", None, None)] + [
        (f"{kind} rf={rf:g}", kind, rf) for kind in a.schedulers for rf in a.reduction_factor
    ]
    out: dict[str, list[dict]] = {name: [] for name, _, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            full = None
            for name, kind, rf in settings:
                recs, wall = _replay(base, Path(tmp), seed, name, kind, rf, a)
                if full is None:
                    full = recs
                out[name].append(_compare(full, recs, table, seed, wall))
                print(
                    f"seed {seed} {name:10s}: {len(recs)} trials, {out[name][-1]['stopped']} stopped, top-5 "
                    f"kept {out[name][-1]['top5_kept']}/5, Pareto front kept {out[name][-1]['front_kept']}/"
                    f"{out[name][-1]['front']}, compute saved {out[name][-1]['saved']:.0%}, {wall:.1f} s",
                    flush=True,
                )
    _print_summary(settings, out, a.trials)
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="bench-cifar-replay.yaml")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--reduction-factor", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--schedulers", nargs="+", default=["asha", "pareto"], choices=["asha", "pareto"])
    p.add_argument("--max-concurrent", type=int, default=2)
    return p.parse_args(argv)


def _replay(
    base, tmp: Path, seed: int, name: str, kind: str | None, rf: float | None, a: argparse.Namespace
) -> tuple[list[dict], float]:
    """One random-sampler search of ``seed`` under one scheduler setting; its records and wall time."""
    sched = {"type": kind, "grace_period": 1, "reduction_factor": rf} if rf else {"type": "none"}
    raw = {
        **base.raw,
        "search": {
            **(base.raw.get("search") or {}),
            "scheduler": sched,
            "sampler": "random",
            "seed": seed,
            "trials": a.trials,
            "max_concurrent": a.max_concurrent,
            "trainer": base.search.trainer,
        },
    }
    yaml_path = tmp / f"{seed}-{name.replace(' ', '_')}.yaml"
    yaml_path.write_text(json.dumps(raw))  # JSON is YAML
    run_dir = tmp / yaml_path.stem
    t0 = time.perf_counter()
    run(yaml_path, run_dir=run_dir, progress=False)
    wall = time.perf_counter() - t0
    return RunDir(run_dir).read_records(), wall


def _compare(full: list[dict], recs: list[dict], table, seed: int, wall: float) -> dict:
    """How a search kept the full run's top 5 and Pareto front, and the share of the table's training time
    its stopped trials saved."""
    ids = {r["id"] for r in full}
    ok_full = [r for r in full if r["status"] == "ok"]
    top5 = {r["id"] for r in sorted(ok_full, key=lambda r: -r["score"])[:5]}
    front = {
        r["id"] for r, on in zip(ok_full, pareto_mask([(r["generalization"], r["capacity"]) for r in ok_full])) if on
    }
    finished = {r["id"] for r in recs if r["status"] == "ok"}
    total = spent = 0.0
    for r in recs:
        rounds = [h.get("round_s", 0.0) for h in table.get(r["id"])["history"]]
        total += sum(rounds)
        done = len(rounds) if r["status"] != "stopped" else int(r["metrics"].get("epochs", 0))
        spent += sum(rounds[:done])
    return {
        "seed": seed,
        "same_candidates": {r["id"] for r in recs} == ids,
        "top5_kept": len(top5 & finished),
        "front": len(front),
        "front_kept": len(front & finished),
        "saved": 1 - spent / total,
        "stopped": sum(r["status"] == "stopped" for r in recs),
        "wall_s": wall,
    }


def _print_summary(settings: list[tuple], out: dict[str, list[dict]], trials: int) -> None:
    """The markdown table: per setting, the medians over the seeds."""
    print(
        f"\n| setting | top-5 kept (median, min) | Pareto front kept | compute saved (median) | trials stopped | "
        f"s per {trials}-trial search (median) |"
    )
    print("|---|---|---|---|---|---|")
    for name, _, _ in settings:
        rs = out[name]
        assert all(r["same_candidates"] for r in rs), "the runs did not see the same candidates"
        print(
            f"| {name} | {statistics.median(r['top5_kept'] for r in rs):g}, {min(r['top5_kept'] for r in rs)} | "
            f"{sum(r['front_kept'] for r in rs)}/{sum(r['front'] for r in rs)} | "
            f"{statistics.median(r['saved'] for r in rs):.0%} | {statistics.median(r['stopped'] for r in rs):g} | "
            f"{statistics.median(r['wall_s'] for r in rs):.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
