"""The proxy protocol of a search trial: :func:`train_candidate` trains a candidate in the generalization
regime (a small subset) and the capacity regime (the full split), each one :func:`~trainers.training.fit.fit`, and
turns both into a :class:`~trainers.training.result.TrialResult`, failures (divergence, out of memory, errors)
included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

import trainers.objectives.registry as obj
from nas.model.arch import Architecture, ModelConfig
from trainers.data.loading import Dataset, stratified_subset
from trainers.objectives.registry import ObjectiveConfig
from trainers.training.config import TrainConfig
from trainers.training.fit import fit, resolve_device, seed_everything
from trainers.training.result import TrialResult, classify_failure

OnEpoch = Callable[[int, dict[str, float]], None]


def fit_eval_subset(y: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor | None:
    """Indices of a stratified subset of about ``limit`` of the labels ``y`` (rounded per class, at least
    one per class) that a measurement sees: the fit images (``objective.train_eval_limit``) or the
    validation images (``objective.val_eval_limit``); ``None``: all of them."""
    if limit is None or limit >= len(y):
        return None
    return stratified_subset(y, limit / len(y), seed)


def train_candidate(
    arch: Architecture | ModelConfig,
    dataset: Dataset,
    train: TrainConfig,
    objective: ObjectiveConfig,
    *,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    on_epoch: OnEpoch | None = None,
    image_size: int | None = None,
    supernet: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> TrialResult:
    """Proxy-train ``arch`` on ``dataset`` and measure generalization, capacity and cost.

    ``mode: both`` trains a fresh model on a stratified ``subset_fraction`` of the training split
    (generalization) and another on the full split (capacity), each for the same number of steps;
    ``single`` trains once. ``on_epoch(epoch, metrics)`` gets the running estimates after every round
    (``train.report_every`` steps, default one full-split epoch's worth), numbered across both trainings;
    exceptions it raises propagate (a scheduler stopping the trial).
    Divergence, out-of-memory and model errors become failed results; this never raises for them.

    With ``train.supernet`` (the weight-sharing proxy) the candidate is not trained from scratch: each regime
    takes its weights from ``supernet`` (``{regime: {key: tensor}}``, the supernets trained by ``nas-search`` /
    ``nas-fidelity``: ``trainers.training.supernet.inherited_trainings``) and is measured the same way.
    """
    from nas.model.cost import count_cost

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
    val_idx = fit_eval_subset(dataset.y_val, objective.val_eval_limit, train.seed)
    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {"gen": None}
    full_epoch = max(1, len(dataset.y_train) // min(train.batch_size, len(dataset.y_train)))
    full_steps = train.steps or train.epochs * full_epoch  # per regime
    per_round = train.report_every or full_epoch
    rounds_total = math.ceil(full_steps / per_round) * (2 if objective.mode == "both" else 1)
    if train.supernet is not None:
        from trainers.training.supernet import inherited_trainings

        rounds_total = 2 if objective.mode == "both" else 1
        it = inherited_trainings(arch, dataset, train, objective, supernet or {}, size, dev, limit_idx, val_idx, state)
    else:
        it = _trainings(arch, dataset, train, objective, size, dev, full_steps, per_round, limit_idx, val_idx, state)
    epoch = 0
    while True:
        try:
            row = next(it)
        except StopIteration as stop:
            out = stop.value
            break
        except Exception as err:  # noqa: BLE001 - a trial's failure (divergence, out of memory, ...) is a result
            return _error_result(err, dev, base, t_start, history)
        epoch += 1
        row = {**row, **obj.round_axes(row, state["gen"], objective, k)}
        row["epoch_total"], row["rounds_total"] = epoch, rounds_total
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, {k2: float(v) for k2, v in row.items() if isinstance(v, (int, float))})
    return _result(out, base, objective, k, t_start, history)


def _trainings(
    arch: Architecture,
    dataset: Dataset,
    train: TrainConfig,
    objective: ObjectiveConfig,
    size: int,
    dev: torch.device,
    full_steps: int,
    per_round: int,
    limit_idx: torch.Tensor | None,
    val_idx: torch.Tensor | None,
    state: dict[str, Any],
) -> Iterator[dict[str, float]]:
    """The trainings of one trial as one stream of rounds (the generalization one first in ``both`` mode,
    its generalization axis left in ``state["gen"]``); return their metrics (``gen``, ``cap``)."""
    from nas.model.builder import build_model

    k = dataset.num_classes
    seed_everything(train.seed)
    out: dict[str, Any] = {}
    if objective.mode == "both":
        sub = stratified_subset(dataset.y_train, objective.subset_fraction, train.seed)
        model = build_model(
            arch, num_classes=k, image_size=size, in_chans=dataset.in_chans, drop_path_rate=train.drop_path
        )
        res = yield from fit(
            model,
            dataset,
            train,
            train_idx=sub,
            steps=full_steps,
            device=dev,
            report_every=per_round,
            regime="generalization",
            eval_idx=fit_eval_subset(dataset.y_train[sub], objective.train_eval_limit, train.seed),
            val_idx=val_idx,
        )
        out["gen"] = res.metrics
        state["gen"] = obj.generalization(res.metrics["val_acc"], res.metrics["train_acc"], objective)
        del model, res
        seed_everything(train.seed + 1)
    model = build_model(arch, num_classes=k, image_size=size, in_chans=dataset.in_chans, drop_path_rate=train.drop_path)
    res = yield from fit(
        model,
        dataset,
        train,
        steps=full_steps,
        device=dev,
        eval_idx=limit_idx,
        val_idx=val_idx,
        report_every=per_round,
        regime="full",
    )
    out["cap"] = res.metrics
    return out


def _error_result(
    err: Exception, dev: torch.device, base: dict[str, float], t_start: float, history: list[dict[str, Any]]
) -> TrialResult:
    """The failed result of a training that raised ``err``, as ``classify_failure`` says: ``diverged``,
    ``oom`` (the CUDA cache emptied) or ``error``."""
    failure = classify_failure(err, device=str(dev))
    if failure.status == "oom" and dev.type == "cuda":
        torch.cuda.empty_cache()
    return _failed(failure.status, failure.reason, base, t_start, history)


def _result(
    out: dict[str, Any],
    base: dict[str, float],
    objective: ObjectiveConfig,
    k: int,
    t_start: float,
    history: list[dict[str, Any]],
) -> TrialResult:
    """The successful result of a trial from the metrics of its trainings (``gen`` if any, ``cap``): the
    three axes and the flat metrics."""
    cap = out["cap"]
    gen_m = out.get("gen", cap)
    g = obj.generalization(gen_m["val_acc"], gen_m["train_acc"], objective)
    c = obj.capacity(cap["train_acc"], cap["train_loss"], k, objective)
    s = obj.score(g, c, objective)
    runs = [m for m in (out.get("gen"), cap) if m is not None]
    train_s = sum(m["train_s"] for m in runs)
    metrics = {
        **base,
        "val_acc": cap["val_acc"],
        "train_acc": cap["train_acc"],
        "gap": cap["train_acc"] - cap["val_acc"],
        "train_loss": cap["train_loss"],
        "val_loss": cap["val_loss"],
        "epochs": float(sum(m["epochs"] for m in runs)),
        "steps": float(sum(m["steps"] for m in runs)),
        "images_per_s": sum(m["train_images"] for m in runs) / train_s if train_s > 0 else 0.0,
        "train_s": train_s,
        "wall_s": time.perf_counter() - t_start,
        "gen_val_acc": gen_m["val_acc"],
        "gen_train_acc": gen_m["train_acc"],
        "gen_gap": gen_m["gap"],
        "gen_train_size": float(gen_m["train_size"]),
        "gen_passes": gen_m["passes"],
        "cap_train_acc": cap["train_acc"],
        "cap_train_loss": cap["train_loss"],
        "cap_val_acc": cap["val_acc"],
        "generalization": g,
        "capacity": c,
        "score": s,
    }
    return TrialResult(
        status="ok",
        generalization=g,
        capacity=c,
        score=s,
        metrics={k2: float(v) for k2, v in metrics.items()},
        history=history,
    )


def _failed(
    status: str, reason: str, base: dict[str, float], t_start: float, history: list[dict[str, Any]]
) -> TrialResult:
    res = TrialResult.failed(status, reason, **base, wall_s=time.perf_counter() - t_start, epochs=float(len(history)))
    res.history = history
    return res
