"""One proxy training of a candidate: budget, AdamW + warmup/cosine, metrics, failure statuses.

:func:`train_candidate` is what every search trial runs; :func:`fit` is one training of one model (also
used by ``nas-train``). Data stay on the training device as loaded (uint8 where exact) and are batched by
index tensors; indexing the images gives the normalised float32 batch (``trainers.images.Images``).
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.arch import Architecture, ModelConfig

from . import objective as obj
from .data import DataConfig, Dataset, Images, stratified_subset
from .objective import ObjectiveConfig
from .result import TrialResult

__all__ = ["TrainConfig", "train_candidate", "fit", "FitResult", "Diverged", "resolve_device", "evaluate",
           "recalibrate_bn", "fit_eval_subset",
           "is_oom", "seed_everything", "parse_train", "parse_objective"]

OnEpoch = Callable[[int, dict[str, float]], None]


def _ge(lo: float, kind: str = "a number"):
    return {"check": lambda v: v is None or v >= lo, "allowed": f"{kind} >= {lo}"}


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (the ``train:`` section); every value has a default.

    Args:
        data: the data source (``train.data``).
        epochs: passes over the training split (ignored when ``steps`` is set).
        steps: optimizer steps instead of epochs (``null``: use ``epochs``).
        batch_size: images per step.
        lr: AdamW peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        warmup: share of the steps spent in linear warmup before the cosine decay to 0.
        label_smoothing: cross-entropy label smoothing during training.
        grad_clip: max gradient norm (0 turns clipping off).
        seed: seed of initialisation, batching and augmentation.
        augment: random crop (pad 1/8 of the size) and horizontal flip, for natural images.
        device: ``auto`` picks CUDA when present.
        precision: ``auto`` is bf16 autocast on CUDA, fp32 on CPU.
        channels_last: ``null`` keeps the model's channels-last layout (measured faster on CPU; already the
            CUDA default before); ``false`` runs it in NCHW.
        eval_batch_size: images per evaluation batch.
        drop_path: stochastic depth rate of the model.
        bn_recalibrate: training images (no augmentation) whose statistics replace the BatchNorm running
            averages before every evaluation (0: evaluate with the running averages). After a few dozen
            steps the running averages still hold mostly their initial values, so without this a short
            training evaluates near chance and conv-heavy layouts (more BatchNorm) are penalised.
    """

    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = field(default=5, metadata=_ge(1, "an integer"))
    steps: int | None = field(default=None, metadata=_ge(1, "an integer"))
    batch_size: int = field(default=64, metadata=_ge(2, "an integer"))
    lr: float = field(default=2e-3, metadata={"check": lambda v: v > 0, "allowed": "a number > 0"})
    weight_decay: float = field(default=0.05, metadata=_ge(0))
    warmup: float = field(default=0.1, metadata={"check": lambda v: 0 <= v < 1, "allowed": "a number in [0, 1)"})
    label_smoothing: float = field(default=0.1, metadata={"check": lambda v: 0 <= v < 1,
                                                          "allowed": "a number in [0, 1)"})
    grad_clip: float = field(default=1.0, metadata=_ge(0))
    seed: int = 0
    augment: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool | None = None
    eval_batch_size: int = field(default=512, metadata=_ge(1, "an integer"))
    drop_path: float = field(default=0.0, metadata={"check": lambda v: 0 <= v < 1, "allowed": "a number in [0, 1)"})
    bn_recalibrate: int = field(default=1024, metadata=_ge(0, "an integer"))


class Diverged(RuntimeError):
    """The training loss became non-finite or exploded."""


@dataclass
class FitResult:
    """One training: the trained model, its final figures and one dict per epoch."""

    model: nn.Module
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(train: TrainConfig, device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the config's (``auto``: CUDA when available)."""
    name = str(device) if device is not None else train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from nas.errors import UserError
        raise UserError(f"The device is {name!r} (`train.device` or `--device`), but PyTorch sees no CUDA GPU here "
                        f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Allowed: `auto` "
                        "(CUDA when present, else CPU) or `cpu`; or run where a GPU is visible.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, train: TrainConfig):
    bf16 = train.precision == "bf16" or (train.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop after reflect padding by size/8, and a random horizontal flip, per image (vectorised)."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = xp[bidx, cidx, rows, cols]
    flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor | Images, images: int, batch_size: int, seed: int = 0,
                   channels_last: bool = False) -> bool:
    """Recompute every BatchNorm's running mean/variance from ``images`` examples of ``x``.

    The statistics become the exact average over the batches (momentum ``None``), with every other module
    in eval mode (no dropout or stochastic depth while measuring). Returns whether the model has BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or images <= 0 or len(x) == 0:
        return bool(bns)
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[:images].to(x.device)
    bs = max(2, min(batch_size, len(idx)))
    try:
        for i in range(0, len(idx) - 1, bs):  # a last batch of one image has no variance: skip it
            xb = x[idx[i:i + bs]]
            if len(xb) < 2:
                break
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            model(xb)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return True


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor | Images, y: torch.Tensor, train: TrainConfig,
             device: torch.device, channels_last: bool) -> tuple[float, float]:
    """(mean cross-entropy without smoothing, accuracy) of ``model`` on ``x, y``."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for i in range(0, len(y), train.eval_batch_size):
        xb, yb = x[i:i + train.eval_batch_size], y[i:i + train.eval_batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device, train):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(-1) == yb).sum()
    n = max(1, len(y))
    return loss_sum.item() / n, correct.item() / n


def fit(model: nn.Module, dataset: Dataset, train: TrainConfig, *, train_idx: torch.Tensor | None = None,
        steps: int | None = None, device: torch.device | None = None, eval_idx: torch.Tensor | None = None,
        report_every: int | None = None, regime: str = "full") -> Iterator[dict[str, float]]:
    """Train ``model`` in place; yield one metrics dict per round; return a :class:`FitResult`.

    A generator so that callers can report each round (and stop) between rounds. A round is one epoch of
    the training examples unless ``report_every`` (steps) says otherwise; the validation split is
    evaluated once per round. ``train_idx`` selects the training examples (default: the whole training
    split); ``steps`` overrides the config's budget; ``eval_idx`` picks the training examples whose fit
    (``train_loss``/``train_acc``, eval mode) is measured after every round. Before each evaluation the
    BatchNorm statistics are recomputed (``train.bn_recalibrate``). Rows also carry the train-mode running
    figures of the round (``running_loss``/``running_acc``). Raises :class:`Diverged` on a non-finite or
    exploding training loss.
    """
    device = device or resolve_device(train)
    data = dataset.to(device)
    x_all, y_all = data.x_train, data.y_train
    if train_idx is not None:
        train_idx = train_idx.to(device)
        x_all, y_all = x_all.subset(train_idx), y_all[train_idx]  # stored as loaded; batches normalised
    n = len(y_all)
    bs = min(train.batch_size, n)
    per_epoch = max(1, n // bs)  # drop the last incomplete batch: no tiny batches for BatchNorm
    total = steps or train.steps or train.epochs * per_epoch
    report_every = report_every or per_epoch
    rounds = math.ceil(total / report_every)
    channels_last = train.channels_last is not False  # null: the model's own layout, channels-last
    model.to(device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=train.lr,
                            foreach=device.type == "cuda")
    warm = int(train.warmup * total)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ev = eval_idx.to(device) if eval_idx is not None else None
    xe, ye = (x_all, y_all) if ev is None else (x_all.subset(ev), y_all[ev])
    gen = torch.Generator(device="cpu").manual_seed(train.seed)
    chance_loss = math.log(max(2, dataset.num_classes))
    history: list[dict[str, Any]] = []
    step, images, train_s = 0, 0, 0.0
    perm, pos = None, per_epoch
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for rnd in range(1, rounds + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for _ in range(min(report_every, total - step)):
            if pos >= per_epoch:
                perm, pos = torch.randperm(n, generator=gen).to(device), 0
            idx = perm[pos * bs:(pos + 1) * bs]
            pos += 1
            xb, yb = x_all[idx], y_all[idx]
            if train.augment:
                xb = _augment(xb, gen)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, train):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=train.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(-1) == yb).sum()
            seen += len(yb)
            step += 1
        sync()
        train_s += time.perf_counter() - t0
        images += seen
        running_loss = loss_sum.item() / max(1, seen)
        if not math.isfinite(running_loss) or running_loss > 100 * chance_loss:
            raise Diverged(f"training loss {running_loss:.4g} at round {rnd} ({regime} regime, lr {train.lr:g}) "
                           f"is {'not finite' if not math.isfinite(running_loss) else 'over 100x chance'}")
        # Every round is measured like the final result: BN statistics recomputed, eval mode, the same
        # examples, so that per-round estimates (ASHA) and the leaderboard agree.
        recalibrate_bn(model, x_all, train.bn_recalibrate, train.eval_batch_size, train.seed, channels_last)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val, train, device, channels_last)
        fit_loss, fit_acc = evaluate(model, xe, ye, train, device, channels_last)
        row = {"regime": regime, "epoch": rnd, "step": step, "passes": images / n, "train_loss": fit_loss,
               "train_acc": fit_acc, "val_loss": val_loss, "val_acc": val_acc,
               "running_loss": running_loss, "running_acc": correct.item() / max(1, seen),
               "lr": opt.param_groups[0]["lr"], "round_s": time.perf_counter() - t0}
        history.append(row)
        yield row
    metrics = {"train_loss": history[-1]["train_loss"], "train_acc": history[-1]["train_acc"],
               "val_loss": history[-1]["val_loss"], "val_acc": history[-1]["val_acc"],
               "gap": history[-1]["train_acc"] - history[-1]["val_acc"], "epochs": rounds,
               "passes": images / n, "steps": step, "train_images": images, "train_s": train_s,
               "images_per_s": images / train_s if train_s > 0 else 0.0, "train_size": n}
    return FitResult(model, metrics, history)


def fit_eval_subset(y: torch.Tensor, limit: int, seed: int) -> torch.Tensor | None:
    """Indices of a stratified subset of at most ``limit`` of the labels ``y`` whose fit is measured
    (``None``: all of them)."""
    if limit >= len(y):
        return None
    return stratified_subset(y, limit / len(y), seed)


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (CUDA out of memory, or the CPU allocator giving up)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    text = str(err).lower()
    return (oom is not None and isinstance(err, oom)) or (
        isinstance(err, (RuntimeError, MemoryError))
        and ("out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError)))


def train_candidate(arch: Architecture | ModelConfig, dataset: Dataset, train: TrainConfig,
                    objective: ObjectiveConfig, *, device: str | torch.device | None = None,
                    num_threads: int | None = None, on_epoch: OnEpoch | None = None,
                    image_size: int | None = None) -> TrialResult:
    """Proxy-train ``arch`` on ``dataset`` and measure generalization, capacity and cost.

    ``mode: both`` trains a fresh model on a stratified ``subset_fraction`` of the training split
    (generalization) and another on the full split (capacity), each for the same number of steps;
    ``single`` trains once. ``on_epoch(epoch, metrics)`` gets the running estimates after every round of
    one full-split epoch's worth of steps, numbered across both trainings (``2 * epochs`` calls in
    ``both`` mode); exceptions it raises propagate (a scheduler stopping the trial).
    Divergence, out-of-memory and model errors become failed results; this never raises for them.
    """
    from nas.cost import count_cost
    from nas.model import build_model

    if isinstance(arch, ModelConfig):
        arch = arch.arch
    if num_threads:
        torch.set_num_threads(int(num_threads))
    size = image_size or dataset.image_size
    t_start = time.perf_counter()
    try:
        cost = count_cost(arch, image_size=size, num_classes=dataset.num_classes, in_chans=dataset.in_chans)
        base = {"params": float(cost.params), "macs": float(cost.macs)}
    except Exception as err:  # noqa: BLE001 - an architecture the model code cannot size is a failed trial
        return _failed("error", f"cost model: {type(err).__name__}: {err}", {}, t_start, [])
    dev = resolve_device(train, device)
    k = dataset.num_classes
    limit_idx = fit_eval_subset(dataset.y_train, objective.train_eval_limit, train.seed)
    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {"gen": None}
    full_epoch = max(1, len(dataset.y_train) // min(train.batch_size, len(dataset.y_train)))
    full_steps = train.steps or train.epochs * full_epoch  # per regime
    rounds_total = math.ceil(full_steps / full_epoch) * (2 if objective.mode == "both" else 1)

    def partial(row: dict[str, float]) -> dict[str, float]:
        return {**row, **obj.round_axes(row, state["gen"], objective, k)}

    def run() -> Iterator[dict[str, float]]:
        seed_everything(train.seed)
        out: dict[str, Any] = {}
        if objective.mode == "both":
            sub = stratified_subset(dataset.y_train, objective.subset_fraction, train.seed)
            model = build_model(arch, num_classes=k, image_size=size, in_chans=dataset.in_chans,
                                drop_path_rate=train.drop_path)
            res = yield from fit(model, dataset, train, train_idx=sub, steps=full_steps, device=dev,
                                 report_every=full_epoch, regime="generalization",
                                 eval_idx=fit_eval_subset(dataset.y_train[sub], objective.train_eval_limit,
                                                          train.seed))
            out["gen"] = res.metrics
            state["gen"] = obj.generalization(res.metrics["val_acc"], res.metrics["train_acc"], objective)
            del model, res
            seed_everything(train.seed + 1)
        model = build_model(arch, num_classes=k, image_size=size, in_chans=dataset.in_chans,
                            drop_path_rate=train.drop_path)
        res = yield from fit(model, dataset, train, steps=full_steps, device=dev, eval_idx=limit_idx,
                             regime="full")
        out["cap"] = res.metrics
        return out

    it = run()
    epoch = 0
    while True:
        try:
            row = next(it)
        except StopIteration as stop:
            out = stop.value
            break
        except Diverged as err:
            return _failed("diverged", str(err), base, t_start, history)
        except Exception as err:  # noqa: BLE001 - a trial's failure is a result, not a crash
            if is_oom(err):
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                return _failed("oom", f"out of memory on {dev}: {str(err).splitlines()[0]}", base, t_start,
                               history)
            return _failed("error", f"{type(err).__name__}: {err}", base, t_start, history)
        epoch += 1
        row = partial(row)
        row["epoch_total"], row["rounds_total"] = epoch, rounds_total
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, {k2: float(v) for k2, v in row.items() if isinstance(v, (int, float))})

    cap = out["cap"]
    gen_m = out.get("gen", cap)
    g = obj.generalization(gen_m["val_acc"], gen_m["train_acc"], objective)
    c = obj.capacity(cap["train_acc"], cap["train_loss"], k, objective)
    s = obj.score(g, c, objective)
    runs = [m for m in (out.get("gen"), cap) if m is not None]
    train_s = sum(m["train_s"] for m in runs)
    metrics = {
        **base,
        "val_acc": cap["val_acc"], "train_acc": cap["train_acc"], "gap": cap["train_acc"] - cap["val_acc"],
        "train_loss": cap["train_loss"], "val_loss": cap["val_loss"],
        "epochs": float(sum(m["epochs"] for m in runs)), "steps": float(sum(m["steps"] for m in runs)),
        "images_per_s": sum(m["train_images"] for m in runs) / train_s if train_s > 0 else 0.0,
        "train_s": train_s, "wall_s": time.perf_counter() - t_start,
        "gen_val_acc": gen_m["val_acc"], "gen_train_acc": gen_m["train_acc"], "gen_gap": gen_m["gap"],
        "gen_train_size": float(gen_m["train_size"]), "gen_passes": gen_m["passes"],
        "cap_train_acc": cap["train_acc"], "cap_train_loss": cap["train_loss"], "cap_val_acc": cap["val_acc"],
        "generalization": g, "capacity": c, "score": s,
    }
    return TrialResult(status="ok", generalization=g, capacity=c, score=s,
                       metrics={k2: float(v) for k2, v in metrics.items()}, history=history)


def _failed(status: str, reason: str, base: dict[str, float], t_start: float,
            history: list[dict[str, Any]]) -> TrialResult:
    res = TrialResult.failed(status, reason, **base, wall_s=time.perf_counter() - t_start,
                             epochs=float(len(history)))
    res.history = history
    return res


def parse_train(data: Any, file: str | None = None) -> TrainConfig:
    """Parse a ``train:`` mapping (``None``: all defaults)."""
    from nas.errors import parse_dataclass
    return parse_dataclass(TrainConfig, data, file, "train")


def parse_objective(data: Any, file: str | None = None) -> ObjectiveConfig:
    """Parse an ``objective:`` mapping (``None``: all defaults)."""
    from nas.errors import ConfigError, parse_dataclass
    try:
        return parse_dataclass(ObjectiveConfig, data, file, "objective")
    except ConfigError as err:
        if err.file is not None or file is None:
            raise
        raise ConfigError(file, err.key, err.problem, err.allowed, err.value) from None

