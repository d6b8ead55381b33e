"""Model configs on disk: the YAML form of :class:`nas.model.arch.ModelConfig`, and export from a search run.

``nas.build_model(nas.load_model_config("model.yaml"))`` rebuilds exactly the exported network;
:func:`export_from_run` picks a trial of a run directory (by leaderboard rank, trial number or id).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from nas.errors import UserError, yaml_problem
from nas.model.arch import ModelConfig
from nas.yamlio import load_yaml_file

__all__ = [
    "ModelConfig",
    "load_model_config",
    "save_model_config",
    "model_config_of",
    "export_from_run",
    "select_record",
]


def save_model_config(config: ModelConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically: a crash never leaves half a file)."""
    from nas.fsio import atomic_write, make_dirs

    path = Path(path)
    make_dirs(path.parent)
    return atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def model_config_of(rec: dict[str, Any], exp, run) -> ModelConfig:
    """The :class:`ModelConfig` of a trial record, with its provenance."""
    from nas.model.arch import Architecture

    arch = Architecture.from_dict(rec["arch"])
    m = rec.get("metrics", {})
    num_classes = int(m.get("num_classes") or exp.num_classes)
    from trainers.objectives.registry import OBJECTIVES

    metrics = {k: round(float(rec[k]), 6) for k in (*OBJECTIVES, "score") if k in rec}
    metrics.update({k: round(float(m[k]), 6) for k in ("val_acc", "train_acc", "params", "macs") if k in m})
    return ModelConfig(
        arch=arch,
        num_classes=num_classes,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        provenance={
            "run": str(run.path),
            "trial": rec.get("number"),
            "id": rec["id"],
            "status": rec["status"],
            "data": exp.train.data.name,
            "metrics": metrics,
        },
    )


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read a model config written by :func:`save_model_config` or ``nas-export``."""
    path = Path(path)
    if path.is_dir():
        inside = [str(p) for p in (path / "best.yaml", path / "model.yaml") if p.is_file()]
        hint = f" Did you mean {inside[0]}?" if inside else ""
        raise UserError(
            f"{path}: is a folder, not a model config file. Pass the YAML written by `nas-export` "
            f"(or `nas.save_model_config`).{hint}"
        )
    if not path.is_file():
        raise UserError(
            f"{path}: no such model config file. Pass the YAML written by `nas-export` (or `nas.save_model_config`)."
        )
    try:
        data = load_yaml_file(path)
    except yaml.YAMLError as err:
        raise UserError(
            f"{path}: not valid YAML {yaml_problem(err)}. A model config is a mapping with keys "
            "architecture, image_size, num_classes, in_chans, provenance; re-export it with "
            "`nas-export`."
        ) from None
    except OSError as err:
        raise UserError(
            f"{path}: cannot read this model config file ({err.strerror}). Make it readable by "
            "this user or pass another file."
        ) from None
    return ModelConfig.from_dict(data, file=str(path))


def select_record(run_dir: str | os.PathLike, *, rank: int | None = None, trial: str | int | None = None):
    """``(record, run, experiment)`` of the trial at leaderboard ``rank`` (1 = best) or with ``trial``
    (its Optuna trial number or architecture id); the best when neither is given."""
    from nas.search.leaderboard import build_rows
    from nas.search.rundir import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run_dir}: no such run directory. Pass the folder a search wrote (e.g. runs/<name>).")
    run.read_meta()
    exp = run.read_experiment()
    records = run.read_records()
    rows = build_rows(records, run.axes())
    ranked = [r for r in rows if r["rank"] is not None]
    by_id = {r["id"]: r for r in records}
    if rank is not None and trial is not None:
        raise UserError("Give either --rank or --trial, not both.")
    if trial is not None:
        text = str(trial)
        match = [r for r in records if str(r.get("number")) == text or r["id"] == text]
        if not match:
            known = ", ".join(f"{r['trial']} ({r['id']})" for r in rows[:10])
            raise UserError(
                f"{run.path}: no finished trial {text!r} (an Optuna trial number or architecture id). "
                f"Finished trials: {known or 'none yet'}. See leaderboard.csv."
            )
        return match[0], run, exp
    rank = 1 if rank is None else rank
    if not ranked:
        raise UserError(
            f"{run.path}: no successful trial yet, so there is nothing to export. Run or resume the "
            "search first (`nas-search --resume RUN_DIR`)."
        )
    if not 1 <= rank <= len(ranked):
        raise UserError(
            f"--rank {rank} is out of range: {run.path} has {len(ranked)} ranked trial(s), so use 1..{len(ranked)}."
        )
    return by_id[ranked[rank - 1]["id"]], run, exp


def export_from_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rank: int | None = None,
    trial: str | int | None = None,
    force: bool = False,
) -> Path:
    """Write the model config of one trial of a search run (see :func:`select_record`) to ``out``.

    ``out`` must not exist unless ``force``; it is never a file of a run directory nor anything but a
    regular file (``nas.fsio.check_output_file``), checked before anything is written.
    """
    from dataclasses import replace

    from nas.fsio import check_output_file

    rec, run, exp = select_record(run_dir, rank=rank, trial=trial)
    check_output_file(out, force=force)
    config = model_config_of(rec, exp, run)
    if rank is not None:
        config = replace(config, provenance={**dict(config.provenance), "rank": rank})
    return save_model_config(config, out)
