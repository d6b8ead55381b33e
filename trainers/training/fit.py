"""One training of one model (``fit``): AdamW with warmup and cosine decay, augmentation, and a measurement
after every round (``trainers.training.measure``); used by every proxy training and by ``nas-train``.

Data stay on the training device as loaded (uint8 where exact) and are batched by index tensors; indexing
the images gives the normalised float32 batch (``trainers.data.images.Images``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.data.images import Images
from trainers.data.loading import Dataset
from trainers.training.config import TrainConfig
from trainers.training.measure import Probe, autocast, measure_round
from trainers.training.result import Divergence


class Diverged(RuntimeError, Divergence):
    """The training loss became non-finite or exploded (a ``diverged`` failure: ``classify_failure``)."""


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

        raise UserError(
            f"The device is {name!r} (`train.device` or `--device`), but PyTorch sees no CUDA GPU here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Allowed: `auto` "
            "(CUDA when present, else CPU) or `cpu`; or run where a GPU is visible."
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def fit(
    model: nn.Module,
    dataset: Dataset,
    train: TrainConfig,
    *,
    train_idx: torch.Tensor | None = None,
    steps: int | None = None,
    device: torch.device | None = None,
    eval_idx: torch.Tensor | None = None,
    report_every: int | None = None,
    regime: str = "full",
    val_idx: torch.Tensor | None = None,
) -> Iterator[dict[str, float]]:
    """Train ``model`` in place; yield one metrics dict per round; return a :class:`FitResult`.

    A generator so that callers can report each round (and stop) between rounds. A round is
    ``report_every`` steps (default ``train.report_every``, else one epoch of the training examples); the
    validation split is evaluated once per round, on ``train.round_eval_limit`` images before the last.
    ``train_idx`` selects the training examples (default: the whole training split); ``steps`` overrides
    the config's budget (0: one round that only measures the model as it is); ``eval_idx`` picks the
    training examples whose fit (``train_loss``/``train_acc``,
    eval mode) is measured after every round; ``val_idx`` the validation examples measured (default: the
    whole validation split). Before each evaluation the BatchNorm statistics are recomputed
    (``train.bn_recalibrate``, ``train.bn_source``). Rows also carry the train-mode running figures of the round
    (``running_loss``/``running_acc``), its seconds (``round_s``) and those of its measurement
    (``eval_s``). Raises :class:`Diverged` on a non-finite or exploding training loss.
    """
    device = device or resolve_device(train)
    data = dataset.to(device)
    x_all, y_all = _train_examples(data, train_idx, device)  # stored as loaded; batches normalised
    n = len(y_all)
    bs = min(train.batch_size, n)
    per_epoch = max(1, n // bs)  # drop the last incomplete batch: no tiny batches for BatchNorm
    total = steps if steps is not None else train.steps or train.epochs * per_epoch  # 0: measure as it is
    report_every = report_every or train.report_every or per_epoch
    rounds = max(1, math.ceil(total / report_every))
    channels_last = _place(model, train, device)
    opt, sched = _optimizer(model, train, device, total)
    ev = eval_idx.to(device) if eval_idx is not None else None
    xe, ye = (x_all, y_all) if ev is None else (x_all.subset(ev), y_all[ev])
    xv, yv = (
        (data.x_val, data.y_val) if val_idx is None else (data.x_val.subset(val_idx), data.y_val[val_idx.to(device)])
    )
    full = Probe(xv, yv, xe, ye, train.bn_recalibrate, train.bn_source == "fit")
    light = full.limited(train.round_eval_limit, train.seed)
    gen = torch.Generator(device="cpu").manual_seed(train.seed)
    batches = _Batches(n, bs, per_epoch, gen, device)
    chance_loss = math.log(max(2, dataset.num_classes))
    history: list[dict[str, Any]] = []
    step, images, train_s = 0, 0, 0.0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for rnd in range(1, rounds + 1):
        model.train()
        t0 = time.perf_counter()
        count = min(report_every, total - step)
        loss_sum, correct, seen = _train_round(
            model, opt, sched, batches, x_all, y_all, count, train, device, channels_last, gen
        )
        step += count
        sync()
        train_s += time.perf_counter() - t0
        images += seen
        running_loss = loss_sum.item() / max(1, seen)
        _check_diverged(running_loss, chance_loss, f"round {rnd}", regime, train)
        probe = full if rnd == rounds else light
        t_eval = time.perf_counter()
        val_loss, val_acc, fit_loss, fit_acc = measure_round(model, x_all, probe, train, device, channels_last)
        eval_s = time.perf_counter() - t_eval
        row = {
            "regime": regime,
            "epoch": rnd,
            "step": step,
            "passes": images / n,
            "train_loss": fit_loss,
            "train_acc": fit_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "running_loss": running_loss,
            "running_acc": correct.item() / max(1, seen),
            "lr": opt.param_groups[0]["lr"],
            "round_s": time.perf_counter() - t0,
            "eval_s": eval_s,
        }
        history.append(row)
        yield row
    return FitResult(model, _summary(history, rounds, step, images, n, train_s), history)


def _summary(
    history: list[dict[str, Any]], rounds: int, step: int, images: int, n: int, train_s: float
) -> dict[str, Any]:
    """The metrics of a finished :func:`fit`: the last round's fit and validation, the budget spent, speed."""
    return {
        "train_loss": history[-1]["train_loss"],
        "train_acc": history[-1]["train_acc"],
        "val_loss": history[-1]["val_loss"],
        "val_acc": history[-1]["val_acc"],
        "gap": history[-1]["train_acc"] - history[-1]["val_acc"],
        "epochs": rounds,
        "passes": images / n,
        "steps": step,
        "train_images": images,
        "train_s": train_s,
        "images_per_s": images / train_s if train_s > 0 else 0.0,
        "train_size": n,
    }


def _train_examples(data: Dataset, train_idx: torch.Tensor | None, device: torch.device) -> tuple[Images, torch.Tensor]:
    """The training images and labels, restricted to ``train_idx`` when given."""
    x_all, y_all = data.x_train, data.y_train
    if train_idx is not None:
        train_idx = train_idx.to(device)
        x_all, y_all = x_all.subset(train_idx), y_all[train_idx]
    return x_all, y_all


def _place(model: nn.Module, train: TrainConfig, device: torch.device) -> bool:
    """Move the model to the device, channels-last unless ``train.channels_last`` is false (measured faster
    on CPU too: docs/model.md); return whether it is channels-last."""
    channels_last = train.channels_last is not False  # null: the model's own layout, channels-last
    model.to(device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return channels_last


def _optimizer(
    model: nn.Module, train: TrainConfig, device: torch.device, total: int, start: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on biases and norms) and its schedule: linear warmup, then cosine to zero
    at step ``total``; ``start``: the schedule resumes at that step (a resumed training)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.lr,
        foreach=device.type == "cuda",
    )
    warm = int(train.warmup * total)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_at(step + start))


class _Batches:
    """Index batches of the training examples: each epoch a fresh permutation (drawn from ``gen``), cut into
    ``per_epoch`` batches of ``bs`` (the last incomplete batch is dropped)."""

    def __init__(self, n: int, bs: int, per_epoch: int, gen: torch.Generator, device: torch.device):
        self.n, self.bs, self.per_epoch, self.gen, self.device = n, bs, per_epoch, gen, device
        self.perm: torch.Tensor | None = None
        self.pos = per_epoch

    def next(self) -> torch.Tensor:
        if self.pos >= self.per_epoch:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen).to(self.device), 0
        idx = self.perm[self.pos * self.bs : (self.pos + 1) * self.bs]
        self.pos += 1
        return idx


def _train_round(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched,
    batches: _Batches,
    x_all: Images,
    y_all: torch.Tensor,
    count: int,
    train: TrainConfig,
    device: torch.device,
    channels_last: bool,
    gen: torch.Generator,
    forward: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``count`` optimizer steps; return the summed training loss (on the device), the number of correct
    predictions and the number of images seen. ``forward(batch, k)`` gives the logits of the round's ``k``-th
    step (default: ``model(batch)``; a supernet's training runs another candidate at each step)."""
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for k in range(count):
        idx = batches.next()
        xb, yb = x_all[idx], y_all[idx]
        if train.augment:
            xb = _augment(xb, gen)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, train):
            logits = model(xb) if forward is None else forward(xb, k)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip > 0:  # over the parameters that have a gradient (a supernet's step uses a few)
            nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.detach().argmax(-1) == yb).sum()
        seen += len(yb)
    return loss_sum, correct, seen


def _check_diverged(
    running_loss: float, chance_loss: float, at: str, regime: str, train: TrainConfig, what: str = "training loss"
) -> None:
    """Raise :class:`Diverged` if the round's training loss is not finite or over 100x chance; ``at`` says where
    (``round 3``), ``what`` whose loss (a supernet's training names itself)."""
    if not math.isfinite(running_loss) or running_loss > 100 * chance_loss:
        raise Diverged(
            f"{what} {running_loss:.4g} at {at} ({regime} regime, lr {train.lr:g}) "
            f"is {'not finite' if not math.isfinite(running_loss) else 'over 100x chance'}"
        )
