"""The end-to-end result on CIFAR-10 (issue 20, item 5; docs/end-to-end.md): searches with and without
verified finalists, over 5 search seeds, judged by a reference training, and against the paper's five layouts.

    python scripts/study_end_to_end.py searches          # 5 x nas-search replayed on the tables, finalists trained
    python scripts/study_end_to_end.py references        # writes search_spaces/studies/end-to-end-references-1.yaml
    nas-fidelity search_spaces/studies/end-to-end-references-1.yaml    # the reference, 2 seeds
    (references again after more searches: -2.yaml holds the picks the first did not)
    python scripts/study_end_to_end.py test              # the picks and the best hand layouts on the test set
    python scripts/study_end_to_end.py report            # the figures of docs/end-to-end.md, and its data file

Design (the issue's): search seed ``s`` replays a 100-trial TPE search (sampler seed ``s``) on its own draw of
the 320-candidate table (``DRAWS``: the same proxy protocol trained with other initial weights), so draw-to-draw
noise is part of it. Its finalists (top 3 and the Pareto front, at most 5) are trained again with the 28-step
proxy at 3 seeds of their own (``finalists.train.seed`` = 100 + 10 s, so no two search seeds share a
verification training). The same search without verification gets the verification's compute as 30 more
trials (the in-process replay, whose first 100 trials are the run's). The reference is the 375-steps-per-regime
training of docs/fidelity.md at seeds 0 and 1, for the union of: the top 12 by the mean of the two shipped
tables (bench-cifar-v1 and bench-cifar-rounds-v1), the five hand layouts at one size with the paper's depth
pattern, and every pick. Regret is the pick's reference score against the best reference score among them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "search_spaces" / "benchmarks"
DRAWS = {  # search seed -> its draw of the table
    0: "bench-cifar-v1.json",  # seed 0 before the conv biases were dropped (other initial weights)
    1: "bench-cifar-rounds-v1.json",  # seed 0 with today's networks
    2: "bench-cifar-seed1-v1.json",
    3: "bench-cifar-seed2-v1.json",
    4: "bench-cifar-seed3-v1.json",
}
EARLIER_COPY = {0, 1}  # draws built on a cifar10-train.npz without the class names prepare_cifar.py now stores
TRIALS = 100
VERIFY = {"top_k": 3, "pareto": True, "max": 5, "seeds": 3}
VERIFY_STEPS = 28
HAND_DEPTHS = "L=2,1,1,2,1"  # the paper's pattern (S3 deepest: 2,2,3,5,2) within this space's depths
HAND_SIZES = {"mid": "D=16,32,64,96,192"}  # widths that grow as the paper's (64, 96, 192, 384, 768)
LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "ViT_REL")
TOP = 12
RANKED_BY = (0, 1)  # the draws whose mean score chooses the top (the two tables that ship)
OUT = ROOT / "runs" / "end-to-end"
REF_STUDY = ROOT / "search_spaces" / "studies" / "end-to-end-references-{}.yaml"
REF_DIR = ROOT / "runs" / "end-to-end-references-{}"
DATA = ROOT / "docs" / "data" / "end-to-end.json"


def hand_layouts() -> dict[str, list[str]]:
    """size -> the five layouts at that size (ViT_REL with its 8x8 patches)."""
    out = {}
    for size, widths in HAND_SIZES.items():
        out[size] = [f"{lay} {HAND_DEPTHS} {widths}" + (" patch=8" if lay == "ViT_REL" else "") for lay in LAYOUTS]
    return out


def _tables():
    from trainers.training.tabular import axes, load_table

    tables = {s: load_table(TABLES / name) for s, name in DRAWS.items() if (TABLES / name).exists()}
    scores = {
        s: {k: axes(e, t.objective, t.num_classes)["score"] for k, e in t.entries.items() if e.ok}
        for s, t in tables.items()
    }
    return tables, scores


def _plain(v):
    """A table's read-only mappings and tuples as plain dicts and lists (for yaml.safe_dump)."""
    if hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _search_yaml(seed: int, data: Path) -> dict:
    from trainers.training.tabular import load_table

    t = load_table(TABLES / DRAWS[seed])
    body = _plain({k: t.search_yaml[k] for k in ("space", "train", "objective")})
    body["train"] = {**body["train"], "data": {**body["train"]["data"], "path": str(data.resolve())}}
    for key in ("report_every", "round_eval_limit"):  # a rounds table's proxy overrides (docs/benchmark.md)
        if t.protocol.get(f"train.{key}") is not None:
            body["train"][key] = t.protocol[f"train.{key}"]
    assert body["train"]["seed"] == dict(t.seeds)["proxy"][0]
    body["search"] = {
        "trials": TRIALS,
        "sampler": "tpe",
        "startup_trials": 4,
        "seed": seed,
        "max_concurrent": 2,
        "cpus_per_trial": 1,
        "trainer": f"table:{TABLES / DRAWS[seed]}",
    }
    body["finalists"] = {  # one protocol for every draw: a rounds table's finer rounds are left out
        **VERIFY,
        "train": {"steps": VERIFY_STEPS, "seed": 100 + 10 * seed, "report_every": None, "round_eval_limit": None},
    }
    if seed in EARLIER_COPY:  # that table was built on an earlier copy of the file: the data is chosen on purpose
        body["finalists"]["train"]["data"] = dict(body["train"]["data"])
    return body


def cmd_searches(a) -> int:
    from nas.fsio import atomic_write, make_dirs

    make_dirs(OUT)
    for s in a.seeds:
        path = OUT / f"search-seed{s}.yaml"
        atomic_write(path, yaml.safe_dump(_search_yaml(s, Path(a.data)), sort_keys=False))
        run_dir = OUT / f"seed{s}"
        cmd = ["nas-search", "--space", str(path), "--run-dir", str(run_dir), "--quiet"]
        if run_dir.exists():
            cmd = ["nas-search", "--resume", str(run_dir), "--quiet"]
        print("$", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            return rc
    return 0


def _runs() -> dict[int, dict]:
    """Per search seed: the verified pick, the unverified picks at 100 and 130 trials, the finalists and
    the verification's cost, read through the run directory's own readers."""
    from nas.export.model_config import select_record
    from nas.search.finalists import verified_of
    from nas.search.replay import replay_search
    from nas.search.rundir import RunDir

    out = {}
    for s in DRAWS:
        rd = OUT / f"seed{s}"
        if not (rd / "experiment.json").exists():
            continue
        run = RunDir(rd)
        recs = [r for r in run.read_records() if r.ok]
        best = select_record(rd)[0]
        ver = verified_of(run)
        meta = run.read_meta()
        cost = next((x["verification"] for x in reversed(meta.sessions) if x.get("verification")), None)
        replayed = replay_search(run.read_experiment(), trials=TRIALS + 30, lag=2)  # the run's own settings
        first = [r["id"] for r in replayed[:TRIALS]]
        by_number = [r.id for r in sorted(run.read_records(), key=lambda r: r.number)]
        out[s] = {
            "draw": DRAWS[s],
            "verified_pick": best.arch_str,
            "unverified_pick_100": max(recs, key=lambda r: r.score).arch_str,
            "unverified_pick_130": max((r for r in replayed if r["status"] == "ok"), key=lambda r: r["score"])[
                "arch_str"
            ],
            "replay_matches_run": first == by_number,
            "finalists": {
                v.arch_str: {"mean": v.mean, "ci": [v.lo, v.hi], "scores": list(v.scores), "tied": v.tied}
                for v in (ver or {}).values()
            },
            "cost": cost,
        }
    return out


def _draw_scores() -> dict[int, dict[str, float]]:
    """Per search seed: its draw's objective score of every candidate that trained (arch string -> score)."""
    from trainers.training.tabular import axes, load_table

    out = {}
    for s, draw in DRAWS.items():
        t = load_table(TABLES / draw)
        out[s] = {e.arch_str: axes(e, t.objective, t.num_classes)["score"] for e in t.entries.values() if e.ok}
    return out


def _draw_agreement(scores: dict[int, dict[str, float]]) -> dict[tuple[str, str], tuple[int, float, float, float]]:
    """Kendall tau (bootstrap 95% interval) between every two draws of the table, over the candidates both
    trained: how much of one draw's ranking the next draw keeps."""
    from nas.fidelity import agreement

    out = {}
    for i, a in enumerate(DRAWS):
        for b in list(DRAWS)[i + 1 :]:
            keys = [k for k in scores[a] if k in scores[b]]
            r = agreement([scores[a][k] for k in keys], [scores[b][k] for k in keys])
            out[(DRAWS[a].removesuffix(".json"), DRAWS[b].removesuffix(".json"))] = (len(keys), r["tau"], *r["tau_ci"])
    return out


def _time_ratios() -> list[float]:
    """Per finalist of every search: its verification's seconds per training over the seconds the table
    recorded for the same architecture's proxy trial (the same network, so a per-architecture cost ratio)."""
    from nas.search.finalists import verified_of
    from nas.search.rundir import RunDir
    from trainers.training.tabular import load_table

    out = []
    for s, draw in DRAWS.items():
        rd = OUT / f"seed{s}"
        if not (rd / "experiment.json").exists():
            continue
        entries = load_table(TABLES / draw).entries
        for v in (verified_of(RunDir(rd)) or {}).values():
            tabulated = entries[v.id].metrics.get("wall_s")
            if v.runs and tabulated:
                out.append(v.wall_s / v.runs / tabulated)
    return out


def _ref_studies() -> list[int]:
    """The indices of the reference study YAMLs written so far (1, 2, ...)."""
    out, i = [], 1
    while Path(str(REF_STUDY).format(i)).exists():
        out.append(i)
        i += 1
    return out


def cmd_references(a) -> int:
    """Write the next reference study: the architectures no earlier one lists (the first: the top, the hand
    layouts and the picks so far; a later one: the picks of later searches)."""
    from nas.fsio import atomic_write
    from trainers.training.tabular import load_table

    _, scores = _tables()
    ids = set.intersection(*(set(scores[s]) for s in RANKED_BY))
    mean = {k: statistics.fmean(scores[s][k] for s in RANKED_BY) for k in ids}
    t = load_table(TABLES / DRAWS[RANKED_BY[0]])
    names = [t.entries[k].arch_str for k in sorted(mean, key=lambda k: -mean[k])[:TOP]]
    for size in hand_layouts().values():
        names += size
    for run in _runs().values():
        names += [run["verified_pick"], run["unverified_pick_100"], run["unverified_pick_130"]]
    names = list(dict.fromkeys(_short(n) for n in names))
    done = _ref_studies()
    for i in done:
        names = [n for n in names if n not in _listed(i)]
    if len(names) < 2:  # a study trains at least two; the earlier studies hold the rest
        print(f"{len(names)} architecture(s) without a reference study: {names}; nothing written")
        return 0
    doc = {
        "study": {
            "space": "../bench-cifar.yaml",
            "architectures": names,
            "seed": 0,
            "zero_cost": [],
            "max_concurrent": 2,
            "cpus_per_trial": 1,
        },
        "proxies": {"default": {}},
        "reference": {
            "seeds": [0, 1],
            "train": {"steps": None, "epochs": 3, "bn_recalibrate": 1024},
            "objective": {"train_eval_limit": 2000},
        },
    }
    n = len(done) + 1
    head = (
        "# Reference trainings of the end-to-end study (docs/end-to-end.md), written by\n"
        "# `python scripts/study_end_to_end.py references`: "
        + (
            "the top 12 of the shipped tables, the paper's five layouts and the picks so far"
            if n == 1
            else "the picks that earlier reference studies lack"
        )
        + ";\n# the reference of bench-cifar-table.yaml at seeds 0 and 1. "
        f"Run: `nas-fidelity search_spaces/studies/end-to-end-references-{n}.yaml`.\n"
    )
    path = Path(str(REF_STUDY).format(n))
    atomic_write(path, head + yaml.safe_dump(doc, sort_keys=False, width=120))
    print(f"{path}: {len(names)} architectures x 2 reference seeds")
    return 0


def _listed(i: int) -> list[str]:
    from nas.yamlio import load_yaml_file

    return [_short(n) for n in load_yaml_file(Path(str(REF_STUDY).format(i)))["study"]["architectures"]]


def _references() -> dict[str, dict[int, float]]:
    """arch string (without the default ffn option) -> {reference seed: score}, through nas-fidelity's reader,
    over every reference study run so far. The score is nas-fidelity's reference score (fidelity.md): the
    objective over the full validation accuracy of the scarce-data training and the fit of the full-data one,
    not the record's own ``score`` (the trainer's generalization on its smaller held-out slice)."""
    from nas.fidelity.report import reference_axes
    from nas.fidelity.studydir import StudyDir, checked_records, prepare

    out: dict[str, dict[int, float]] = {}
    for i in _ref_studies():
        if not Path(str(REF_DIR).format(i)).exists():
            continue
        sdir = StudyDir(Path(str(REF_DIR).format(i)))
        study, archs = prepare(sdir, None)
        names = {x.id: _short(str(x)) for x in archs}
        for r in checked_records(sdir, study, archs):
            if r.protocol == "reference" and r.ok:
                axes = reference_axes(r, study.reference.objective, study.experiment.num_classes)
                out.setdefault(names[r.arch_id], {})[r.seed] = axes["score"]
    return out


def _short(name: str) -> str:
    return name.replace(" ffn_expansion=2.0", "")


def cmd_test(a) -> int:
    """Train each distinct verified pick and the best hand layout of each size with the reference protocol
    (nas-train) and score it on CIFAR-10's test set (nas-eval)."""
    from nas.export.model_config import save_model_config
    from nas.fsio import atomic_write, make_dirs
    from nas.model.arch import Architecture, ModelConfig

    runs = _runs()
    refs = _references()
    picks = list(dict.fromkeys(r["verified_pick"] for r in runs.values()))
    for names in hand_layouts().values():
        have = [n for n in names if len(refs.get(n, {})) == 2]
        if have:
            picks.append(max(have, key=lambda n: statistics.fmean(refs[n].values())))
    make_dirs(OUT / "test")
    proto = OUT / "test" / "reference-protocol.yaml"
    body = _search_yaml(2, Path(a.data))
    body["train"] = {**body["train"], "steps": None, "epochs": 3, "bn_recalibrate": 1024, "seed": 0}
    atomic_write(proto, yaml.safe_dump({"train": body["train"]}, sort_keys=False))
    for name in picks:
        arch = Architecture.parse(_short(name))
        folder = OUT / "test" / arch.id
        cfg = folder.with_suffix(".yaml")
        save_model_config(ModelConfig(arch=arch, num_classes=10, image_size=32, in_chans=3), cfg)
        if not (folder / "model.yaml").exists():
            subprocess.check_call(["nas-train", str(cfg), "--protocol", str(proto), "--out", str(folder), "--quiet"])
        out = folder.with_suffix(".test.json")
        subprocess.check_call(["nas-eval", str(folder), str(Path(a.test)), "--out", str(out), "--force"])
        print(name, _test_metrics(out).get("accuracy"))
    return 0


def _test_metrics(path: Path) -> dict:
    """A metrics file nas-eval wrote, through the house reader."""
    from nas.fsio import read_json

    return read_json(path, dict, what="the test metrics", fix="Run `study_end_to_end.py test` again.")


def _welch_tied(x: list[float], y: list[float]) -> bool:
    from nas.search.finalists import tied_with

    return bool(tied_with(x, y))


def cmd_report(a) -> int:
    from nas.fsio import atomic_write, make_dirs

    runs = _runs()
    refs = _references()
    two = {k: v for k, v in refs.items() if len(v) == 2}
    ref_mean = {k: statistics.fmean(v.values()) for k, v in two.items()}
    best_name = max(ref_mean, key=ref_mean.get)
    best = ref_mean[best_name]
    print(f"references: {len(two)} architectures at 2 seeds; best {best_name} at {best:.4f}")
    rows = []
    for s, r in sorted(runs.items()):
        row = {"seed": s, "draw": r["draw"], "replay_matches_run": r["replay_matches_run"], "cost": r["cost"]}
        for key in ("verified_pick", "unverified_pick_100", "unverified_pick_130"):
            name = _short(r[key])
            row[key] = name
            row[key + "_ref"] = ref_mean.get(name)
            row[key + "_regret_pp"] = None if name not in ref_mean else round(100 * (best - ref_mean[name]), 2)
        rows.append(row)
        print(
            f"seed {s}: verified {row['verified_pick']} regret {row['verified_pick_regret_pp']} pp; unverified(100) "
            f"{row['unverified_pick_100_regret_pp']} pp; unverified(130) {row['unverified_pick_130_regret_pp']} pp; "
            f"replay==run {r['replay_matches_run']}"
        )
    summary = {}
    for key in ("verified_pick", "unverified_pick_100", "unverified_pick_130"):
        regrets = [r[key + "_regret_pp"] for r in rows if r[key + "_regret_pp"] is not None]
        picks = [r[key] for r in rows]
        pairs = [(i, j) for i in range(len(picks)) for j in range(i + 1, len(picks))]
        tied = [
            picks[i] == picks[j] or _welch_tied(list(two[picks[i]].values()), list(two[picks[j]].values()))
            for i, j in pairs
            if picks[i] in two and picks[j] in two
        ]
        same = sum(picks[i] == picks[j] for i, j in pairs)
        summary[key] = {
            "median_regret_pp": statistics.median(regrets) if regrets else None,
            "regrets_pp": regrets,
            "pairs_tied": f"{sum(tied)}/{len(tied)}",
            "pairs_same_pick": f"{same}/{len(pairs)}",
            "distinct_picks": len(set(picks)),
        }
        print(key, summary[key])
    eq = [r["cost"]["proxy_trial_equivalents"] for r in rows if r["cost"]]
    steps_eq = [
        r["cost"]["trainings"] * VERIFY_STEPS / 14 for r in rows if r["cost"]
    ]  # the same cost counted in training steps (14 per regime in a proxy trial)
    print(f"verification cost: {eq} proxy-trial equivalents by time; {steps_eq} by training steps")
    scores = _draw_scores()
    draws = _draw_agreement(scores)
    for (a, b), (n, tau, lo, hi) in draws.items():
        print(f"draws {a} vs {b}: Kendall tau {tau:.2f} [{lo:.2f}, {hi:.2f}] over {n}")
    bests = {s: max(t, key=t.get) for s, t in scores.items()}
    found = sum(_short(r["unverified_pick_100"]) == _short(bests[r["seed"]]) for r in rows)
    print(f"unverified picks that are their draw's best of all 320: {found} of {len(rows)}")
    ratios = _time_ratios()
    print(
        f"a verification training against the table's proxy trial of the same architecture: median "
        f"x{statistics.median(ratios):.2f} (x{min(ratios):.2f}-x{max(ratios):.2f}, n = {len(ratios)})"
    )
    hand = {}
    from nas.model.arch import Architecture
    from nas.model.cost import count_cost
    from nas.search.finalists import t_interval

    def cost(name: str):
        c = count_cost(Architecture.parse(name), image_size=32, num_classes=10, in_chans=3)
        return int(c.params), int(c.macs)

    for size, names in hand_layouts().items():
        for n in names:
            v = list(two.get(n, {}).values())
            lo, hi = t_interval(v) or (None, None)
            p, m = cost(n)
            hand[n] = {"size": size, "mean": ref_mean.get(n), "ci": [lo, hi], "seeds": v, "params": p, "macs": m}
            print(f"hand {size:5s} {n:45s} {ref_mean.get(n, float('nan')):.4f} params {p:,} MACs {m:,}")
    versus = []
    for name in dict.fromkeys(r["verified_pick"] for r in rows):
        if name not in two:
            continue
        p, m = cost(name)
        fits = [n for n, h in hand.items() if h["params"] <= p and h["macs"] <= m and h["mean"] is not None]
        top = max(fits, key=lambda n: hand[n]["mean"]) if fits else None
        lo, hi = t_interval(list(two[name].values())) or (None, None)
        entry = {"pick": name, "mean": ref_mean[name], "ci": [lo, hi], "params": p, "macs": m, "best_hand": top}
        if top:
            entry["best_hand_mean"] = hand[top]["mean"]
            entry["difference_pp"] = round(100 * (ref_mean[name] - hand[top]["mean"]), 2)
            entry["tied"] = _welch_tied(list(two[name].values()), hand[top]["seeds"])
        versus.append(entry)
        print("versus hand:", entry)
    tests = {}
    for f in sorted((OUT / "test").glob("*.test.json")) if (OUT / "test").exists() else []:
        doc = _test_metrics(f)  # paths relative to the repository: the data file is committed
        tests[f.name.split(".")[0]] = {
            k: v.replace(f"{ROOT}/", "") if k in ("model", "source") and isinstance(v, str) else v
            for k, v in doc.items()
        }
    make_dirs(DATA.parent)
    doc = {
        "format": "coatnas-end-to-end/1",
        "design": {"draws": DRAWS, "trials": TRIALS, "finalists": VERIFY, "verify_steps": VERIFY_STEPS},
        "references": {k: {str(s): v for s, v in d.items()} for k, d in sorted(refs.items())},
        "best_reference": {"arch": best_name, "mean": best},
        "searches": rows,
        "summary": summary,
        "draw_agreement": {f"{a} vs {b}": v for (a, b), v in draws.items()},
        "unverified_pick_is_draw_best": found,
        "verification_time_ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "hand": hand,
        "versus_hand": versus,
        "test": tests,
    }
    atomic_write(DATA, json.dumps(doc, indent=1, default=float) + "\n")
    print(f"wrote {DATA}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("searches", help="run the 5 searches (nas-search on the tables, finalists trained)")
    s.add_argument("--seeds", type=int, nargs="+", default=list(DRAWS))
    s.add_argument("--data", default=str(ROOT / "data" / "cifar10-train.npz"), help="CIFAR-10 training npz")
    sub.add_parser("references", help="write the reference study YAML")
    t = sub.add_parser("test", help="train the picks with the reference protocol and score them on the test set")
    t.add_argument("--data", default=str(ROOT / "data" / "cifar10-train.npz"))
    t.add_argument("--test", default=str(ROOT / "data" / "cifar10-test.npz"))
    sub.add_parser("report", help="the figures, and docs/data/end-to-end.json")
    a = p.parse_args(argv)
    return {"searches": cmd_searches, "references": cmd_references, "test": cmd_test, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
