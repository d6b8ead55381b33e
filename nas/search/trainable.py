"""The Ray Tune trainable: one proxy training of one candidate inside a worker process.

The worker uses exactly the CPUs it was given (torch threads = CPUs per trial) and reads the data set the
driver put into the object store (``setup["shared"]``, ``trainers.data.shared``: once per node, not copied), or
loads it once per process (``trainers.data.loading.load_dataset`` caches it; Tune reuses the actors).
Per-epoch estimates are reported to Tune (so an ASHA scheduler can stop the trial); the last report carries
the whole result.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from typing import Any

from trainers.training.tabular import is_table

__all__ = ["train_trial", "run_trainer", "load_trainer", "FINAL_KEY", "RESULT_KEY", "DEFAULT_TRAINER"]

FINAL_KEY = "nas_final"
RESULT_KEY = "nas_result"
# The default trainer's name, as every recorded protocol and table holds it (``search.trainer``). The module
# moved to ``trainers.training.proxy``; the recorded name stays valid through ``RECORDED_TRAINERS``.
DEFAULT_TRAINER = "trainers.proxy:train_candidate"
RECORDED_TRAINERS = {DEFAULT_TRAINER: "trainers.training.proxy:train_candidate"}


def load_trainer(path: str) -> Callable[..., Any]:
    """The function at ``module:function``; :class:`LookupError` when the module has no such function."""
    module, _, name = RECORDED_TRAINERS.get(path, path).partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise LookupError(f"{module} has no function {name}")
    return fn


def run_trainer(
    path: str | None,
    arch,
    dataset,
    train,
    objective,
    threads: int,
    on_epoch,
    image_size: int,
    passed: list[BaseException] = (),
):
    """Call the trainer at ``path`` (``module:function``, train_candidate's signature) and turn whatever goes
    wrong in it into a failed :class:`TrialResult` with its reason: an exception (``error``), out of
    memory (``oom``) or non-finite axes (``diverged``). Exceptions in ``passed`` (Tune stopping the trial)
    propagate."""
    from trainers.training.proxy import is_oom
    from trainers.training.result import TrialResult

    path = path or DEFAULT_TRAINER
    t0 = time.perf_counter()
    try:
        res = load_trainer(path)(
            arch, dataset, train, objective, num_threads=threads, on_epoch=on_epoch, image_size=image_size
        )
        if not isinstance(res, TrialResult):
            raise TypeError(f"the trainer {path} returned {type(res).__name__}, not a TrialResult")
        return res
    except Exception as err:  # noqa: BLE001 - a failed candidate is a result, the search goes on
        if any(err is p for p in passed):
            raise
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if isinstance(err, ValueError) and "must be finite" in text:
            status, reason = "diverged", f"the trainer returned a non-finite result ({text})"
        elif is_oom(err):
            status, reason = "oom", f"out of memory: {text}"
        else:
            status, reason = "error", f"{type(err).__name__}: {text}"
        return TrialResult.failed(status, reason[:500], wall_s=time.perf_counter() - t0)


def _round_report(epoch: int, metrics: dict[str, float], measured: dict[str, float]) -> dict[str, Any]:
    """What a round reports to Tune: the running axes and the objectives measured before training;
    ``last_round`` marks the round after which the trainer only assembles its result (a scheduler must not
    stop a trial whose training is done: ``nas.search.schedulers``)."""
    last = metrics.get("epoch_total", epoch) >= metrics.get("rounds_total", float("inf"))
    return {
        "score": metrics["score"],
        "generalization": metrics["generalization"],
        "capacity": metrics["capacity"],
        **measured,
        "epoch": epoch,
        "last_round": int(last),
        FINAL_KEY: 0,
    }


def _reporter(
    tune, passed: list[BaseException], measured: dict[str, float] | None = None
) -> Callable[[int, dict[str, float]], None]:
    """The trainer's ``on_epoch``: report each round; what Tune raises to stop the trial is kept in
    ``passed`` (it is not a failure of the candidate) and re-raised."""

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        try:
            tune.report(_round_report(epoch, metrics, measured or {}))
        except BaseException as err:
            passed.append(err)
            raise

    return on_epoch


def _final_report(res, payload: dict[str, Any]) -> dict[str, Any]:
    """The last report of a trial: the axes, the measured objectives and the whole result (``payload``)."""
    from trainers.objectives.registry import OBJECTIVES

    measured = {k: v for k, v in payload["metrics"].items() if k in OBJECTIVES}
    return {
        **measured,
        "score": res.score,
        "generalization": res.generalization,
        "capacity": res.capacity,
        "epoch": len(res.history) + 1,
        "last_round": 1,
        FINAL_KEY: 1,
        RESULT_KEY: json.dumps(payload),
    }


def measure_before_training(arch, objective, train, dataset, image_size: int, threads: int):
    """The objectives a worker measures before training (``trainers.objectives.registry.measure_objectives``), and
    the failed result that replaces the training when a budget is exceeded or the measurement fails."""
    from trainers.objectives.registry import measure_objectives
    from trainers.training.proxy import resolve_device
    from trainers.training.result import TrialResult

    t0 = time.perf_counter()
    try:
        values, over = measure_objectives(
            arch,
            objective,
            image_size=image_size,
            in_chans=dataset.in_chans,
            num_classes=dataset.num_classes,
            device=resolve_device(train),
            threads=threads,
        )
    except Exception as err:  # noqa: BLE001 - a candidate that cannot be measured is a failed trial
        return {}, TrialResult.failed(
            "error", f"measuring objectives: {type(err).__name__}: {err}"[:500], wall_s=time.perf_counter() - t0
        )
    failed = TrialResult.failed("infeasible", over, **values) if over else None
    return values, failed


def train_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Train ``config["arch"]`` with the protocol in ``setup`` (``train``: a TrainConfig, ``objective``: an
    ObjectiveConfig, ``image_size``, ``in_chans``, ``cpus_per_trial``, ``trainer``, optionally ``shared``:
    the object refs of ``trainers.data.shared.share_datasets``) and report to Tune."""
    t_enter = time.perf_counter()
    from ray import tune

    if is_table(setup.get("trainer")):
        return _replay_trial(config, setup, tune, t_enter)
    import torch

    from nas.model.arch import Architecture
    from trainers.data.shared import worker_dataset

    threads = max(1, int(setup["cpus_per_trial"]))
    torch.set_num_threads(threads)
    train, objective = setup["train"], setup["objective"]  # validated frozen configs, as the driver has them
    arch = Architecture.from_dict(config["arch"])
    dataset = worker_dataset(train.data, setup["image_size"], setup["in_chans"], setup.get("shared"))
    t_start = time.perf_counter()

    measured, failed = measure_before_training(arch, objective, train, dataset, setup["image_size"], threads)
    passed: list[BaseException] = []
    res = failed or run_trainer(
        setup.get("trainer"),
        arch,
        dataset,
        train,
        objective,
        threads,
        _reporter(tune, passed, measured),
        setup["image_size"],
        passed,
    )
    t_end = time.perf_counter()
    payload = res.to_dict()
    payload["metrics"] = {
        **payload["metrics"],
        **measured,
        "num_classes": float(dataset.num_classes),
        "setup_s": t_start - t_enter,
        "trial_s": t_end - t_start,
    }
    tune.report(_final_report(res, payload))


def _replay_trial(config: dict[str, Any], setup: dict[str, Any], tune, t_enter: float) -> None:
    """``search.trainer: table:PATH``: report the recorded rounds and result of the candidate instead of
    training it (no data, no torch)."""
    from nas.model.arch import Architecture
    from trainers.training.tabular import load_table, replay, table_path

    table = load_table(table_path(setup["trainer"]))
    res = replay(Architecture.from_dict(config["arch"]), table, setup["objective"], _reporter(tune, []))
    payload = res.to_dict()
    payload["metrics"] = {**payload["metrics"], "trial_s": time.perf_counter() - t_enter}
    tune.report(_final_report(res, payload))
