"""Samplers compared on a tabulated benchmark: many seeded searches replayed in-process (docs/benchmark.md).

    python scripts/bench_samplers.py                          # bench-cifar-replay.yaml, 20 seeds, 100 trials
    python scripts/bench_samplers.py --samplers tpe:8 random --seeds 5 --trials 60
    python scripts/bench_samplers.py --samplers tpe:8 --lag 2     # ordered proposals, 2 trials in flight

Each search is `nas.search.replay.replay_search`: the driver's own Optuna sampler, study and searcher, with
trials answered from the table one at a time. Per sampler (`name` or `name:startup_trials`) it prints the
trials needed to come within --tolerance (score points) of the table's best score (median and interquartile
range over seeds; a search that never gets there counts as trials+1 and the number that got there is shown),
the best score and the (generalization, capacity) hypervolume after 25/50/100 trials, and seconds per
search. Random search's median is checked against its exact expectation for sampling without replacement.
Results are cached per (sampler, seed) in --out/results.json, so an interrupted run continues; a figure of
the median curves goes to --out/samplers.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from nas.search.config import load_experiment
from nas.search.replay import replay_search
from trainers.training.tabular import axes, load_table, table_path


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (maximising both) above the origin."""
    hv, best_y = 0.0, 0.0
    for x, y in sorted(points, key=lambda p: -p[0]):
        if y > best_y:
            hv += x * (y - best_y)
            best_y = y
    return hv


def curves(records: list[dict], trials: int) -> dict[str, list[float]]:
    best, hv, pts, out_b, out_h = 0.0, 0.0, [], [], []
    for r in records[:trials]:
        if r["status"] == "ok":
            best = max(best, r["score"])
            pts.append((r["generalization"], r["capacity"]))
            hv = hypervolume(pts)
        out_b.append(best)
        out_h.append(hv)
    while len(out_b) < trials:  # the space ran out: the curves stay where they are
        out_b.append(best)
        out_h.append(hv)
    return {"best": out_b, "hv": out_h}


def trials_to(best_curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(best_curve) if v >= target - 1e-12), None)


def random_law(n: int, k: int) -> tuple[float, float, float, float]:
    """Draws without replacement until the first of k marked among n: mean (n + 1) / (k + 1), and the
    exact 25th, 50th and 75th percentiles from P(T > t) = prod_{i<t} (n - k - i) / (n - i)."""
    surv, q, t = 1.0, {}, 0
    while len(q) < 3 and t < n:
        surv *= (n - k - t) / (n - t)
        t += 1
        for p in (0.25, 0.5, 0.75):
            if p not in q and 1 - surv >= p:
                q[p] = t
    return (n + 1) / (k + 1), q.get(0.25, n), q.get(0.5, n), q.get(0.75, n)


def iqr(v: list[float]) -> tuple[float, float, float]:
    q = np.percentile(v, [25, 50, 75])
    return float(q[1]), float(q[0]), float(q[2])


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    exp = load_experiment(a.space)
    table = load_table(table_path(exp.search.trainer))
    scores = [axes(e, exp.objective, table.num_classes) for e in table.entries.values() if e.ok]
    best = max(s["score"] for s in scores)
    target = best - a.tolerance
    k = sum(s["score"] >= target - 1e-12 for s in scores)
    hv_all = hypervolume([(s["generalization"], s["capacity"]) for s in scores])
    n = len(table.entries)
    print(
        f"table {table.path}: {n} candidates, best score {best:.4f}; {k} within {a.tolerance * 100:g} pp; "
        f"hypervolume of all {hv_all:.4f}"
    )

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if a.unordered:
        exp = exp.with_search(ordered=False)
    key_base = f"{table.name}-v{table.version}|{a.trials}|lag{a.lag}{'|unordered' if a.unordered else ''}"
    _replay_all(exp, a, cache, cache_path, key_base)
    marks = sorted({min(t, a.trials) for t in (25, 50, a.trials)})
    rows, med_curves = _summarise(cache, key_base, a, target, marks)
    _print_results(rows, marks, a, n, k, hv_all)
    _plot(med_curves, a, target, best, hv_all, out)
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="bench-cifar-replay.yaml", help="a search YAML with search.trainer: table:...")
    p.add_argument("--samplers", nargs="+", default=["tpe:8", "tpe:4", "tpe:16", "nsga2:8", "gp:8", "random"])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument(
        "--tolerance", type=float, default=0.005, help="score points below the table's best (0.005 = 0.5 pp)"
    )
    p.add_argument("--out", default="runs/bench-samplers")
    p.add_argument(
        "--lag",
        type=int,
        default=1,
        help="trials in flight at once (max_concurrent), the oldest finishing first: each proposal sees all but "
        "the last lag - 1 results",
    )
    p.add_argument(
        "--unordered", action="store_true", help="search.ordered: false (no reseeding per proposal, no waiting)"
    )
    return p.parse_args(argv)


def _replay_all(exp, a: argparse.Namespace, cache: dict, cache_path: Path, key_base: str) -> None:
    """Replay every (sampler, seed) search not yet in ``cache``, saving the cache after each."""
    for spec in a.samplers:
        name, _, startup = spec.partition(":")
        for seed in range(a.seeds):
            key = f"{key_base}|{spec}|{seed}"
            if key in cache:
                continue
            t0 = time.perf_counter()
            recs = replay_search(
                exp,
                trials=a.trials,
                seed=seed,
                sampler=name,
                startup_trials=int(startup) if startup else None,
                lag=a.lag,
            )
            cache[key] = {
                "ids": [r["id"] for r in recs],
                "status": [r["status"] for r in recs],
                "gen": [r["generalization"] for r in recs],
                "cap": [r["capacity"] for r in recs],
                "score": [r["score"] for r in recs],
                "seconds": time.perf_counter() - t0,
            }
            cache_path.write_text(json.dumps(cache))
            print(
                f"  {spec:8s} seed {seed:2d}: best {max(cache[key]['score']):.4f} ({cache[key]['seconds']:.1f} s)",
                flush=True,
            )


def _summarise(
    cache: dict, key_base: str, a: argparse.Namespace, target: float, marks: list[int]
) -> tuple[list[tuple], dict[str, tuple]]:
    """Per sampler: the table row (trials to the target, best score and hypervolume at the marks, seconds)
    and the median curves over the seeds."""
    rows, med_curves = [], {}
    for spec in a.samplers:
        runs = []
        for seed in range(a.seeds):
            c = cache[f"{key_base}|{spec}|{seed}"]
            recs = [
                {"status": s, "score": sc, "generalization": g, "capacity": cp}
                for s, sc, g, cp in zip(c["status"], c["score"], c["gen"], c["cap"])
            ]
            runs.append((curves(recs, a.trials), c["seconds"]))
        hit = [trials_to(cv["best"], target) for cv, _ in runs]
        need = [h if h is not None else a.trials + 1 for h in hit]
        m, lo, hi = iqr(need)
        at = {t: statistics.median(cv["best"][t - 1] for cv, _ in runs) for t in marks}
        hv = {t: statistics.median(cv["hv"][t - 1] for cv, _ in runs) for t in marks}
        rows.append((spec, m, lo, hi, sum(h is not None for h in hit), at, hv, statistics.median(s for _, s in runs)))
        med_curves[spec] = (
            np.median([cv["best"] for cv, _ in runs], axis=0),
            np.median([cv["hv"] for cv, _ in runs], axis=0),
        )
    return rows, med_curves


def _print_results(rows: list[tuple], marks: list[int], a: argparse.Namespace, n: int, k: int, hv_all: float) -> None:
    """The markdown table of the samplers, and random search's exact expectation beside it."""
    at_s = " / ".join(f"@{t}" for t in marks)
    print(
        f"\n| sampler | trials to within {a.tolerance * 100:g} pp: median [IQR] | reached | best score {at_s} | "
        f"hypervolume {at_s} | s per search |"
    )
    print("|---|---|---|---|---|---|")
    for spec, m, lo, hi, reached, at, hv, secs in rows:
        print(
            f"| {spec} | {m:.0f} [{lo:.0f}, {hi:.0f}] | {reached}/{a.seeds} | "
            f"{' / '.join(f'{at[t]:.4f}' for t in marks)} | {' / '.join(f'{hv[t]:.4f}' for t in marks)} "
            f"| {secs:.1f} |"
        )
    mean, q1, med, q3 = random_law(n, k)
    print(
        f"\n(a search that does not get there within {a.trials} trials counts as {a.trials + 1}; table "
        f"hypervolume {hv_all:.4f}. Check: uniform sampling without replacement needs {med} [{q1}, {q3}] trials "
        f"(exact median [IQR]; mean {mean:.1f}), to set beside `random` above.)"
    )


def _plot(
    med_curves: dict[str, tuple], a: argparse.Namespace, target: float, best: float, hv_all: float, out: Path
) -> None:
    """The median best-score and hypervolume curves of every sampler, to ``out/samplers.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(1, a.trials + 1)
    for spec, (b, h) in med_curves.items():
        ax1.plot(x, b, label=spec)
        ax2.plot(x, h, label=spec)
    ax1.axhline(target, color="k", lw=0.6, ls="--")
    ax1.set(xlabel="trials", ylabel=f"best score (median of {a.seeds} seeds)", ylim=(best - 0.06, best + 0.005))
    ax2.axhline(hv_all, color="k", lw=0.6, ls="--")
    ax2.set(xlabel="trials", ylabel="hypervolume (generalization, capacity)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "samplers.png", dpi=110)
    print(f"figure: {out / 'samplers.png'}")


if __name__ == "__main__":
    sys.exit(main())
