"""Early stopping on a tabulated benchmark: ASHA against no early stopping, with the real driver and Ray Tune.

    python scripts/bench_early_stop.py                        # bench-cifar-rounds-250-replay.yaml, 5 seeds, 100 trials
    python scripts/bench_early_stop.py --space bench-cifar-replay.yaml --reduction-factor 2 3
    python scripts/bench_early_stop.py --seeds 3 --trials 60 --reduction-factor 3 4 --grace-period 1 2

Each seed replays the same random-sampler search (its proposals do not depend on results, so all runs see
the same candidates in the same order) once without a scheduler and once per scheduler, reduction factor
and grace period (`search.scheduler: {type: asha|pareto, grace_period: G, reduction_factor: RF}`: ASHA on
the per-round score, or successive halving on the non-dominated rank of (generalization, capacity)).
Prints, per setting, how many of the full run's top 5 (by score) and of its Pareto front (generalization,
capacity) finished rather than being stopped, and the compute saved: the recorded seconds (`round_s` in
the table) of the rounds that stopped trials skipped, over those of every round of every trial. Where the
table records each round's measurement seconds (`eval_s`), the saving is also given against the protocol
that measures once per regime, whose cost is the same training plus only each regime's last, full
measurement: every round's seconds less the measurement seconds of the rounds before a regime's last.
Wall time per search is shown too (the replay speed target: 100 trials in under a minute).
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
from trainers.objectives.registry import pareto_mask
from trainers.training.tabular import load_table, table_path


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    base = load_experiment(a.space)
    table = load_table(table_path(base.search.trainer))
    settings = [("none", None, None, None)] + [
        (f"{kind} rf={rf:g}" + (f" grace={g}" if len(a.grace_period) > 1 else ""), kind, rf, g)
        for kind in a.schedulers
        for g in a.grace_period
        for rf in a.reduction_factor
    ]
    out: dict[str, list[dict]] = {name: [] for name, *_ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            full = None
            for name, kind, rf, grace in settings:
                recs, wall = replay_once(base, Path(tmp), seed, name, (kind, rf, grace), a)
                if full is None:
                    full = recs
                out[name].append(_compare(full, recs, table, seed, wall))
                print(
                    f"seed {seed} {name:10s}: {len(recs)} trials, {out[name][-1]['stopped']} stopped, top-5 "
                    f"kept {out[name][-1]['top5_kept']}/5, Pareto front kept {out[name][-1]['front_kept']}/"
                    f"{out[name][-1]['front']}, compute saved {out[name][-1]['saved']:.0%} "
                    f"({out[name][-1]['saved_vs_one_round']:.0%} against one round per regime), {wall:.1f} s"
                    + (
                        f"; top-5 stopped after rounds {out[name][-1]['top5_lost_at']}"
                        if out[name][-1]["top5_lost_at"]
                        else ""
                    ),
                    flush=True,
                )
    _print_summary(settings, out, a.trials)
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="bench-cifar-rounds-250-replay.yaml")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--reduction-factor", type=float, nargs="+", default=[3.0, 4.0])
    p.add_argument("--grace-period", type=int, nargs="+", default=[1])
    p.add_argument("--schedulers", nargs="+", default=["asha", "pareto"], choices=["asha", "pareto"])
    p.add_argument("--max-concurrent", type=int, default=2)
    return p.parse_args(argv)


def replay_once(
    base, tmp: Path, seed: int, name: str, setting: tuple, a: argparse.Namespace
) -> tuple[list[dict], float]:
    """One search of ``seed`` (``a.sampler``, default random) under one scheduler ``setting`` (kind, reduction
    factor, grace period); its records and wall time."""
    kind, rf, grace = setting
    sched = {"type": kind, "grace_period": grace, "reduction_factor": rf} if rf else {"type": "none"}
    raw = {
        **base.raw,
        "search": {
            **(base.raw.get("search") or {}),
            "scheduler": sched,
            "sampler": getattr(a, "sampler", "random"),
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
    return [r.to_json() for r in RunDir(run_dir).read_records()], wall


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
    total = spent = one_round = 0.0
    for r in recs:
        hist = table.get(r["id"]).history
        trial_s = sum(h.get("round_s", 0.0) for h in hist)
        total += trial_s
        one_round += trial_s - sum(light_eval_s(hist))
        spent += run_s(r, hist)
    return {
        "seed": seed,
        "same_candidates": {r["id"] for r in recs} == ids,
        "top5_kept": len(top5 & finished),
        "front": len(front),
        "front_kept": len(front & finished),
        "saved": 1 - spent / total,
        "saved_vs_one_round": 1 - spent / one_round,
        "stopped": sum(r["status"] == "stopped" for r in recs),
        "top5_lost_at": sorted(int(r["metrics"].get("epochs", 0)) for r in recs if r["id"] in top5 - finished),
        "wall_s": wall,
    }


def run_s(rec: dict, hist: list[dict]) -> float:
    """The recorded seconds of the rounds of ``hist`` the trial ``rec`` ran: all of them, or those before
    the scheduler stopped it."""
    done = len(hist) if rec["status"] != "stopped" else int(rec["metrics"].get("epochs", 0))
    return sum(h.get("round_s", 0.0) for h in hist[:done])


def light_eval_s(hist: list[dict]) -> list[float]:
    """The measurement seconds of the rounds before each regime's last (0 where not recorded)."""
    last = {h["regime"]: h["step"] for h in hist}  # rows are in order: the last row per regime wins
    return [h.get("eval_s", 0.0) for h in hist if h["step"] != last[h["regime"]]]


def _quartiles(v: list[float]) -> str:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return f"{q[1]:.0%} [{q[0]:.0%}, {q[2]:.0%}]"


def _print_summary(settings: list[tuple], out: dict[str, list[dict]], trials: int) -> None:
    """The markdown table: per setting, over the seeds (medians and interquartile ranges)."""
    print(
        f"\n| setting | top-5 kept: median, min (seeds with 5/4/3 or fewer) | Pareto front kept | compute saved: "
        f"median [IQR] | against one round per regime | trials stopped | s per {trials}-trial search (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, *_ in settings:
        rs = out[name]
        assert all(r["same_candidates"] for r in rs), "the runs did not see the same candidates"
        kept = [r["top5_kept"] for r in rs]
        print(
            f"| {name} | {statistics.median(kept):g}, {min(kept)} ({kept.count(5)}/{kept.count(4)}/"
            f"{sum(k <= 3 for k in kept)}) | {sum(r['front_kept'] for r in rs)}/{sum(r['front'] for r in rs)} | "
            f"{_quartiles([r['saved'] for r in rs])} | {_quartiles([r['saved_vs_one_round'] for r in rs])} | "
            f"{statistics.median(r['stopped'] for r in rs):g} | {statistics.median(r['wall_s'] for r in rs):.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
