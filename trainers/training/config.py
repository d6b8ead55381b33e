"""The training protocol as configuration: the ``train:`` section and its ``train.data`` source.

Torch-free, like the rest of the configuration layer (``nas.space.search_space``, ``nas.search.config``,
``trainers.objectives.registry``): a search YAML is parsed and validated on the driver without importing torch, and
the workers receive these frozen objects as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from trainers.data.config import DataConfig
from trainers.objectives.registry import ObjectiveConfig


def _ge(lo: float, kind: str = "a number"):
    return {"check": lambda v: v is None or v >= lo, "allowed": f"{kind} >= {lo}"}


@dataclass(frozen=True)
class SupernetConfig:
    """``train.supernet``: candidates inherit their weights from a weight-sharing supernet trained once for the
    whole space, instead of training from scratch (docs/supernet.md).

    Args:
        steps: optimizer steps of the supernet's training, per regime; each step trains one candidate drawn
            uniformly from the space within its budgets, on a batch of ``train.batch_size`` images. 1,000 ranked
            better than 2,000 on CIFAR-10, at half the cost (docs/supernet.md).
        lr: AdamW peak learning rate of the supernet's training (``null``: ``train.lr``); warmup, weight decay,
            label smoothing, clipping and augmentation are ``train:``'s.
        regimes: ``separate`` trains one supernet per regime of ``objective.mode: both`` (the subset for the
            generalization axis, the full split for capacity), as the shipped proxy trains twice; ``shared``
            trains one on the full split and measures both axes on it (half the training; the generalization
            axis then measures a network that has seen every training image).
        checkpoint_every: steps between two checkpoints of the supernet's training (and progress lines). Each
            chunk between two checkpoints starts a new permutation of the images, so it is part of the training:
            changing it trains another supernet.
        finetune_steps: steps each candidate trains from its inherited weights before it is measured (0: it is
            measured after BatchNorm recalibration alone).
        finetune_lr: AdamW peak learning rate of that fine-tuning, decayed by the cosine of ``train:`` without
            warmup (``null``: ``train.lr``).
        cache: candidates' modules a training worker keeps built (the supernet's training draws from them).
    """

    steps: int = field(
        default=1000, metadata={"check": lambda v: 1 <= v <= 10**7, "allowed": "an integer 1..10_000_000"}
    )
    lr: float | None = field(default=None, metadata={"check": lambda v: v is None or v > 0, "allowed": "a number > 0"})
    regimes: Literal["separate", "shared"] = "separate"
    checkpoint_every: int = field(
        default=200, metadata={"check": lambda v: 1 <= v <= 10**7, "allowed": "an integer 1..10_000_000"}
    )
    finetune_steps: int = field(default=0, metadata={"check": lambda v: 0 <= v <= 10**5, "allowed": "0..100_000"})
    finetune_lr: float | None = field(
        default=None, metadata={"check": lambda v: v is None or v > 0, "allowed": "a number > 0"}
    )
    cache: int = field(default=16, metadata={"check": lambda v: 1 <= v <= 4096, "allowed": "an integer 1..4096"})


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
        bn_source: where the recomputed BatchNorm statistics come from: ``train`` (``bn_recalibrate``
            training images drawn by ``seed``, a pass of their own) or ``fit`` (the fit images themselves,
            ``objective.train_eval_limit`` of the regime's training images, in the same forward pass that
            measures the fit when they fit in one ``eval_batch_size`` batch; ``bn_recalibrate`` then only
            switches the recomputation off with 0).
        report_every: optimizer steps per round: how often a training is measured and reported to the
            scheduler, which may stop it between rounds (``null``: one epoch of the full training split).
        round_eval_limit: validation images measured at the rounds before a training's last: a fixed
            stratified subset of about this many (rounded per class), as many of the fit images, and at
            most this many BatchNorm-recalibration images, so that frequent rounds stay cheap; the last
            round is always measured in full (``null``: every round in full).
        supernet: the weight-sharing proxy (:class:`SupernetConfig`; ``null``: every candidate trains from scratch).
    """

    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = field(default=5, metadata=_ge(1, "an integer"))
    steps: int | None = field(default=None, metadata=_ge(1, "an integer"))
    batch_size: int = field(default=64, metadata=_ge(2, "an integer"))
    lr: float = field(default=2e-3, metadata={"check": lambda v: v > 0, "allowed": "a number > 0"})
    weight_decay: float = field(default=0.05, metadata=_ge(0))
    warmup: float = field(default=0.1, metadata={"check": lambda v: 0 <= v < 1, "allowed": "a number in [0, 1)"})
    label_smoothing: float = field(
        default=0.1, metadata={"check": lambda v: 0 <= v < 1, "allowed": "a number in [0, 1)"}
    )
    grad_clip: float = field(default=1.0, metadata=_ge(0))
    seed: int = 0
    augment: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool | None = None
    eval_batch_size: int = field(default=512, metadata=_ge(1, "an integer"))
    drop_path: float = field(default=0.0, metadata={"check": lambda v: 0 <= v < 1, "allowed": "a number in [0, 1)"})
    bn_recalibrate: int = field(default=1024, metadata=_ge(0, "an integer"))
    bn_source: Literal["train", "fit"] = "train"
    report_every: int | None = field(default=None, metadata=_ge(1, "an integer"))
    round_eval_limit: int | None = field(default=None, metadata=_ge(2, "an integer"))
    supernet: SupernetConfig | None = None


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


def flat(d: Any, prefix: str) -> dict[str, Any]:
    """A nested mapping as ``{"prefix.key.sub": value}`` (tuples as lists, as JSON reads them back)."""
    if isinstance(d, tuple):
        d = list(d)
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}"))
        return out
    return {prefix: d}


def default_protocol() -> dict[str, Any]:
    """The flat ``train.*``/``objective.*`` protocol of the defaults (what a key recorded before it existed
    meant)."""
    return {
        **flat(dataclasses.asdict(TrainConfig()), "train"),
        **flat(dataclasses.asdict(ObjectiveConfig()), "objective"),
    }
