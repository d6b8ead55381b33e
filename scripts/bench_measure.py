"""Where a proxy trial's time goes: training against each part of the per-round measurement, and what the
cheaper measurements of a study's proxies cost, timed in one process.

    python scripts/bench_measure.py                                   # measure-cifar.yaml: its first 6 architectures
    python scripts/bench_measure.py --architectures 12 --repeats 2
    python scripts/bench_measure.py --study-dir runs/measure-cifar      # the shares a study's own jobs recorded

For the first N architectures of the study's sample (seed and order as ``nas-fidelity`` draws them, so the
first 6 are one per layout), one torch thread:

1. **parts**: each regime of the space's own protocol is trained as a trial trains it (``fit``); on the
   trained model the three parts of its last measurement are timed again one by one (BatchNorm
   recalibration, validation, eval-mode fit; best of 2). Printed beside the regime's training seconds and
   the measurement seconds the trial itself recorded (``eval_s``: the same parts, measured in the trial).
2. **protocols**: every proxy of the study is trained as a whole trial (``train_candidate``), the order of
   the proxies rotated from one repeat to the next; for each, the trial's seconds and the share of them its
   measurements took (the sum of its rounds' ``eval_s`` over ``wall_s``), medians over repeats and then
   over architectures, and the median ratio of its trial seconds to the first proxy's (the reference of
   the comparison: run in the same process, alternated).

``--study-dir DIR`` trains nothing: for every protocol of a study directory (``nas-fidelity``), the median
over its architectures of the trial seconds, the measurement seconds and their share of the trial, from
its ``jobs.jsonl`` (every round records its ``eval_s``), all measured in that one run on the same workers.

Needs data/cifar10-train.npz (scripts/prepare_cifar.py). The figures are seconds on this machine and vary
with its load; the ratios and shares within one run are what to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from nas.fidelity.config import load_study
from nas.fidelity.plan import sample_architectures
from nas.model.builder import build_model
from trainers.data.loading import load_dataset, stratified_subset
from trainers.training.fit import fit, resolve_device, seed_everything
from trainers.training.measure import evaluate, recalibrate_bn
from trainers.training.proxy import fit_eval_subset, train_candidate


def best_of(fn, n: int = 2) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def parts(arch, ds, protocol) -> list[dict[str, float]]:
    """Each regime of ``protocol``: its training seconds, its last measurement's recorded seconds and
    its three parts timed again on the trained model."""
    tr, ob = protocol.train, protocol.objective
    dev = resolve_device(tr, "cpu")
    full = len(ds.y_train) // min(tr.batch_size, len(ds.y_train))
    steps = tr.steps or tr.epochs * full
    out = []
    for regime in ("generalization", "full"):
        seed_everything(tr.seed)
        sub = stratified_subset(ds.y_train, ob.subset_fraction, tr.seed) if regime != "full" else None
        ys = ds.y_train if sub is None else ds.y_train[sub]
        xs = ds.x_train if sub is None else ds.x_train.subset(sub)
        ev = fit_eval_subset(ys, ob.train_eval_limit, tr.seed)
        vi = fit_eval_subset(ds.y_val, ob.val_eval_limit, tr.seed)
        model = build_model(arch, num_classes=ds.num_classes, image_size=ds.image_size, in_chans=ds.in_chans)
        rows = list(fit(model, ds, tr, train_idx=sub, steps=steps, device=dev, eval_idx=ev, val_idx=vi, regime=regime))
        xe, ye = (xs, ys) if ev is None else (xs.subset(ev), ys[ev])
        xv, yv = (ds.x_val, ds.y_val) if vi is None else (ds.x_val.subset(vi), ds.y_val[vi])
        out.append(
            {
                "train_s": sum(r["round_s"] - r["eval_s"] for r in rows),
                "eval_s": sum(r["eval_s"] for r in rows),
                "bn_s": best_of(
                    lambda: recalibrate_bn(model, xs, tr.bn_recalibrate, tr.eval_batch_size, tr.seed, True)
                ),
                "val_s": best_of(lambda: evaluate(model, xv, yv, tr, dev, True)),
                "fit_s": best_of(lambda: evaluate(model, xe, ye, tr, dev, True)),
                "images": (min(tr.bn_recalibrate, len(ys)), len(yv), len(ye)),
            }
        )
    return out


def from_study(path: str) -> int:
    """The measurement's share of every protocol's trials, as a study directory recorded them."""
    from nas.fidelity.studydir import StudyDir

    sdir = StudyDir(path)
    study = sdir.read_study()
    by: dict[str, list] = {p.name: [] for p in study.protocols}
    for r in sdir.read_records():
        if r.kind == "train" and r.ok and r.history and r.protocol in by:
            ev = sum(float(h["eval_s"]) for h in r.history)
            by[r.protocol].append((float(r.metrics["wall_s"]), ev, r.layout))
    print(f"{path}: measurement (sum of the rounds' eval_s) against the trial's wall_s, per architecture")
    head = f"{'protocol':22s} {'n':>3s} {'trial s':>8s} {'measure s':>10s} {'share':>6s} {'min-max':>10s}"
    print(f"{head}  by layout (median share)")
    for name, rows in by.items():
        if not rows:
            continue
        shares = [e / w for w, e, _ in rows]
        layouts = sorted({lay for *_, lay in rows})
        per = " ".join(f"{lay} {statistics.median(e / w for w, e, la in rows if la == lay):.0%}" for lay in layouts)
        print(
            f"{name:22s} {len(rows):3d} {statistics.median(w for w, _, _ in rows):8.2f} "
            f"{statistics.median(e for _, e, _ in rows):10.2f} {statistics.median(shares):6.0%} "
            f"{min(shares):4.0%}-{max(shares):.0%}  {per}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="measure-cifar.yaml", help="a study YAML (path or bundled name)")
    p.add_argument("--architectures", type=int, default=6, help="the first N of the study's sample")
    p.add_argument("--repeats", type=int, default=2, help="whole trials per proxy and architecture")
    p.add_argument("--skip-parts", action="store_true", help="only the protocols' whole trials")
    p.add_argument("--study-dir", help="train nothing: the measurement shares a study directory recorded")
    a = p.parse_args(argv)
    if a.study_dir:
        return from_study(a.study_dir)
    torch.set_num_threads(1)
    study = load_study(a.study)
    archs = sample_architectures(study)[: a.architectures]
    base = study.proxies[0]
    ds = load_dataset(base.train.data, study.experiment.space.image_size, study.experiment.space.in_chans)
    train_candidate(archs[0], ds, base.train, base.objective, device="cpu")  # warm the process up
    print(f"{study.file}: {len(archs)} architectures, torch {torch.__version__}, 1 thread")

    if not a.skip_parts:
        bn, nv, nf = parts(archs[0], ds, base)[1]["images"]
        print(f"\nparts of proxy {base.name!r} (capacity regime: {bn} BatchNorm, {nv} validation, {nf} fit images)")
        head = ("train s", "eval s", "bn s", "val s", "fit s", "share")
        print(f"{'architecture':44s} {'regime':>6s} " + " ".join(f"{h:>7s}" for h in head))
        shares = []
        for arch in archs:
            regimes = parts(arch, ds, base)
            for name, r in zip(("gen", "cap"), regimes):
                print(
                    f"{str(arch)[:44]:44s} {name:>6s} {r['train_s']:7.2f} {r['eval_s']:7.2f} {r['bn_s']:7.2f} "
                    f"{r['val_s']:7.2f} {r['fit_s']:7.2f} {r['eval_s'] / (r['eval_s'] + r['train_s']):7.0%}",
                    flush=True,
                )
            ev = sum(r["eval_s"] for r in regimes)
            shares.append(ev / (ev + sum(r["train_s"] for r in regimes)))
        print(
            f"measurement share of training + measurement, median over architectures: {statistics.median(shares):.0%}"
        )

    names = [q.name for q in study.proxies]
    walls = {n: [] for n in names}
    shares = {n: [] for n in names}
    print(f"\nwhole trials, {a.repeats} per proxy and architecture (seconds: median over repeats)")
    print(f"{'architecture':44s} " + " ".join(f"{n[:18]:>18s}" for n in names))
    for arch in archs:
        secs = {n: [] for n in names}
        evs = {n: [] for n in names}
        for i in range(a.repeats):
            order = names[i % len(names) :] + names[: i % len(names)]
            for n in order:
                q = study.protocol(n)
                r = train_candidate(arch, ds, q.train, q.objective, device="cpu")
                assert r.status == "ok", r.reason
                secs[n].append(r.metrics["wall_s"])
                evs[n].append(sum(h["eval_s"] for h in r.history) / r.metrics["wall_s"])
        for n in names:
            walls[n].append(statistics.median(secs[n]))
            shares[n].append(statistics.median(evs[n]))
        print(
            f"{str(arch)[:44]:44s} "
            + " ".join(f"{statistics.median(secs[n]):8.2f} s {statistics.median(evs[n]):5.0%}  " for n in names),
            flush=True,
        )
    print(
        f"\n{'proxy':24s} {'trial s (median)':>17s} {'measurement share (median, min-max)':>38s} "
        f"{'trial vs ' + names[0]:>20s}"
    )
    for n in names:
        ratio = statistics.median(w / w0 for w, w0 in zip(walls[n], walls[names[0]]))
        print(
            f"{n:24s} {statistics.median(walls[n]):17.2f} "
            f"{statistics.median(shares[n]):>20.0%} ({min(shares[n]):.0%}-{max(shares[n]):.0%}){'':9s} x{ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
