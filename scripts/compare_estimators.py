"""Estimators of the proxy's ranking compared on one fidelity study (issue 20, item 2; docs/fidelity.md).

    python scripts/compare_estimators.py runs/estimators-cifar

Reads the study through nas-fidelity's own readers (study.json, architectures.json, jobs.jsonl) and ranks
its architectures by estimators built from what the proxy trainings recorded, each against the reference
(the mean over its seeds): Kendall tau, Spearman rho and top-k recall (the share of the reference's top k
that an estimator's top k holds), with 95% bootstrap intervals over architectures, and each estimator's
cost in shipped-proxy draws. It needs a study with the shipped proxy at two or more seeds and a half-steps
protocol at two seeds (search_spaces/studies/estimators-cifar.yaml); estimators whose jobs are missing are
left out. Where the study has zero-cost records (``study.zero_cost``, e.g. estimators-zc-cifar.yaml), it adds
each zero-cost proxy alone and its rank ensemble with the shipped proxy's score (the sum of their ranks), at
the shipped draw's cost, on the first seed's draw and, for ``--ensemble``, on the others. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nas.fidelity.config import ZERO_COST_JOB
from nas.fidelity.stats import bootstrap_ci, kendall_tau, spearman_rho, top_overlap
from nas.fidelity.studydir import StudyDir, checked_records, prepare


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="mergesort"), kind="mergesort").astype(float)


def _loss_sum(history) -> float:
    """Minus the sum of the training losses over the rounds (lower loss ranks higher), NaN without them."""
    losses = [h.get("train_loss", h.get("running_loss")) for h in history]
    return -float(sum(losses)) if losses and all(isinstance(x, (int, float)) for x in losses) else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir", help="a nas-fidelity study directory")
    p.add_argument("--shipped", default="v500-fused250", help="the shipped proxy's protocol name in the study")
    p.add_argument("--half", default="half-fused250", help="the half-steps protocol's name")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    p.add_argument(
        "--ensemble",
        type=lambda v: v.split(","),
        default=["naswot", "snip"],
        help="zero-cost proxies whose rank ensemble with the proxy is also shown on the other seeds' draws",
    )
    a = p.parse_args(argv)
    sdir = StudyDir(a.study_dir)
    study, archs = prepare(sdir, None)
    every = checked_records(sdir, study, archs)
    recs = [r for r in every if r.kind == "train" and r.ok]
    zc = {r.arch_id: dict(r.zero_cost) for r in every if r.kind == ZERO_COST_JOB and r.ok}
    ids = [x.id for x in archs]
    by = {}  # (protocol, seed) -> {arch id: record}
    for r in recs:
        by.setdefault((r.protocol, r.seed), {})[r.arch_id] = r
    ref_keys = [k for k in by if k[0] == "reference"]
    ship = sorted(s for (proto, s) in by if proto == a.shipped)
    half = sorted(s for (proto, s) in by if proto == a.half)

    def col(proto: str, seed: int, fn=lambda r: r.score) -> np.ndarray:
        return np.array([fn(by[(proto, seed)][i]) if i in by.get((proto, seed), {}) else np.nan for i in ids])

    ref = np.nanmean([col(*k) for k in ref_keys], axis=0)
    est: list[tuple[str, float, np.ndarray]] = []
    if ship:
        s0 = col(a.shipped, ship[0])
        est.append((f"shipped proxy, seed {ship[0]}", 1, s0))
        zcs: dict[str, np.ndarray] = {}
        loss = col(a.shipped, ship[0], lambda r: _loss_sum(r.history))
        est.append(("minus the sum of training losses over the rounds (same training)", 1, loss))
        est.append(("rank ensemble: proxy score + loss sum (same training)", 1, _ranks(s0) + _ranks(loss)))
        for name in sorted({k for v in zc.values() for k in v}):
            z = np.array([float(zc.get(i, {}).get(name, np.nan)) for i in ids])
            if np.isfinite(z).sum() < len(ids):  # a proxy some architecture lacks ranks nothing here
                continue
            est.append((f"zero-cost {name} alone", 0, z))
            est.append((f"rank ensemble: proxy score (seed {ship[0]}) + {name}", 1, _ranks(s0) + _ranks(z)))
            zcs[name] = z
        for seed in ship[1:]:
            s = col(a.shipped, seed)
            est.append((f"shipped proxy, seed {seed}", 1, s))
            for name in a.ensemble:  # the ensemble on the other draws too: is its gain the draw's?
                if name in zcs:
                    est.append((f"rank ensemble: proxy score (seed {seed}) + {name}", 1, _ranks(s) + _ranks(zcs[name])))
        if len(ship) >= 2:
            est.append(
                (
                    f"mean of the shipped proxy over seeds {ship[:2]}",
                    2,
                    np.mean([col(a.shipped, s) for s in ship[:2]], 0),
                )
            )
        if len(ship) >= 3:
            est.append(
                (
                    f"mean of the shipped proxy over seeds {ship}",
                    len(ship),
                    np.mean([col(a.shipped, s) for s in ship], 0),
                )
            )
    if len(half) >= 2:
        est.append(
            (f"two seeds at half the steps (mean, seeds {half[:2]})", 1, np.mean([col(a.half, s) for s in half[:2]], 0))
        )
        est.append((f"half the steps, seed {half[0]} alone", 0.5, col(a.half, half[0])))
    n = int(np.isfinite(ref).sum())
    print(
        f"study {sdir.path}: {len(ids)} architectures, {n} with a reference ({len(ref_keys)} seed(s)); "
        f"bootstrap over architectures, {a.reps} resamples\n"
    )
    head = ("estimator", "cost (shipped draws)", "Kendall tau", "Spearman rho", "top-3 recall", "top-6 recall")
    print("| " + " | ".join(h + (" [95% CI]" if i > 1 else "") for i, h in enumerate(head)) + " |")
    print("|---|---|---|---|---|---|")
    for name, cost, v in est:
        cells = []
        for fn in (
            kendall_tau,
            spearman_rho,
            lambda x, y: top_overlap(x, y, 3 / n),
            lambda x, y: top_overlap(x, y, 6 / n),
        ):
            lo, hi = bootstrap_ci(fn, v, ref, reps=a.reps)
            cells.append(f"{fn(v, ref):.2f} [{lo:.2f}, {hi:.2f}]")
        print(f"| {name} | {cost:g} | " + " | ".join(cells) + " |")
    if len(ship) >= 2:
        print("\nSeed-to-seed agreement of the shipped proxy (Kendall tau [95% CI] between two draws):\n")
        for i, s in enumerate(ship):
            for t in ship[i + 1 :]:
                x, y = col(a.shipped, s), col(a.shipped, t)
                lo, hi = bootstrap_ci(kendall_tau, x, y, reps=a.reps)
                print(f"- seeds {s} and {t}: {kendall_tau(x, y):.2f} [{lo:.2f}, {hi:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
