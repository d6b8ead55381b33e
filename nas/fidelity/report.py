"""What a fidelity study shows: per-architecture table, rank agreement with intervals, plots, markdown.

Reference axes (what each proxy axis claims to measure), each the mean over the reference seeds:

- ``generalization``: validation accuracy after the reference's long training on scarce data (its
  generalization regime: ``objective.subset_fraction`` of the training split);
- ``capacity``: how well the reference's long training on the full split fits it (the objective's
  ``capacity_metric`` of the eval-mode fit: accuracy, 1 - loss / ln K, or their mean);
- ``score``: the objective's weighted mean of those two; ``val_acc``: validation accuracy of the full-split
  training.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.fidelity.config import REFERENCE, ZERO_COST_JOB, Study
from nas.fidelity.stats import agreement
from nas.fidelity.studydir import JobRecord, StudyDir, check_folder, checked_records, json_safe
from nas.fsio import atomic_write, read_json

AXES = ("score", "generalization", "capacity", "val_acc")
# proxy measure -> the reference axis it is compared with
PROXY_MEASURES = {
    "score": "score",
    "generalization": "generalization",
    "capacity": "capacity",
    "gen_val_acc": "generalization",
    "val_acc": "val_acc",
}


REFERENCE_METRICS = ("gen_val_acc", "cap_train_acc", "cap_train_loss", "cap_val_acc")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmean(values: Any) -> float:
    """The mean of the values that are numbers (NaN when there are none: a trainer that does not report it)."""
    vs = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(vs) if vs else math.nan


def reference_axes(rec: JobRecord, objective, num_classes: int) -> dict[str, float]:
    import trainers.objectives.registry as obj

    m = rec.metrics
    missing = [k for k in REFERENCE_METRICS if not _finite(m.get(k))]
    if missing:
        raise UserError(
            f"The reference training {rec.key!r} in jobs.jsonl has no value of {', '.join(missing)} among its "
            "metrics, "
            "which the reference axes are computed from (its trainer does not report them, or the line was "
            "edited). Train the reference with a trainer that reports "
            f"{', '.join(REFERENCE_METRICS)} (trainers.proxy:train_candidate does), or delete that line to "
            "train it again."
        )
    g = m["gen_val_acc"]
    c = obj.capacity(m["cap_train_acc"], m["cap_train_loss"], num_classes, objective)
    return {"generalization": g, "capacity": c, "score": obj.score(g, c, objective), "val_acc": m["cap_val_acc"]}


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a normal 95% interval (0 for one value)."""
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def analyse(study: Study, records: list[JobRecord]) -> dict[str, Any]:
    """Everything the report shows, as plain data (also written to ``fidelity.json``, NaN as null)."""
    by_arch, failed = _by_arch(study, records)
    rows = _rows(by_arch)
    reps, seed = study.settings.bootstrap, study.settings.seed
    proxies, cost = _proxy_agreement(study, rows, reps, seed)
    zero_cost = _zero_cost_agreement(study, rows, reps, seed)
    selection = _selections(study, rows)
    seeds = study.reference.seeds
    noise_ceiling = _noise_ceiling(rows, seeds, reps, seed)
    return {
        "architectures": len(by_arch),
        "complete": len(rows),
        "failed": dict(failed),
        "rows": rows,
        "proxies": proxies,
        "zero_cost": zero_cost,
        "noise_ceiling": noise_ceiling,
        "cost": cost,
        "selection": selection,
        "layouts": _layouts(rows, seeds),
        "weight_sharing": [p.name for p in study.protocols if p.train.supernet is not None],
    }


def _by_arch(study: Study, records: list[JobRecord]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """The successful records gathered per architecture (reference axes per seed, proxy results per
    protocol, zero-cost scores), and the number of failed jobs per protocol."""
    k = study.experiment.num_classes
    by_arch: dict[str, dict[str, Any]] = defaultdict(lambda: {"proxies": defaultdict(list), "reference": {}})
    failed = defaultdict(int)
    for r in records:
        a = by_arch[r.arch_id]
        a.update(arch=r.arch, layout=r.layout)
        if not r.ok:
            failed[r.protocol] += 1
            continue
        m = r.metrics
        if r.kind == ZERO_COST_JOB:
            a["zero_cost"] = dict(r.zero_cost)
        elif r.protocol == REFERENCE:
            a["reference"][r.seed] = {
                **reference_axes(r, study.reference.objective, k),
                "wall_s": m.get("wall_s", math.nan),
                "params": m.get("params"),
                "macs": m.get("macs"),
            }
        else:
            a["proxies"][r.protocol].append(
                {
                    "score": r.score,
                    "generalization": r.generalization,
                    "capacity": r.capacity,
                    "gen_val_acc": m.get("gen_val_acc"),
                    "val_acc": m.get("val_acc"),
                    "wall_s": m.get("wall_s", math.nan),
                }
            )
    return by_arch, failed


def _rows(by_arch: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per architecture with a reference result (means over seeds and repeats), best reference first."""
    rows = []
    for aid, a in by_arch.items():
        if not a["reference"]:
            continue
        refs = list(a["reference"].values())
        row = {
            "arch_id": aid,
            "arch": a["arch"],
            "layout": a["layout"],
            "params": refs[0]["params"],
            "macs": refs[0]["macs"],
            "ref_seeds": sorted(a["reference"]),
            "ref": {ax: statistics.fmean(r[ax] for r in refs) for ax in AXES},
            "ref_by_seed": {s: {ax: v[ax] for ax in AXES} for s, v in a["reference"].items()},
            "ref_wall_s": _fmean(r["wall_s"] for r in refs),
            "proxies": {
                p: {m: _fmean(x[m] for x in xs) for m in (*PROXY_MEASURES, "wall_s")}
                for p, xs in a["proxies"].items()
                if xs
            },
            "zero_cost": a.get("zero_cost", {}),
        }
        rows.append(row)
    rows.sort(key=lambda r: -r["ref"]["score"])
    return rows


def _proxy_agreement(
    study: Study, rows: list[dict[str, Any]], reps: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per proxy protocol: the agreement of each measure with its reference axis; and the cost of each
    protocol (the proxies' against the reference's, then the reference's own)."""
    proxies: dict[str, Any] = {}
    cost: dict[str, Any] = {}
    for p in study.proxies:
        have = [r for r in rows if p.name in r["proxies"]]
        proxies[p.name] = {
            m: agreement([r["proxies"][p.name][m] for r in have], [r["ref"][ax] for r in have], reps=reps, seed=seed)
            for m, ax in PROXY_MEASURES.items()
        }
        ratios = [r["proxies"][p.name]["wall_s"] / r["ref_wall_s"] for r in have if r["ref_wall_s"] > 0]
        cost[p.name] = {
            "median_ratio": statistics.median(ratios) if ratios else math.nan,
            "median_proxy_s": statistics.median([r["proxies"][p.name]["wall_s"] for r in have]) if have else math.nan,
        }
    cost[REFERENCE] = {"median_s": statistics.median([r["ref_wall_s"] for r in rows]) if rows else math.nan}
    return proxies, cost


def _zero_cost_agreement(study: Study, rows: list[dict[str, Any]], reps: int, seed: int) -> dict[str, Any]:
    """Per zero-cost proxy: its agreement with each reference axis."""
    out = {}
    for z in study.settings.zero_cost:
        have = [r for r in rows if z in r["zero_cost"]]
        out[z] = {
            ax: agreement([r["zero_cost"][z] for r in have], [r["ref"][ax] for r in have], reps=reps, seed=seed)
            for ax in AXES
        }
    return out


def _selections(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pre-screen of each proxy protocol and each zero-cost proxy (see ``_selection``)."""
    out = {
        f"proxy:{p.name}": _selection(rows, lambda r, p=p.name: r["proxies"].get(p, {}).get("score"))
        for p in study.proxies
    }
    out.update(
        {f"zero_cost:{z}": _selection(rows, lambda r, z=z: r["zero_cost"].get(z)) for z in study.settings.zero_cost}
    )
    return out


def _noise_ceiling(rows: list[dict[str, Any]], seeds: tuple[int, ...], reps: int, seed: int) -> dict[str, Any]:
    """The agreement of the first two reference seeds with each other, per axis (empty with one seed)."""
    if len(seeds) < 2:
        return {}
    s0, s1 = seeds[0], seeds[1]
    both = [r for r in rows if s0 in r["ref_by_seed"] and s1 in r["ref_by_seed"]]
    return {
        ax: agreement(
            [r["ref_by_seed"][s0][ax] for r in both], [r["ref_by_seed"][s1][ax] for r in both], reps=reps, seed=seed
        )
        for ax in AXES
    }


def _selection(rows: list[dict[str, Any]], key, share: float = 0.25) -> dict[str, float]:
    """Keeping the best ``share`` of the architectures by ``key`` (a pre-screen): the mean and the best
    reference score among those kept, against the expectation for a random subset of the same size."""
    have = [r for r in rows if key(r) is not None and math.isfinite(key(r))]
    n = len(have)
    if n < 4:
        return {"n": n}
    k = max(1, round(share * n))
    kept = sorted(have, key=lambda r: -key(r))[:k]
    ref = sorted(r["ref"]["score"] for r in have)
    # E[max of a random k-subset] = sum_i v_(i) * C(i-1, k-1) / C(n, k), values sorted ascending
    expected_best = sum(v * math.comb(i, k - 1) for i, v in enumerate(ref)) / math.comb(n, k)
    return {
        "n": n,
        "kept": k,
        "kept_mean": statistics.fmean(r["ref"]["score"] for r in kept),
        "kept_best": max(r["ref"]["score"] for r in kept),
        "random_mean": statistics.fmean(ref),
        "random_best": expected_best,
        "best": ref[-1],
    }


def _layouts(rows: list[dict[str, Any]], seeds: tuple[int, ...]) -> dict[str, Any]:
    """Per layout: mean and 95% interval of each reference axis over its architectures and seeds."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["layout"]].append(r)
    out = {}
    for lay, rs in groups.items():
        vals = {ax: [v[ax] for r in rs for v in r["ref_by_seed"].values()] for ax in AXES}
        out[lay] = {"n": len(rs), **{ax: _mean_ci(v) for ax, v in vals.items()}}
    return out


def _fmt(a: dict[str, Any], key: str) -> str:
    v, ci = a[key], a[f"{key}_ci"]
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if math.isfinite(ci[0]) else f"{v:.2f}"


def format_tables(res: dict[str, Any]) -> str:
    """The markdown tables of the report."""
    lines = [
        f"{res['complete']} architectures with a reference result (of {res['architectures']}); failed jobs: "
        f"{res['failed'] or 'none'}.",
        "",
        "| proxy | measure | vs reference | n | Kendall tau [95% CI] | Spearman rho [95% CI] | top-10% overlap "
        "| cost vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for p, ms in res["proxies"].items():
        ratio = res["cost"][p]["median_ratio"]
        for m, a in ms.items():
            lines.append(
                f"| {p} | {m} | {PROXY_MEASURES[m]} | {a['n']} | {_fmt(a, 'tau')} | {_fmt(a, 'rho')} | "
                f"{_fmt(a, 'top10')} | {ratio:.3f} |"
            )
    if res.get("weight_sharing"):
        notes.append(
            f"Weight-sharing proxies ({', '.join(res['weight_sharing'])}): their cost counts each candidate's "
            "inherited trial only; their supernets train once (STUDY/supernet/, timed in the checkpoints) and are "
            "shared by every candidate of a search (docs/supernet.md)."
        )
    for z, axes in res["zero_cost"].items():
        for ax in ("score", "generalization", "capacity"):
            a = axes[ax]
            lines.append(
                f"| zero-cost | {z} | {ax} | {a['n']} | {_fmt(a, 'tau')} | {_fmt(a, 'rho')} | {_fmt(a, 'top10')} | |"
            )
    for ax, a in res["noise_ceiling"].items():
        lines.append(
            f"| noise ceiling | reference seed vs seed | {ax} | {a['n']} | {_fmt(a, 'tau')} | "
            f"{_fmt(a, 'rho')} | {_fmt(a, 'top10')} | |"
        )
    if notes:
        lines += ["", *notes]
    sel = res.get("selection", {})
    if sel:
        lines += [
            "",
            "Pre-screen: keep the best 25% by each proxy; reference score of what is kept, against a random "
            "25% (expected values) and the best architecture of the sample.",
            "",
            "| kept by | n | kept | mean reference score kept | random | best kept | random (expected) | best of all |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in sel.items():
            if "kept" in v:
                lines.append(
                    f"| {name} | {v['n']} | {v['kept']} | {v['kept_mean']:.4f} | {v['random_mean']:.4f} | "
                    f"{v['kept_best']:.4f} | {v['random_best']:.4f} | {v['best']:.4f} |"
                )
    lines += [
        "",
        "| layout | n | reference generalization | reference capacity | reference score | reference val_acc |",
        "|---|---|---|---|---|---|",
    ]
    for lay, v in sorted(res["layouts"].items(), key=lambda kv: -kv[1]["score"][0]):
        cells = " | ".join(
            f"{v[ax][0]:.4f} ± {v[ax][1]:.4f}" for ax in ("generalization", "capacity", "score", "val_acc")
        )
        lines.append(f"| {lay} | {v['n']} | {cells} |")
    return "\n".join(lines)


def _scatter(res: dict[str, Any]) -> bytes | None:
    """The scatter plot of each proxy measure against its reference axis, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    names = list(res["proxies"])
    panels = [(p, m) for p in names for m in ("score", "generalization", "capacity")]
    if not panels:
        return None
    cols = 3
    fig, axs = plt.subplots(len(names), cols, figsize=(4 * cols, 3.4 * len(names)), squeeze=False)
    layouts = sorted({r["layout"] for r in rows})
    colors = {lay: plt.cm.tab10(i % 10) for i, lay in enumerate(layouts)}
    for ax, (p, m) in zip(axs.flat, panels):
        for lay in layouts:
            pts = [
                (r["proxies"][p][m], r["ref"][PROXY_MEASURES[m]])
                for r in rows
                if r["layout"] == lay and p in r["proxies"]
            ]
            if pts:
                ax.scatter(*zip(*pts), s=18, color=colors[lay], label=lay)
        a = res["proxies"][p][m]
        ax.set_title(f"{p}: {m}  tau={a['tau']:.2f}", fontsize=9)
        ax.set_xlabel(f"proxy {m}", fontsize=8)
        ax.set_ylabel(f"reference {PROXY_MEASURES[m]}", fontsize=8)
        ax.tick_params(labelsize=7)
    if axs.flat[0].get_legend_handles_labels()[0]:  # no legend for a panel without points
        axs.flat[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # to memory: the file is written by fsio (a link is never followed)
    plt.close(fig)
    return buf.getvalue()


def _check_outputs(sdir: StudyDir, paths: dict[str, Path]) -> None:
    """Each report file is absent or a regular file (what an earlier report wrote): a link, a folder or a
    device there is refused, never followed or replaced."""
    for path in paths.values():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise UserError(f"Cannot check the report file {path}: {err.strerror or err}.") from None
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a symbolic link"
                if stat.S_ISLNK(st.st_mode)
                else "a folder"
                if stat.S_ISDIR(st.st_mode)
                else ("not a regular file")
            )
            raise UserError(
                f"The report file {path} is {kind}; nas-fidelity writes its report as regular files and never "
                "follows or replaces anything else. Move it aside, then write the report again with "
                f"`nas-fidelity --report-only --resume {sdir.path}`; nothing was written."
            )


def write_report(study_dir: str | Path) -> dict[str, Path]:
    """Write ``fidelity.json``, ``fidelity.md`` and ``scatter.png`` into the study directory."""
    sdir = StudyDir(study_dir)
    if not sdir.exists():
        check_folder(sdir)
        raise UserError(
            f"{sdir.path} is not a study directory (no study.json), so there is no study to report. Start one "
            "with `nas-fidelity STUDY.yaml --name NAME`."
        )
    check_folder(sdir)
    study = sdir.read_study()
    archs = sdir.read_architectures(study)
    res = analyse(study, checked_records(sdir, study, archs))
    paths = {"json": sdir.path / "fidelity.json", "md": sdir.path / "fidelity.md", "png": sdir.path / "scatter.png"}
    _check_outputs(sdir, paths)
    header = [
        f"# Fidelity study {sdir.path.name}",
        "",
        f"Search YAML `{Path(study.experiment.file).name}`; proxies: "
        + "; ".join(f"`{p.name}` (seeds {list(p.seeds)})" for p in study.proxies)
        + f"; reference seeds {list(study.reference.seeds)}. Intervals: bootstrap over architectures "
        f"({study.settings.bootstrap} resamples); layout intervals: 95% normal over architectures x seeds.",
        "",
    ]
    png = _scatter(res)
    atomic_write(paths["json"], json.dumps(json_safe(res), indent=1, default=str))
    atomic_write(paths["md"], "\n".join(header) + format_tables(res) + "\n")
    if png is not None:
        atomic_write(paths["png"], png)
    return paths


def _nan_back(obj: Any) -> Any:
    """``fidelity.json`` as :func:`analyse` returned it: null back to NaN."""
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: _nan_back(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_back(v) for v in obj]
    return obj


def format_tables_of(study_dir: str | Path) -> str:
    """The report's tables for the study in ``study_dir``: from ``fidelity.json`` when it is a report of
    ours, else computed from the records (``fidelity.json`` is derived; a damaged one costs nothing)."""
    sdir = StudyDir(study_dir)
    path = sdir.path / "fidelity.json"
    if path.is_file() and not path.is_symlink():
        try:
            return read_json(path, lambda d: format_tables(_nan_back(d)), what="The report", fix="")
        except UserError:
            pass
    study = sdir.read_study()
    return format_tables(analyse(study, checked_records(sdir, study, sdir.read_architectures(study))))
