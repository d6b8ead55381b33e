"""Turn a study that trained every candidate of a space (``architectures: all``) into a tabulated benchmark:
one versioned JSON file (``trainers.training.tabular``, its one reader and writer) that a search replays
with ``search.trainer: table:PATH``.

The file records what produced it: the search YAML (space and protocol), the proxy's seeds, the code version
(git commit, and whether the tree had uncommitted changes), the hardware and software, and per candidate the
raw measurements, per-round history and cost of the proxy training, the zero-cost proxies and, where the
study trained it, the reference.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.fidelity.config import REFERENCE, ZERO_COST_JOB
from nas.fidelity.studydir import OWN_FILES, JobRecord, StudyDir, checked_records
from nas.fsio import atomic_write, check_output_file, make_dirs
from nas.search.config import protocol_of
from trainers.training.tabular import TABLE_FORMAT, dump_table

# measurements of the proxy kept per candidate (the objective is recomputed from these)
KEEP_METRICS = (
    "params",
    "macs",
    "gen_val_acc",
    "gen_train_acc",
    "gen_gap",
    "cap_train_acc",
    "cap_train_loss",
    "cap_val_acc",
    "val_acc",
    "val_loss",
    "train_acc",
    "train_loss",
    "steps",
    "epochs",
    "wall_s",
    "train_s",
    "images_per_s",
)
KEEP_HISTORY = (
    "regime",
    "epoch",
    "epoch_total",
    "step",
    "round_s",
    "eval_s",
    "train_acc",
    "train_loss",
    "val_acc",
    "val_loss",
)


def _code_version(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--", "nas", "trainers")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _hardware() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def tabulate(
    study_dir: str | os.PathLike,
    proxy: str = "default",
    *,
    name: str | None = None,
    version: int = 1,
    seed: int | None = None,
) -> dict[str, Any]:
    """The table of the study in ``study_dir``: its proxy ``proxy`` at training seed ``seed`` (default: the
    proxy's first) for every architecture (all must be recorded, failed ones with their reason), the
    zero-cost proxies and the reference where trained. The table's protocol names that seed."""
    sdir = StudyDir(study_dir)
    study = _read_study(sdir, proxy)
    p = study.protocol(proxy)
    archs = sdir.read_architectures(study)
    recs: dict[tuple[str, str, int], JobRecord] = {}
    for r in checked_records(sdir, study, archs):
        recs[(r.arch_id, r.protocol, r.seed)] = r
    if seed is None:
        seed = p.seeds[0]
    elif seed not in p.seeds:
        raise UserError(
            f"The study in {sdir.path} trains its proxy {proxy!r} at seeds {', '.join(map(str, p.seeds))}, not "
            f"{seed}. Give one of those to --seed."
        )
    missing = [a for a in archs if (a.id, proxy, seed) not in recs]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(archs)} architectures have no {proxy!r} training recorded in "
            f"{sdir.jobs} (e.g. {missing[0]}). Finish the study: `nas-fidelity --resume {sdir.path}`."
        )
    entries = [_entry(a, recs, recs[(a.id, proxy, seed)], study.reference.seeds) for a in archs]
    exp = dataclasses.replace(study.experiment, train=dataclasses.replace(p.train, seed=seed), objective=p.objective)
    raw = dict(study.experiment.raw)
    raw["train"] = {**(raw.get("train") or {}), "seed": seed}
    return {
        "format": TABLE_FORMAT,
        "name": name or Path(study.experiment.file or "table").stem,
        "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "study": {"dir": sdir.path.name, "fingerprint": study.fingerprint(), "proxy": proxy},
        "code": _code_version(Path(__file__).resolve().parents[2]),
        "hardware": {
            **_hardware(),
            "cpus_per_training": study.settings.cpus_per_trial,
            "trainings_at_once": study.settings.max_concurrent,
        },
        "search_yaml": {k: raw[k] for k in ("space", "train", "objective") if k in raw},
        "num_classes": study.experiment.num_classes,
        "seeds": {"proxy": [seed], "reference": list(study.reference.seeds)},
        "protocol": protocol_of(exp),
        "objective": dataclasses.asdict(p.objective),
        "reference_protocol": protocol_of(
            dataclasses.replace(exp, train=study.reference.train, objective=study.reference.objective)
        ),
        "entries": entries,
    }


def _read_study(sdir: StudyDir, proxy: str):
    """The study of ``sdir``, refused unless it trained every candidate and has the proxy ``proxy``."""
    if not sdir.exists():
        raise UserError(
            f"{sdir.path} is not a study directory (no study.json). Run `nas-fidelity STUDY.yaml` "
            "with `architectures: all` first."
        )
    study = sdir.read_study()
    if study.settings.architectures != "all":
        raise UserError(
            f"The study in {sdir.path} sampled {study.settings.architectures} architectures; a table "
            "needs every candidate of the space (`study.architectures: all`)."
        )
    names = [p.name for p in study.proxies]
    if proxy not in names:
        raise UserError(f"The study in {sdir.path} has no proxy {proxy!r}; its proxies: {', '.join(names)}.")
    return study


def _entry(a, recs: dict[tuple[str, str, int], JobRecord], r: JobRecord, ref_seeds: tuple[int, ...]) -> dict[str, Any]:
    """The table entry of architecture ``a``: its proxy record ``r`` (kept measurements and history), its
    zero-cost scores if measured, and its reference results per seed where trained."""
    m = r.metrics
    e = {
        "id": a.id,
        "arch": a.to_dict(),
        "arch_str": str(a),
        "layout": a.layout_name,
        "status": r.status,
        "reason": r.reason,
        "metrics": {k: m[k] for k in KEEP_METRICS if k in m},
        "history": [{k: h[k] for k in KEEP_HISTORY if k in h} for h in r.history],
        "seed": r.seed,
        "proxy": r.protocol,
    }
    zc = recs.get((a.id, ZERO_COST_JOB, 0))
    if zc is not None and zc.ok:
        e["zero_cost"] = dict(zc.zero_cost)
    ref = {s: recs[(a.id, REFERENCE, s)] for s in ref_seeds if (a.id, REFERENCE, s) in recs}
    if ref:
        e["reference"] = {
            str(s): {
                "status": v.status,
                **{k: getattr(v, k) for k in ("generalization", "capacity", "score")},
                **{k: v.metrics.get(k) for k in KEEP_METRICS},
            }
            for s, v in ref.items()
        }
    return e


def write_table(study_dir: str | os.PathLike, out: str | os.PathLike, **kw: Any) -> Path:
    """Write :func:`tabulate`'s table to ``out`` (atomically; one entry per line, so diffs stay readable)."""
    out = Path(out)
    _check_table_path(out, StudyDir(study_dir))
    text = dump_table(tabulate(study_dir, **kw))  # validated by the one reader of tables first
    make_dirs(out.parent)
    atomic_write(out, text)
    return out


def _check_table_path(out: Path, sdir: StudyDir) -> None:
    """The table's path is absent or a regular file (an earlier table), and none of the study's own files."""
    check_output_file(out, force=True, flag="The table path")  # the one check of an output path
    if os.path.realpath(out) in {os.path.realpath(sdir.path / name) for name in OWN_FILES}:
        raise UserError(f"The table path {out} is one of the study's own files. Choose another path.")
