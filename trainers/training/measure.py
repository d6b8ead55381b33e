"""Measuring a model between training rounds: BatchNorm statistics recomputed from training images, loss
and accuracy on a set of images, and the probe (which images) a round is measured on. Used by ``fit`` and
the proxy trainers.

A measurement is a few forward passes and, on a short proxy, a large share of a trial (docs/trainer.md,
"What a round's measurement costs"): its cost is the number of images it sees. ``train.bn_source: fit``
recomputes the statistics from the fit images themselves and reads the fit from that same pass
(:func:`recalibrate_and_evaluate`), one pass instead of two."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.data.images import Images
from trainers.data.loading import stratified_subset
from trainers.training.config import TrainConfig


def autocast(device: torch.device, train: TrainConfig):
    """bf16 autocast where ``train.precision`` asks for it (``auto``: on CUDA), else a no-op context."""
    bf16 = train.precision == "bf16" or (train.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, x: torch.Tensor | Images, images: int, batch_size: int, seed: int = 0, channels_last: bool = False
) -> bool:
    """Recompute every BatchNorm's running mean/variance from ``images`` examples of ``x``.

    The statistics become the exact average over the batches (momentum ``None``), with every other module
    in eval mode (no dropout or stochastic depth while measuring). Returns whether the model has BatchNorm.
    """
    bns = _batchnorms(model)
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
            xb = x[idx[i : i + bs]]
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
def evaluate(
    model: nn.Module,
    x: torch.Tensor | Images,
    y: torch.Tensor,
    train: TrainConfig,
    device: torch.device,
    channels_last: bool,
) -> tuple[float, float]:
    """(mean cross-entropy without smoothing, accuracy) of ``model`` on ``x, y``."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for i in range(0, len(y), train.eval_batch_size):
        xb, yb = x[i : i + train.eval_batch_size], y[i : i + train.eval_batch_size]
        logits = _forward(model, xb, train, device, channels_last)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(-1) == yb).sum()
    n = max(1, len(y))
    return loss_sum.item() / n, correct.item() / n


def _forward(
    model: nn.Module, xb: torch.Tensor, train: TrainConfig, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """The logits of one batch, in the model's memory format and the protocol's precision."""
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(device, train):
        return model(xb)


@torch.no_grad()
def recalibrate_and_evaluate(
    model: nn.Module,
    x: torch.Tensor | Images,
    y: torch.Tensor,
    train: TrainConfig,
    device: torch.device,
    channels_last: bool,
) -> tuple[float, float]:
    """Recompute every BatchNorm's statistics from the images ``x`` themselves, and return the (loss,
    accuracy) of the model on ``x, y`` in eval mode with those statistics: one forward pass instead of two.

    With every image in one batch (at most ``train.eval_batch_size``), the BatchNorm layers in train mode
    normalise with exactly the statistics they record (the batch's), so the logits of that pass are those
    an eval-mode pass would give afterwards, except that PyTorch records the unbiased variance and
    normalises with the biased one: a relative difference of 1/(2n) in a layer's scale, n the values per
    channel (images x positions; at most 0.1% for 500 images at 1x1). A model without BatchNorm is simply
    evaluated; more images than one batch are recalibrated over all of them, then evaluated (two passes).
    """
    bns = _batchnorms(model)
    if not bns or not 2 <= len(y) <= train.eval_batch_size:
        recalibrate_bn(model, x, len(y), train.eval_batch_size, train.seed, channels_last)
        return evaluate(model, x, y, train, device, channels_last)
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        logits = _forward(model, x[:], train, device, channels_last)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    loss = F.cross_entropy(logits.float(), y, reduction="sum").item() / len(y)
    acc = (logits.argmax(-1) == y).sum().item() / len(y)
    return loss, acc


@dataclass(frozen=True)
class Probe:
    """What a round is measured on: validation images, fit images and the BatchNorm recalibration count
    (``bn_from_fit``: the statistics come from the fit images, in the pass that measures them; ``bn_images``
    then only says whether they are recomputed at all)."""

    x_val: Images
    y_val: torch.Tensor
    x_fit: Images
    y_fit: torch.Tensor
    bn_images: int
    bn_from_fit: bool = False

    def limited(self, limit: int | None, seed: int) -> Probe:
        """This probe cut to about ``limit`` validation and fit images (stratified subsets fixed by
        ``seed``, rounded per class, at least one per class) and at most ``limit`` BatchNorm images;
        itself for ``None`` or a limit it is within."""
        if limit is None or (len(self.y_val) <= limit and len(self.y_fit) <= limit and self.bn_images <= limit):
            return self

        def cut(x: Images, y: torch.Tensor) -> tuple[Images, torch.Tensor]:
            if len(y) <= limit:
                return x, y
            idx = stratified_subset(y, limit / len(y), seed).to(y.device)
            return x.subset(idx), y[idx]

        return Probe(
            *cut(self.x_val, self.y_val), *cut(self.x_fit, self.y_fit), min(self.bn_images, limit), self.bn_from_fit
        )


def measure_round(
    model: nn.Module,
    x_all: Images,
    probe: Probe,
    train: TrainConfig,
    device: torch.device,
    channels_last: bool,
) -> tuple[float, float, float, float]:
    """(val_loss, val_acc, fit_loss, fit_acc) after a round, on ``probe``'s images.

    Every round is measured like the final result: BN statistics recomputed (from a prefix of the same
    permutation of the training images, or from the fit images with ``probe.bn_from_fit``), eval mode, the
    same examples every round (a fixed stratified subset of them before the last round when
    ``train.round_eval_limit`` is set), so that per-round estimates (ASHA) and the leaderboard agree.
    """
    if probe.bn_from_fit and probe.bn_images > 0:
        fit_loss, fit_acc = recalibrate_and_evaluate(model, probe.x_fit, probe.y_fit, train, device, channels_last)
        val_loss, val_acc = evaluate(model, probe.x_val, probe.y_val, train, device, channels_last)
        return val_loss, val_acc, fit_loss, fit_acc
    recalibrate_bn(model, x_all, probe.bn_images, train.eval_batch_size, train.seed, channels_last)
    val_loss, val_acc = evaluate(model, probe.x_val, probe.y_val, train, device, channels_last)
    fit_loss, fit_acc = evaluate(model, probe.x_fit, probe.y_fit, train, device, channels_last)
    return val_loss, val_acc, fit_loss, fit_acc
