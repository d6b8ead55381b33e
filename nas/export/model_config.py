"""Model configs on disk: the one reader and writer of a :class:`nas.model.arch.ModelConfig` wherever it is
stored (a model YAML, ``best.yaml``, a ``nas-train`` checkpoint, a timm export's ``config.json``), and export
from a search run.

``nas.build_model(nas.load_model_config("model.yaml"))`` rebuilds exactly the exported network;
:func:`export_from_run` picks a trial of a run directory (by leaderboard rank, trial number or id).

Every model config that is read goes through :func:`parse_model_config`, which checks its keys and types
(``ModelConfig.from_dict``), its format version and the sane ranges of ``nas.limits.RANGES`` (depths,
widths, image size, classes, channels, patch size) before anything is built from it.

A trained model (``nas-train``'s output) is a folder with two files, written and read only here
(:func:`save_trained`, :func:`read_trained`): ``model.safetensors``, the weights (no pickle), and ``model.yaml``,
the one config: architecture, input size and channels, :class:`~nas.model.arch.Preprocessing` (the resize policy
and the training split's mean/std), class names and provenance. The weights' metadata names the architecture and
the classes, so a ``model.yaml`` of another training beside them is refused. A ``model.pt`` checkpoint of an
older coatnas (a pickle-free ``torch.save`` of config and weights) is still read by :func:`read_checkpoint`.

Format versions (:data:`MODEL_FORMAT`, :data:`CHECKPOINT_FORMAT`): 0 is a file written before versions
existed (no ``format`` key; the same layout as 1, read unchanged); 1 writes ``format: 1``; 2 adds the optional
``preprocessing`` and ``class_names`` (a format-1 document has neither, so it reads unchanged). Each step has a
migration in :data:`_MIGRATIONS`; a format newer than this coatnas knows is refused with a paragraph saying so.
"""

from __future__ import annotations

import datetime
import math
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas.errors import ConfigError, UserError, yaml_problem
from nas.model.arch import ModelConfig
from nas.yamlio import load_yaml_file

if TYPE_CHECKING:
    import torch

    from nas.search.record import TrialRecord

__all__ = [
    "ModelConfig",
    "MODEL_FORMAT",
    "CHECKPOINT_FORMAT",
    "parse_model_config",
    "check_model_config",
    "model_config_document",
    "load_model_config",
    "save_model_config",
    "Checkpoint",
    "read_checkpoint",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "save_trained",
    "read_trained",
    "load_trained_model",
    "load_torch_file",
    "tensor_problem",
    "checkpoint_bytes",
    "model_config_of",
    "export_from_run",
    "select_record",
]

MODEL_FORMAT = 2
CHECKPOINT_FORMAT = 1
_KEYS = "format, architecture, image_size, num_classes, in_chans, preprocessing, class_names, provenance"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.yaml"
_REEXPORT = "Re-export it with `nas-export` (or write it with `nas.save_model_config`)."


def _identity(data: dict[str, Any]) -> dict[str, Any]:
    return data


# format -> the function that turns a document of that format into one of the next format
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _identity, 1: _identity}


def _format_of(data: Mapping[str, Any], known: int, file: str | None, what: str) -> int:
    """The ``format`` of a document (0 when absent); a wrong type or a newer format is a :class:`ConfigError`."""
    fmt = data.get("format", 0)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 0:
        raise ConfigError(file, "format", f"must be the format version of the {what}", f"0 to {known}", value=fmt)
    if fmt > known:
        raise ConfigError(
            file,
            "format",
            f"is {fmt}: the {what} was written by a newer coatnas, which this version cannot read. Upgrade "
            "coatnas (pip install -U coatnas), or re-export it with this version",
            f"0 to {known}",
        )
    return fmt


def check_model_config(mc: ModelConfig, file: str | None = None) -> ModelConfig:
    """Raise :class:`ConfigError` when a size of ``mc`` is outside its sane range (``nas.limits.RANGES``):
    the same limits whether the config comes from a model YAML, a checkpoint, a timm export or a flag."""
    from nas.limits import check_value

    arch = mc.arch
    for i, (d, w) in enumerate(zip(arch.depths, arch.widths)):
        check_value(d, "depths", file, f"architecture.depths[{i}]")
        check_value(w, "widths", file, f"architecture.widths[{i}]")
    if arch.is_vit:
        check_value(arch.patch_size, "patch_size", file, "architecture.patch_size")
    for key in ("image_size", "num_classes", "in_chans"):
        check_value(getattr(mc, key), key, file)
    return mc


MAX_PROVENANCE_VALUES = 10_000  # provenance is a few dozen values; YAML aliases can make a small file huge


def _plain(value: Any, file: str | None, key: str, *, write: bool = False, budget: list[int] | None = None) -> Any:
    """``value`` as plain JSON/YAML data (a date as its ISO text); NaN is refused when reading (``None`` when
    writing: a provenance entry never blocks a write), anything else that is not plain data always, and so is
    more than :data:`MAX_PROVENANCE_VALUES` values (YAML aliases repeating a list, a "billion laughs")."""
    budget = [MAX_PROVENANCE_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(
            file,
            "provenance",
            f"holds more than {MAX_PROVENANCE_VALUES:,} values (YAML aliases can repeat a list many times over)",
            "a few dozen values of plain data",
        )
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            if write:
                return None
            raise ConfigError(file, key, "is NaN", "a number, text, true/false or null")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v, file, f"{key}[{i}]", write=write, budget=budget) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ConfigError(file, f"{key}.{k!r}", "has a key that is not text", "text keys")
            out[str(k)] = _plain(v, file, f"{key}.{k}", write=write, budget=budget)
        return out
    raise ConfigError(
        file, key, f"is not plain data ({type(value).__name__})", "numbers, text, true/false, null, lists, mappings"
    )


def parse_model_config(data: Any, file: str | None = None) -> ModelConfig:
    """The one parser of a model config document (a model YAML, a checkpoint's ``model_config``, the
    ``coatnas`` section of a timm export): keys and types, format version, provenance as plain data and
    sane ranges; a :class:`ConfigError` naming ``file`` and the key otherwise."""
    if not isinstance(data, Mapping):
        raise ConfigError(file, "<top level>", "must be a mapping", f"keys {_KEYS}", value=data)
    fmt = _format_of(data, MODEL_FORMAT, file, "model config")
    doc = {k: v for k, v in data.items() if k != "format"}
    for version in range(fmt, MODEL_FORMAT):
        doc = _MIGRATIONS[version](doc)
    mc = ModelConfig.from_dict(doc, file=file)  # keys and types first: nothing below walks an unknown key
    check_model_config(mc, file)
    return replace(mc, provenance=_plain(mc.provenance, file, "provenance"))


def model_config_document(config: ModelConfig, *, versioned: bool = True) -> dict[str, Any]:
    """``config`` as the plain document :func:`parse_model_config` reads (``format`` first). A document
    inside a versioned container (a checkpoint, a timm export) is written without its own ``format``
    (``versioned=False``): the container's format covers it, and ``ModelConfig.from_dict`` reads it as is."""
    doc = config.to_dict()
    doc["provenance"] = _plain(doc.get("provenance") or {}, None, "provenance", write=True)
    return {"format": MODEL_FORMAT, **doc} if versioned else doc


def save_model_config(config: ModelConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically: a crash never leaves half a file)."""
    from nas.fsio import atomic_write, make_dirs

    path = Path(path)
    make_dirs(path.parent)
    return atomic_write(path, yaml.safe_dump(model_config_document(config), sort_keys=False))


def _file_kind(path: Path) -> str | None:
    """``None`` for a regular file, else what ``path`` is (missing, a folder, a FIFO...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read a model config written by :func:`save_model_config` or ``nas-export`` (see :func:`parse_model_config`)."""
    path = Path(path)
    kind = _file_kind(path)
    if kind == "a folder":
        inside = [str(p) for p in (path / "best.yaml", path / "model.yaml") if p.is_file()]
        hint = f" Did you mean {inside[0]}?" if inside else ""
        raise UserError(
            f"{path}: is a folder, not a model config file. Pass the YAML written by `nas-export` "
            f"(or `nas.save_model_config`).{hint}"
        )
    if kind == "missing":
        raise UserError(
            f"{path}: no such model config file. Pass the YAML written by `nas-export` (or `nas.save_model_config`)."
        )
    if kind is not None:
        raise UserError(f"{path}: is {kind}, not a model config file. Pass the YAML written by `nas-export`.")
    try:
        data = load_yaml_file(path, allowed=f"a model config: a YAML mapping with keys {_KEYS}")
    except yaml.YAMLError as err:
        raise UserError(
            f"{path}: not valid YAML {yaml_problem(err)}. A model config is a mapping with keys {_KEYS}. {_REEXPORT}"
        ) from None
    except OSError as err:
        raise UserError(
            f"{path}: cannot read this model config file ({err.strerror}). Make it readable by "
            "this user or pass another file."
        ) from None
    return parse_model_config(data, file=str(path))


# ------------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """A ``nas-train`` checkpoint (``model.pt``): the model config and the state dict of its network."""

    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    format: int = CHECKPOINT_FORMAT


def checkpoint_bytes(config: ModelConfig, state: Mapping[str, torch.Tensor]) -> bytes:
    """The bytes of a checkpoint (``torch.save`` into memory; the caller writes them with ``nas.fsio``)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_config_document(config, versioned=False),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()},
        },
        buf,
    )
    return buf.getvalue()


_CKPT_FIX = (
    "A checkpoint of `nas-train` (its model.pt) holds `format`, `model_config` and `state_dict`; pass one "
    "(or the folder holding it), a model config YAML or a run directory."
)


def torch_load_problem(err: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in our words (never torch's
    advice to load it with ``weights_only=False``, which would run code from the file)."""
    import re

    text = str(err)
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it holds pickled Python objects ({found.group(1)}), which are never loaded because loading them "
            "can run code; a checkpoint holds only tensors and plain data"
        )
    if "WeightsUnpickler" in text:
        return "its data cannot be read as tensors and plain data: it is damaged, truncated or not a torch file"
    return "it is truncated, damaged or not a torch file"


def load_torch_file(path: Path, *, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; an unreadable, empty, truncated, foreign or
    pickled-object file is one paragraph naming it, saying it is not ``what`` and ending with ``fix``."""
    import torch

    try:
        fh = open(path, "rb")
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err}). {fix}") from None
    with fh:
        if not fh.read(1):
            raise UserError(f"{path}: is empty, not {what}. {fix}")
        fh.seek(0)
        try:
            return torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types (OSError too) for a damaged file
            raise UserError(f"{path}: not {what}: {torch_load_problem(err)}. {fix}") from None


def tensor_problem(value: torch.Tensor) -> str | None:
    """What makes ``value`` no weight tensor of a network (``None``: it is one): a sparse or other non-dense
    layout, a tensor without data (``meta``) or a complex one (copying it into a real weight would silently drop
    its imaginary part). Checked before anything reads its values."""
    import torch

    if value.layout != torch.strided:
        return f"is a {str(value.layout).removeprefix('torch.')} tensor, not a dense one"
    if value.device.type == "meta":
        return "holds no data (a `meta` tensor)"
    if value.is_complex():
        return f"is complex ({str(value.dtype).removeprefix('torch.')}); a weight is real"
    return None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The one reader of a ``nas-train`` checkpoint: ``torch.load(weights_only=True)``, then its keys, the
    types and finiteness of its tensors, its format version and its model config (:func:`parse_model_config`).
    An unreadable, truncated, foreign or pickled-object file is one paragraph naming it."""
    path = Path(path)
    kind = _file_kind(path)
    if kind is not None:
        raise UserError(f"{path}: is {kind}, not a checkpoint. {_CKPT_FIX}")
    raw = load_torch_file(path, what="a checkpoint written by `nas-train`", fix=_CKPT_FIX)
    return _checkpoint_of(raw, path)


def _checkpoint_of(raw: Any, path: Path) -> Checkpoint:
    import torch

    def refuse(problem: str) -> UserError:
        return UserError(f"{path}: not a checkpoint written by `nas-train`: {problem}. {_CKPT_FIX}")

    if not isinstance(raw, Mapping):
        raise refuse(f"it holds {type(raw).__name__}, not a mapping")
    unknown = sorted(str(k) for k in raw if k not in ("format", "model_config", "state_dict"))
    if unknown:
        raise refuse(f"it has the unknown key(s) {', '.join(unknown[:5])}")
    missing = [k for k in ("model_config", "state_dict") if k not in raw]
    if missing:
        raise refuse(f"the key(s) {', '.join(missing)} are missing")
    try:
        fmt = _format_of(raw, CHECKPOINT_FORMAT, str(path), "checkpoint")
    except ConfigError as err:
        raise UserError(f"{err} {_CKPT_FIX}") from None
    state = raw["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise refuse("its state_dict is not a non-empty mapping of names to tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise refuse(f"its state_dict entry {key!r} is {type(value).__name__}, not a tensor")
        problem = tensor_problem(value)
        if problem:
            raise refuse(f"its tensor {key} {problem}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(
                f"{path}: the tensor {key} holds NaN or infinite values: the training that wrote it diverged "
                "or the file is damaged. Re-train it with `nas-train`."
            )
    mc = parse_model_config(raw["model_config"], file=f"{path} (its model_config)")
    return Checkpoint(model_config=mc, state_dict=dict(state), format=fmt)


# ------------------------------------------------------------------------------------- trained models
_TRAINED_FIX = (
    f"A trained model is the folder `nas-train` writes: {WEIGHTS_FILE} (the weights) and {CONFIG_FILE} (its "
    "config) side by side; pass that folder (or a model.pt of an older coatnas)."
)


def _weights_metadata(config: ModelConfig) -> dict[str, str]:
    """What the weights file says about the network it holds; :func:`read_trained` checks it against the
    config beside it."""
    import hashlib

    names = "\n".join(config.labels())
    return {
        "format": "pt",
        "coatnas": str(CHECKPOINT_FORMAT),
        "architecture": str(config.arch),
        "num_classes": str(config.num_classes),
        "in_chans": str(config.in_chans),
        "class_names": hashlib.sha256(names.encode()).hexdigest()[:16],
    }


def save_trained(
    folder: str | os.PathLike, config: ModelConfig, state: Mapping[str, torch.Tensor], *, force: bool = False
) -> Path:
    """Write a trained model into ``folder``: :data:`WEIGHTS_FILE` then :data:`CONFIG_FILE` (each atomically;
    the config last, so a folder with a config has its weights). Existing files are only replaced with
    ``force`` (``nas.fsio.check_output_dir``, checked before anything is written)."""
    from safetensors.torch import save

    from nas.fsio import atomic_write, check_output_dir, make_dirs

    folder = check_output_dir(folder, (WEIGHTS_FILE, CONFIG_FILE), force=force, trained_ok=True)
    make_dirs(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(folder / WEIGHTS_FILE, save(tensors, metadata=_weights_metadata(config)))
    save_model_config(config, folder / CONFIG_FILE)
    return folder


def read_trained(path: str | os.PathLike) -> Checkpoint:
    """The one reader of a trained model: the folder ``nas-train`` wrote (or its :data:`WEIGHTS_FILE` or
    :data:`CONFIG_FILE`), or an older coatnas's ``model.pt``. Checks the config (:func:`parse_model_config`),
    every tensor (dense, real, finite) and that the weights' metadata names the config's architecture and
    classes; the network's own shapes are checked when it is built (:func:`load_trained_model`)."""
    path = Path(path)
    if path.is_dir() and not (path / WEIGHTS_FILE).exists() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if path.suffix == ".pt" or (path.is_file() and path.suffix not in (".safetensors", ".yaml", ".yml")):
        return read_checkpoint(path)
    folder = path if path.is_dir() else path.parent
    weights, cfg_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if path.is_file() and path.suffix == ".safetensors":
        weights = path
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        cfg_path = path
    if not path.exists():
        raise UserError(f"{path}: no such file or folder. {_TRAINED_FIX}")
    for need in (weights, cfg_path):
        if not os.path.lexists(need):
            raise UserError(f"{folder}: has no {need.name}, so it holds no trained model. {_TRAINED_FIX}")
    config = load_model_config(cfg_path)
    from nas.fsio import read_safetensors

    state, meta = read_safetensors(weights, what="the weights of a trained model", fix=_TRAINED_FIX)
    if not state:
        raise UserError(f"{weights}: holds no tensors. {_TRAINED_FIX}")
    for key, value in state.items():
        problem = tensor_problem(value)
        if problem:
            raise UserError(f"{weights}: its tensor {key} {problem}. {_TRAINED_FIX}")
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise UserError(
                f"{weights}: the tensor {key} holds NaN or infinite values: the training that wrote it diverged or "
                "the file is damaged. Re-train it with `nas-train`."
            )
    expected = _weights_metadata(config)
    version = meta.get("coatnas")
    if version is not None and not (isinstance(version, str) and version.isdigit() and 1 <= int(version)):
        raise UserError(
            f"{weights}: its metadata names coatnas weights format {version!r}, which is not one. {_TRAINED_FIX}"
        )
    if version is not None and int(version) > CHECKPOINT_FORMAT:
        raise UserError(
            f"{weights}: these weights are of format {version}, written by a newer coatnas that this version cannot "
            "read. Upgrade coatnas (pip install -U coatnas)."
        )
    if meta.get("coatnas") is None:
        raise UserError(
            f"{weights}: these weights were not written by `nas-train` (their metadata has no `coatnas` entry), "
            f"so nothing says they belong to {cfg_path}. {_TRAINED_FIX}"
        )
    for key in ("architecture", "num_classes", "in_chans", "class_names"):
        if key == "class_names" and key not in meta:  # weights written before the names were tied to them
            continue
        if meta.get(key) != expected[key]:
            raise UserError(
                f"{weights} and {cfg_path} do not belong together: the weights are of {key} {meta.get(key)!r}, "
                f"the config says {expected[key]!r}. Keep the two files `nas-train` wrote together; re-train or "
                "copy the matching pair."
            )
    return Checkpoint(model_config=config, state_dict=state, format=int(meta["coatnas"]))


def load_trained_model(path: str | os.PathLike):
    """``(network in eval mode, its ModelConfig)`` of a trained model (:func:`read_trained`); weights whose
    names or shapes are not those of the config's network are refused in one paragraph."""
    from nas.model.builder import build_model

    ckpt = read_trained(path)
    model = build_model(ckpt.model_config)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt.state_dict]
    extra = [k for k in ckpt.state_dict if k not in own]
    wrong = [
        k
        for k in own
        if k in ckpt.state_dict
        and (
            tuple(ckpt.state_dict[k].shape) != tuple(own[k].shape)
            or ckpt.state_dict[k].is_floating_point() != own[k].is_floating_point()
        )
    ]
    if missing or extra or wrong:
        parts = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("of another shape or type", wrong))
            if keys
        ]
        raise UserError(
            f"{path}: the weights are not those of {ckpt.model_config.arch} ({'; '.join(parts)}). {_TRAINED_FIX}"
        )
    model.load_state_dict(ckpt.state_dict)
    return model.eval(), ckpt.model_config


def model_config_of(rec: TrialRecord, exp, run) -> ModelConfig:
    """The :class:`ModelConfig` of a trial record, with its provenance."""
    arch = rec.architecture()
    m = rec.metrics
    num_classes = int(m.get("num_classes") or exp.num_classes)
    metrics = {k: round(v, 6) for k, v in rec.values.items() if math.isfinite(v)}
    metrics["score"] = round(rec.score, 6)
    metrics.update({k: round(rec.metric(k), 6) for k in ("val_acc", "train_acc", "params", "macs") if k in m})
    return ModelConfig(
        arch=arch,
        num_classes=num_classes,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        provenance={
            "run": str(run.path),
            "trial": rec.number,
            "id": rec.id,
            "status": rec.status,
            "data": exp.train.data.name,
            "metrics": metrics,
        },
    )


def select_record(run_dir: str | os.PathLike, *, rank: int | None = None, trial: str | int | None = None):
    """``(record, run, experiment)`` of the trial at leaderboard ``rank`` (1 = best: the verified best where the
    run verified finalists) or with ``trial`` (its Optuna trial number or architecture id); the best when
    neither is given."""
    from nas.search.finalists import verified_of
    from nas.search.leaderboard import build_rows
    from nas.search.rundir import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run_dir}: no such run directory. Pass the folder a search wrote (e.g. runs/<name>).")
    run.read_meta()
    exp = run.read_experiment()
    records = run.read_records()
    rows = build_rows(records, run.axes(), run.image_size(), verified_of(run, records))  # verified finalists first
    ranked = [r for r in rows if r["rank"] is not None]
    by_id: dict[str, TrialRecord] = {}
    for r in records:  # the first record of an architecture, as the leaderboard ranks it
        by_id.setdefault(r.id, r)
    if rank is not None and trial is not None:
        raise UserError("Give either --rank or --trial, not both.")
    if trial is not None:
        text = str(trial)
        match = [r for r in records if str(r.number) == text or r.id == text]
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
    from nas.fsio import check_output_file

    rec, run, exp = select_record(run_dir, rank=rank, trial=trial)
    check_output_file(out, force=force)
    config = check_model_config(model_config_of(rec, exp, run), f"{run.path} (a trial's architecture)")
    if rank is not None:
        config = replace(config, provenance={**dict(config.provenance), "rank": rank})
    return save_model_config(config, out)
