"""Where a proxy ranks worse than another: per layout family, within each family, and at the top.

    python scripts/supernet_account.py runs/supernet-cifar --proxy ws --against default

For a fidelity study with a reference, prints for each named proxy (each seed): Kendall tau with the reference
score over all architectures and without ViT_REL (with 95% bootstrap intervals over architectures), tau within
each layout family (5 architectures each in the shipped studies: read them as directions, not figures), the
layout families ranked by their mean reference score and by the proxy's, and which of the reference's top 5 the
proxy puts in its own top 5. Reads the study through ``nas.fidelity.StudyDir`` (docs/supernet.md uses it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from nas.errors import UserError
    from nas.fidelity import StudyDir, bootstrap_ci, kendall_tau
    from nas.fidelity.report import reference_axes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir")
    p.add_argument("--proxy", action="append", required=True, help="a proxy protocol of the study (repeat)")
    p.add_argument("--against", action="append", default=[], help="another proxy printed beside it (repeat)")
    a = p.parse_args(argv)
    try:
        sdir = StudyDir(a.study_dir)
        study = sdir.read_study()
        archs = sdir.read_architectures(study)
        records = sdir.read_records()
    except UserError as err:
        print(f"supernet_account.py: {err}", file=sys.stderr)
        return 2
    k = study.experiment.num_classes
    ref = {
        r.arch_id: reference_axes(r, study.experiment.objective, k)["score"]
        for r in records
        if r.protocol == "reference" and r.seed == min(study.reference.seeds) and r.status == "ok"
    }
    layout = {x.id: x.layout_name for x in archs}
    ids = [x.id for x in archs if x.id in ref]
    for name in [*a.proxy, *a.against]:
        for seed in sorted({r.seed for r in records if r.protocol == name}):
            score = {r.arch_id: r.score for r in records if r.protocol == name and r.seed == seed and r.status == "ok"}
            both = [i for i in ids if i in score]
            if len(both) < 3:
                print(f"{name} seed {seed}: fewer than 3 architectures with both results")
                continue
            x, y = [ref[i] for i in both], [score[i] for i in both]
            lo, hi = bootstrap_ci(kendall_tau, x, y, reps=1000, seed=0)
            nv = [i for i in both if layout[i] != "ViT_REL"]
            lo2, hi2 = bootstrap_ci(kendall_tau, [ref[i] for i in nv], [score[i] for i in nv], reps=1000, seed=0)
            print(f"\n{name} seed {seed}: n={len(both)}")
            print(f"  tau, all:          {kendall_tau(x, y):.2f} [{lo:.2f}, {hi:.2f}]")
            print(
                f"  tau, no ViT_REL:   {kendall_tau([ref[i] for i in nv], [score[i] for i in nv]):.2f} "
                f"[{lo2:.2f}, {hi2:.2f}] (n={len(nv)})"
            )
            fam = defaultdict(list)
            for i in both:
                fam[layout[i]].append(i)
            within = {f: kendall_tau([ref[i] for i in v], [score[i] for i in v]) for f, v in fam.items()}
            print("  tau within each layout: " + ", ".join(f"{f} {t:.2f}" for f, t in sorted(within.items())))
            by_ref = sorted(fam, key=lambda f: -statistics.fmean(ref[i] for i in fam[f]))
            by_proxy = sorted(fam, key=lambda f: -statistics.fmean(score[i] for i in fam[f]))
            print(f"  layouts by reference: {' > '.join(by_ref)}")
            print(f"  layouts by {name}:    {' > '.join(by_proxy)}")
            top_ref = sorted(both, key=lambda i: -ref[i])[:5]
            top_proxy = set(sorted(both, key=lambda i: -score[i])[:5])
            kept = [layout[i] for i in top_ref if i in top_proxy]
            print(f"  reference top 5 in its top 5: {len(kept)} ({', '.join(kept) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
