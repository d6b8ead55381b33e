"""Export a coatnas network to ONNX, checked against PyTorch's own outputs before anything is written.

``nas-export SOURCE --format onnx --out DIR`` (:func:`export_onnx`) writes

* ``DIR/model.onnx``: the network, input ``input`` (``batch x in_chans x image_size x image_size``, float32,
  already normalised), output ``logits`` (``batch x num_classes``); the batch axis is dynamic unless
  ``dynamic_batch=False`` (then it is 1). Its ``metadata_props`` carry what a consumer needs to feed it
  (:func:`onnx_metadata`): ``mean``, ``std``, ``image_size``, ``in_chans``, ``resize``, ``interpolation``,
  ``class_names`` (JSON where a list), ``weights`` (``trained`` or ``random``) and the whole model config
  (``coatnas.model_config``, JSON);
* ``DIR/model.yaml``: the coatnas model config (``nas.export.model_config.save_model_config``), so
  ``nas.load_model_config`` reads the export like any other model config.

The exporter is torch's ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``, which needs
``onnxscript``): since torch 2.9 it is the default and the TorchScript exporter (``dynamo=False``) warns that
it is deprecated and will be removed. Both convert CoAtNet's relative attention (the bias table is gathered
with a constant index, then added to the logits before softmax) with the same outputs to float rounding
(4e-8 on 32 px C-C-T-T, ViT_REL and C-C-C-C networks, batch 1 and 5, torch 2.13); the dynamo exporter takes
3-5 s where the TorchScript one takes 0.3 s, which is the price of the supported path. It writes opset
:data:`DEFAULT_OPSET` (its own default); opsets below :data:`MIN_OPSET` are not reachable (its version
converter leaves the model at 18), so they are refused. Each node's Python stack trace (local file paths) is
dropped from the file; the module names (``namespace``) are kept.

The check (:func:`compare`): onnxruntime runs the serialised model in memory on :data:`CHECK_SAMPLES` inputs
(random images with pixels uniform in [0, 1], normalised with the model's mean/std; or the caller's
``check_inputs``, e.g. real images), as one batch and one image at a time when the batch is dynamic, and its
logits are compared with PyTorch's: the largest absolute difference must be within ``tolerance`` times the
largest PyTorch logit (at least 1), else :class:`~nas.errors.UserError` and nothing is written. The figures
(:class:`OnnxCheck`) are returned and printed by the command.

onnx, onnxruntime and onnxscript are the ``onnx`` extra (``pip install 'coatnas[onnx]'``); without them
:func:`require_onnx` refuses in one paragraph before any work.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UserError
from nas.model.arch import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ONNX_FILE",
    "CONFIG_FILE",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "CHECK_SAMPLES",
    "TOLERANCE",
    "EXPORT_FORMAT",
    "OnnxCheck",
    "OnnxExport",
    "require_onnx",
    "max_opset",
    "onnx_metadata",
    "export_onnx",
    "compare",
    "random_inputs",
    "onnx_session",
    "read_onnx_metadata",
    "load_onnx_source",
    "describe",
]

ONNX_FILE = "model.onnx"
CONFIG_FILE = "model.yaml"
DEFAULT_OPSET = 20
MIN_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CHECK_SAMPLES = 16
TOLERANCE = 1e-4
EXPORT_FORMAT = 1
"""``coatnas.format`` in the metadata: the layout of the metadata keys (1: this one)."""
_MAX_BYTES = 2**31 - 1  # one protobuf message; larger networks would need ONNX's external data
_INSTALL = "pip install 'coatnas[onnx]'"


# ------------------------------------------------------------------------------------------------ imports
def require_onnx():
    """``(onnx, onnxruntime)``, imported; a one-paragraph :class:`UserError` naming the extra when onnx,
    onnxruntime or onnxscript (which torch's exporter needs) is not installed."""
    missing = []
    mods = {}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            mods[name] = __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed "
            f"in this environment. Install the onnx extra: `{_INSTALL}` (from a checkout: `pip install -e '.[onnx]'`); "
            "it brings onnx, onnxruntime (which checks the export against PyTorch) and onnxscript (which torch's "
            "ONNX exporter needs)."
        )
    return mods["onnx"], mods["onnxruntime"]


def max_opset() -> int:
    """The newest ONNX opset the installed onnx knows (the upper end of ``--opset``)."""
    onnx, _ = require_onnx()
    return int(onnx.defs.onnx_opset_version())


def _check_opset(opset: Any) -> int:
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise UserError(
            f"--opset {opset!r} is not an opset this export can write. Allowed: {MIN_OPSET}..{top} (default "
            f"{DEFAULT_OPSET}); torch's exporter starts at opset {MIN_OPSET} and the installed onnx knows up to "
            f"{top}."
        )
    return opset


# ----------------------------------------------------------------------------------------------- metadata
def onnx_metadata(config: ModelConfig, *, trained: bool) -> dict[str, str]:
    """The ``metadata_props`` of the export: everything a consumer needs to feed the model and name its
    outputs. Lists are JSON; ``mean``/``std`` are absent when the config has no preprocessing (a model config
    never trained: the network's weights are random)."""
    from nas.export.model_config import model_config_document

    c, h = config.in_chans, config.image_size
    meta = {
        "coatnas.format": str(EXPORT_FORMAT),
        "coatnas.model_config": json.dumps(model_config_document(config), sort_keys=False),
        "architecture": str(config.arch),
        "input": INPUT_NAME,
        "input_shape": json.dumps(["batch", c, h, h]),
        "output": OUTPUT_NAME,
        "output_shape": json.dumps(["batch", config.num_classes]),
        "image_size": str(h),
        "in_chans": str(c),
        "num_classes": str(config.num_classes),
        "class_names": json.dumps(list(config.labels())),
        "weights": "trained" if trained else "random",
    }
    pre = config.preprocessing
    if pre is not None:
        meta.update(
            {
                "mean": json.dumps([float(v) for v in pre.mean]),
                "std": json.dumps([float(v) for v in pre.std]),
                "resize": pre.resize,
                "interpolation": pre.interpolation,
                "preprocessing": (
                    f"resize: {pre.resize} to image_size x image_size ({pre.interpolation}); pixels / 255 "
                    "(values in [0, 1]); then (x - mean) / std per channel; layout NCHW, float32"
                ),
            }
        )
    else:
        meta["preprocessing"] = (
            "none recorded: a model config never trained (random weights) or a model of an older coatnas, "
            "so there is no mean/std; pixels / 255 then the training data's own normalisation"
        )
    return meta


# ---------------------------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime's logits against PyTorch's on the same inputs."""

    samples: int
    max_abs_diff: float
    max_abs_logit: float
    limit: float
    """The largest difference accepted: ``tolerance x max(1, max_abs_logit)``."""
    top1_agree: int
    batch_sizes: tuple[int, ...]
    inputs: str
    """What the inputs were (``random`` or the caller's description)."""

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.limit

    def line(self) -> str:
        batches = " and ".join(str(b) for b in self.batch_sizes)
        return (
            f"onnxruntime vs PyTorch on {self.samples} {self.inputs} inputs (batches of {batches}): "
            f"max |diff| {self.max_abs_diff:.1e} (limit {self.limit:.1e}), top-1 agrees {self.top1_agree}/"
            f"{self.samples}"
        )


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    folder: Path
    onnx_path: Path
    config_path: Path
    opset: int
    dynamic_batch: bool
    trained: bool
    nbytes: int
    check: OnnxCheck | None


def random_inputs(config: ModelConfig, n: int = CHECK_SAMPLES, seed: int = 0) -> torch.Tensor:
    """``n`` random images as the network sees them: pixels uniform in [0, 1], normalised with the config's
    mean/std (0.5/0.25 when it has none)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h = config.in_chans, config.image_size
    x = torch.rand(n, c, h, h, generator=gen)
    pre = config.preprocessing
    mean = torch.tensor(pre.mean if pre else (0.5,) * c).reshape(1, c, 1, 1)
    std = torch.tensor(pre.std if pre else (0.25,) * c).reshape(1, c, 1, 1)
    return ((x - mean) / std).float()


def _session(model_bytes: bytes):
    import torch

    _, ort = require_onnx()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def compare(
    model_bytes: bytes,
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    dynamic_batch: bool = True,
    tolerance: float = TOLERANCE,
    what: str = "random",
    batch_size: int | None = None,
) -> OnnxCheck:
    """Run ``model_bytes`` in onnxruntime and ``model`` (eval mode) in PyTorch on ``inputs``; dynamic batch:
    in batches of ``batch_size`` (default: all at once) and one image at a time, else one at a time."""
    import numpy as np
    import torch

    sess = _session(model_bytes)
    n = int(inputs.shape[0])
    sizes = [min(n, batch_size or n), 1] if dynamic_batch and n > 1 else [1]
    sizes = sorted(set(sizes), reverse=True)
    with torch.no_grad():
        ref = torch.cat([model(inputs[i : i + 256]) for i in range(0, n, 256)]).float().numpy()
    worst = 0.0
    agree = n
    for size in sizes:
        got = np.concatenate(
            [
                sess.run([OUTPUT_NAME], {INPUT_NAME: inputs[i : i + size].contiguous().numpy()})[0]
                for i in range(0, n, size)
            ]
        )
        diff = np.abs(got.astype(np.float64) - ref)
        worst = max(worst, float(diff.max())) if np.isfinite(diff).all() else math.inf
        agree = min(agree, int((got.argmax(1) == ref.argmax(1)).sum()))
    largest = float(np.abs(ref).max())
    return OnnxCheck(n, worst, largest, tolerance * max(1.0, largest), agree, tuple(sizes), what)


# ------------------------------------------------------------------------------------------------- export
@contextmanager
def _quiet():
    """torch's exporter logs what it skips (torchvision ops) and warns about its own internals: not ours."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # onnxscript logs a whole traceback when its version converter gives up
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _to_onnx(model: nn.Module, config: ModelConfig, opset: int, dynamic_batch: bool):
    """The ``onnx.ModelProto`` of ``model`` (eval mode, on the CPU)."""
    import torch

    c, h = config.in_chans, config.image_size
    example = torch.zeros(2 if dynamic_batch else 1, c, h, h)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # the exporter's many error types: a network it cannot convert
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UserError(
            f"torch {torch.__version__}'s ONNX exporter could not convert {config.arch} ({h}px x{c}): "
            f"{type(err).__name__}: {first}. Nothing was written. Export it with --format yaml or timm instead, "
            "or report the architecture with this message."
        ) from None
    proto = program.model_proto
    wrote = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if wrote != opset:
        raise UserError(
            f"torch {torch.__version__}'s ONNX exporter cannot write opset {opset} for {config.arch}: its version "
            f"converter left the model at opset {wrote}. Nothing was written. Choose a lower --opset (from "
            f"{MIN_OPSET}; the default {DEFAULT_OPSET} is the exporter's own)."
        )
    for node in proto.graph.node:  # stack traces name this machine's files; the module path stays
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    return proto


def export_onnx(
    model: nn.Module,
    config: ModelConfig,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    check_inputs: torch.Tensor | None = None,
    check_what: str = "real",
    tolerance: float = TOLERANCE,
    trained: bool = True,
    force: bool = False,
) -> OnnxExport:
    """Write ``out/model.onnx`` and ``out/model.yaml`` for ``model`` (the network of ``config``).

    The folder is checked first (``nas.fsio.check_output_dir``: its two files are only replaced with
    ``force``); the ONNX model is built and, with ``check``, compared with PyTorch in memory
    (:func:`compare`, on ``check_inputs`` or :func:`random_inputs`) before anything is written, so a refused
    export leaves nothing behind. ``trained=False`` records that the weights are a random initialisation.
    ``model`` is exported in eval mode on the CPU and put back as it was.
    """
    from nas.export.model_config import check_model_config, save_model_config
    from nas.fsio import atomic_write, check_output_dir, make_dirs

    onnx, _ = require_onnx()
    opset = _check_opset(opset)
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise UserError(f"tolerance {tolerance!r} must be a number in (0, 1) (default {TOLERANCE}).")
    check_model_config(config)
    folder = check_output_dir(out, (ONNX_FILE, CONFIG_FILE), force=force)
    if check_inputs is not None:
        want = (config.in_chans, config.image_size, config.image_size)
        if check_inputs.dim() != 4 or tuple(check_inputs.shape[1:]) != want or len(check_inputs) < 1:
            raise UserError(
                f"check_inputs of shape {tuple(check_inputs.shape)}: expected (N, {', '.join(map(str, want))}), "
                "normalised images of the model's size and channels."
            )
    was_training = model.training
    device = next(iter(model.parameters())).device
    model.eval().cpu()
    try:
        proto = _to_onnx(model, config, opset, dynamic_batch)
        for key, value in onnx_metadata(config, trained=trained).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = (
            f"coatnas {config.arch}: {config.image_size}px x{config.in_chans} -> {config.num_classes} logits "
            f"({'trained' if trained else 'random'} weights); preprocessing in metadata_props"
        )
        if proto.ByteSize() > _MAX_BYTES:
            raise UserError(
                f"{config.arch} is {proto.ByteSize() / 2**30:.1f} GiB as ONNX, over the 2 GiB of one ONNX file "
                "(ONNX keeps larger weights in external files, which this export does not write). Export a "
                "smaller network, or use --format timm."
            )
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as err:  # onnx.checker.ValidationError and shape-inference errors
            raise UserError(
                f"the ONNX model of {config.arch} fails onnx's own checker ({str(err).splitlines()[0][:300]}). "
                "Nothing was written; report the architecture with this message."
            ) from None
        raw = proto.SerializeToString()
        result = None
        if check:
            inputs = check_inputs.detach().cpu().float() if check_inputs is not None else random_inputs(config)
            what = check_what if check_inputs is not None else "random"
            result = compare(raw, model, inputs, dynamic_batch=dynamic_batch, tolerance=tolerance, what=what)
            if not result.ok:
                raise UserError(
                    f"the ONNX export of {config.arch} does not reproduce PyTorch: {result.line()}. Nothing was "
                    f"written to {folder}. Try another --opset (allowed {MIN_OPSET}..{max_opset()}), or report the "
                    "architecture with this message."
                )
    finally:
        model.to(device).train(was_training)
    make_dirs(folder)
    atomic_write(folder / ONNX_FILE, raw)
    config_path = save_model_config(config, folder / CONFIG_FILE)
    return OnnxExport(
        folder=folder,
        onnx_path=folder / ONNX_FILE,
        config_path=config_path,
        opset=opset,
        dynamic_batch=dynamic_batch,
        trained=trained,
        nbytes=len(raw),
        check=result,
    )


# ---------------------------------------------------------------------------------------- reading it back
def _read_onnx_bytes(path: str | os.PathLike) -> bytes:
    from nas.fsio import open_regular

    path = Path(path)
    if path.is_dir():
        path = path / ONNX_FILE
    try:
        fd, _ = open_regular(path)
    except OSError as err:
        raise UserError(
            f"{path}: cannot read this ONNX model ({err.strerror or err}). Pass the folder "
            "`nas-export --format onnx` wrote, or its model.onnx."
        ) from None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def onnx_session(path: str | os.PathLike):
    """An onnxruntime ``InferenceSession`` (CPU) of an export folder or its ``model.onnx``."""
    raw = _read_onnx_bytes(path)
    try:
        return _session(raw)
    except Exception as err:  # onnxruntime's InvalidProtobuf / Fail
        raise UserError(
            f"{path}: onnxruntime cannot load this model ({str(err).splitlines()[0][:200]}). Re-export it with "
            "`nas-export SOURCE --format onnx --out DIR --force`."
        ) from None


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an export (an export folder or its ``model.onnx``): the ``metadata_props`` with the
    JSON values (lists, the model config) decoded."""
    from nas.fsio import loads

    onnx, _ = require_onnx()
    try:
        proto = onnx.load_from_string(_read_onnx_bytes(path))
    except Exception as err:  # protobuf's DecodeError
        raise UserError(f"{path}: not an ONNX model ({str(err)[:200]}).") from None
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        value: Any = p.value
        if p.key in ("mean", "std", "class_names", "input_shape", "output_shape", "coatnas.model_config"):
            try:
                value = loads(p.value)
            except ValueError:
                raise UserError(f"{path}: its metadata {p.key} is not JSON; re-export it.") from None
        out[p.key] = value
    return out


# ------------------------------------------------------------------------------------------------- sources
def load_onnx_source(
    source: str | os.PathLike, *, rank: int | None = None, trial: str | int | None = None, seed: int = 0
) -> tuple[nn.Module, ModelConfig, bool]:
    """``(network in eval mode, its config, trained)`` of what ``nas-export --format onnx`` exports.

    ``source``: a trained model (the folder ``nas-train`` wrote, its ``model.safetensors``, or an older
    ``model.pt``; read by ``nas.export.model_config.load_trained_model``), a model config YAML, or a search run
    directory (its trial at ``rank``/``trial``). The last two carry no weights: the network is initialised
    at random (seeded by ``seed``) and ``trained`` is ``False``.
    """
    import torch

    from nas.export.model_config import (
        WEIGHTS_FILE,
        check_model_config,
        load_model_config,
        load_trained_model,
        model_config_of,
        select_record,
    )
    from nas.fsio import is_run_dir
    from nas.model.builder import build_model

    path = Path(source)
    if not os.path.lexists(path):
        raise UserError(
            f"{source}: no such file or folder. Pass a trained model (the folder `nas-train --out` wrote), a "
            "model config YAML or a search run directory."
        )
    if not path.is_dir() and not path.is_file():
        raise UserError(
            f"{source}: is not a regular file nor a folder (a FIFO, a device or a dangling link). Pass a trained "
            "model folder, a model config YAML or a search run directory."
        )
    run = path.is_dir() and is_run_dir(path)
    if (rank is not None or trial is not None) and not run:
        raise UserError(
            f"--rank and --trial pick a trial of a search run; {source} is not a search run directory (a trained "
            "model or a model config). Drop them."
        )
    trained_file = path.is_file() and (
        path.suffix in (".safetensors", ".pt", ".pth")
        or (path.name == CONFIG_FILE and (path.parent / WEIGHTS_FILE).exists())
    )
    if (path.is_dir() and not run) or trained_file:
        if path.is_dir() and not ((path / WEIGHTS_FILE).exists() or (path / "model.pt").exists()):
            raise UserError(
                f"{source}: this folder holds no trained model ({WEIGHTS_FILE} + {CONFIG_FILE}, as `nas-train "
                "--out` writes) and is not a search run directory. Pass a nas-train output folder, a model config "
                "YAML or a search run directory."
            )
        model, config = load_trained_model(path)
        return model, config, True
    if run:
        rec, rundir, exp = select_record(path, rank=rank, trial=trial)
        config = check_model_config(model_config_of(rec, exp, rundir), f"{rundir.path} (a trial's architecture)")
    else:
        try:
            config = load_model_config(path)
        except UserError as err:
            raise _not_a_model_yaml(path) or err from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config)
    return model.eval(), config, False


def _not_a_model_yaml(path: Path) -> UserError | None:
    """The error for a search YAML given as SOURCE (what to run first); ``None`` for any other file."""
    from nas.yamlio import load_yaml_file

    try:
        data = load_yaml_file(path)
    except Exception:  # noqa: BLE001 - a file that does not read as YAML keeps the model config's own error
        return None
    if not isinstance(data, dict) or "space" not in data:
        return None
    run = Path("runs") / path.stem
    return UserError(
        f"{path} is a search YAML (it has a `space:` section): a space of architectures, not one model, so there "
        f"is nothing to export to ONNX yet. Search it first (`nas-search --space {path}` writes the run {run}), "
        f"train its best architecture (`nas-train {run}/best.yaml --protocol {path} --out {run}-trained`), then "
        f"`nas-export {run}-trained --format onnx`; or export a trial's architecture with random weights: "
        f"`nas-export {run} --format onnx [--rank K]`."
    )


def describe(result: OnnxExport, config: ModelConfig) -> str:
    """The command's one line about an export."""
    batch = "dynamic batch" if result.dynamic_batch else "batch 1"
    weights = "trained weights" if result.trained else "random weights: the source has none"
    check = f"; {result.check.line()}" if result.check else "; not checked (--no-check)"
    return (
        f"{config.arch} ({config.image_size}px x{config.in_chans}, {config.num_classes} classes, {weights}) -> "
        f"{result.onnx_path} ({result.nbytes / 1e6:.1f} MB, opset {result.opset}, {batch}) + {result.config_path.name}"
        f"{check}"
    )
