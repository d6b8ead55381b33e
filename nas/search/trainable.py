"""The worker side of a trial: one proxy training of one candidate inside a Ray worker process.

Every worker is given one typed :class:`WorkerSetup` (built by the search's tuner and by the fidelity
runner, read by attribute). The worker uses exactly the CPUs it was given (torch threads = CPUs per trial:
:meth:`WorkerSetup.enter`) and reads the data set the driver put into the object store
(``WorkerSetup.shared``, ``trainers.data.shared``: once per node, not copied), or loads it once per process
(``trainers.data.loading.load_dataset`` caches it; Tune reuses the actors). :func:`run_trainer` turns
whatever goes wrong in a trainer into a failed result (``trainers.training.result.classify_failure``).
Per-epoch estimates are reported to Tune (so an ASHA scheduler can stop the trial); the last report carries
the whole result.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.registry import load
from trainers.training.tabular import is_table

if TYPE_CHECKING:
    from trainers.data.config import DataConfig
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig


FINAL_KEY = "nas_final"
RESULT_KEY = "nas_result"
# The default trainer's name, as every recorded protocol and table holds it (``search.trainer``). The module
# moved to ``trainers.training.proxy``; the recorded name stays valid through ``RECORDED_TRAINERS``.
DEFAULT_TRAINER = "trainers.proxy:train_candidate"
RECORDED_TRAINERS = {DEFAULT_TRAINER: "trainers.training.proxy:train_candidate"}


@dataclass(frozen=True)
class ZeroCostSetup:
    """The training-free proxies a fidelity study measures (``trainers.objectives.zerocost``)."""

    proxies: tuple[str, ...]
    batch: int
    seed: int


@dataclass(frozen=True, eq=False)
class WorkerSetup:
    """What every worker of one command session is given, the same for all its trials or jobs.

    Args:
        trainer: ``search.trainer``: ``module:function`` (train_candidate's signature) or ``table:PATH``.
        train: the validated protocol (a search's ``train:``; a study's base protocol).
        objective: the validated ``objective:``.
        image_size: the images' side in pixels.
        in_chans: their channels.
        cpus_per_trial: the CPUs Ray gives each trial; the worker uses as many torch threads.
        shared: ``{DataConfig: object ref}`` of the data sets the driver put into Ray's object store
            (:meth:`sharing`); ``None``: each worker process loads its own.
        protocols: a fidelity study's protocols, ``(name, train, objective)`` each (:meth:`protocol`).
        zero_cost: a fidelity study's training-free proxies.
        supernets: ``{name: object ref}`` of the trained supernets of a weight-sharing protocol
            (``train.supernet``; ``nas.search.supernet``): ``search`` for a search, ``PROTOCOL-SEED`` in a study.
    """

    trainer: str
    train: TrainConfig
    objective: ObjectiveConfig
    image_size: int
    in_chans: int
    cpus_per_trial: float
    shared: Mapping[DataConfig, Any] | None = None
    protocols: tuple[tuple[str, TrainConfig, ObjectiveConfig], ...] = ()
    zero_cost: ZeroCostSetup | None = None
    supernets: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, kind in (("trainer", str), ("image_size", int), ("in_chans", int), ("cpus_per_trial", (int, float))):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"WorkerSetup.{name} is {type(value).__name__}: {value!r}")
        if not self.cpus_per_trial > 0:
            raise ValueError(f"WorkerSetup.cpus_per_trial must be > 0, got {self.cpus_per_trial!r}")

    @property
    def threads(self) -> int:
        """Torch threads of one trial: its CPUs (at least one)."""
        return max(1, int(self.cpus_per_trial))

    @property
    def replays(self) -> bool:
        """The trainer is a table (``table:PATH``): trials are replayed, with no data and no torch."""
        return is_table(self.trainer)

    def enter(self) -> int:
        """Make this worker process use exactly its trial's CPUs; return the thread count."""
        import torch

        torch.set_num_threads(self.threads)
        return self.threads

    def dataset(self, data: DataConfig):
        """The data set of ``data`` in this worker: from the object store when shared, else loaded once."""
        from trainers.data.shared import worker_dataset

        return worker_dataset(data, self.image_size, self.in_chans, self.shared)

    def supernet_weights(self, name: str):
        """The trained supernet ``name`` (``{regime: {key: tensor}}``) in this worker, read from the object store
        once per process; ``None`` when the driver trained none of that name."""
        ref = (self.supernets or {}).get(name)
        if ref is None:
            return None
        from trainers.training.supernet import worker_weights

        return worker_weights(ref)

    def protocol(self, name: str) -> tuple[TrainConfig, ObjectiveConfig]:
        """The ``(train, objective)`` of the study protocol ``name``."""
        for pname, train, objective in self.protocols:
            if pname == name:
                return train, objective
        raise KeyError(f"no protocol {name!r} in this setup ({', '.join(p for p, _, _ in self.protocols)})")

    def sharing(self, data: Iterable[DataConfig] = ()) -> WorkerSetup:
        """This setup with the file-backed sources of ``data`` (and of ``train``) loaded once into Ray's
        object store (``trainers.data.shared.share_datasets``; Ray must be running)."""
        from trainers.data.shared import share_datasets

        configs = [self.train.data, *data]
        return dataclasses.replace(self, shared=share_datasets(configs, self.image_size, self.in_chans))


def load_trainer(path: str) -> Callable[..., Any]:
    """The function at ``module:function``; :class:`LookupError` when the module has no such function."""
    spec = RECORDED_TRAINERS.get(path, path)
    try:
        fn = load(spec)
    except AttributeError:
        fn = None
    if not callable(fn):
        module, _, name = spec.partition(":")
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
    supernet=None,
):
    """Call the trainer at ``path`` (``module:function``, train_candidate's signature) and turn whatever goes
    wrong in it into a failed :class:`TrialResult` with its reason, as ``classify_failure`` says: an
    exception (``error``), out of memory (``oom``) or non-finite axes (``diverged``). Exceptions in
    ``passed`` (Tune stopping the trial) propagate. ``supernet``: the trained supernet a weight-sharing
    protocol inherits from (passed to the trainer only when given)."""
    from trainers.training.result import TrialResult

    path = path or DEFAULT_TRAINER
    t0 = time.perf_counter()
    try:
        extra = {"supernet": supernet} if supernet is not None else {}
        res = load_trainer(path)(
            arch, dataset, train, objective, num_threads=threads, on_epoch=on_epoch, image_size=image_size, **extra
        )
        if not isinstance(res, TrialResult):
            raise TypeError(f"the trainer {path} returned {type(res).__name__}, not a TrialResult")
        return res
    except Exception as err:  # noqa: BLE001 - a failed candidate is a result, the search goes on
        if any(err is p for p in passed):
            raise
        return TrialResult.of_error(err, wall_s=time.perf_counter() - t0)


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
    from trainers.training.fit import resolve_device
    from trainers.training.result import TrialResult, classify_failure

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
        failure = classify_failure(err)
        return {}, TrialResult.failed(
            failure.status, f"measuring objectives: {failure.reason}"[:500], wall_s=time.perf_counter() - t0
        )
    failed = TrialResult.failed("infeasible", over, **values) if over else None
    return values, failed


def train_trial(config: dict[str, Any], setup: WorkerSetup) -> None:
    """Train ``config["arch"]`` (Tune's trial config, made by ``nas.search.searcher``) with the protocol in
    ``setup`` and report to Tune. ``config["train_seed"]``, where given (a verification training,
    ``nas.search.finalists``), replaces the protocol's ``train.seed``."""
    t_enter = time.perf_counter()
    from ray import tune

    if setup.replays:
        return _replay_trial(config, setup, tune, t_enter)

    from nas.model.arch import Architecture

    threads = setup.enter()
    train, objective = setup.train, setup.objective  # validated frozen configs, as the driver has them
    if config.get("train_seed") is not None:
        train = dataclasses.replace(train, seed=int(config["train_seed"]))
    arch = Architecture.from_dict(config["arch"])
    dataset = setup.dataset(train.data)
    t_start = time.perf_counter()

    measured, failed = measure_before_training(arch, objective, train, dataset, setup.image_size, threads)
    passed: list[BaseException] = []
    res = failed or run_trainer(
        setup.trainer,
        arch,
        dataset,
        train,
        objective,
        threads,
        _reporter(tune, passed, measured),
        setup.image_size,
        passed,
        supernet=setup.supernet_weights("search") if train.supernet is not None else None,
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


def _replay_trial(config: dict[str, Any], setup: WorkerSetup, tune, t_enter: float) -> None:
    """``search.trainer: table:PATH``: report the recorded rounds and result of the candidate instead of
    training it (no data, no torch)."""
    from nas.model.arch import Architecture
    from trainers.training.tabular import load_table, replay, table_path

    table = load_table(table_path(setup.trainer))
    res = replay(Architecture.from_dict(config["arch"]), table, setup.objective, _reporter(tune, []))
    payload = res.to_dict()
    payload["metrics"] = {**payload["metrics"], "trial_s": time.perf_counter() - t_enter}
    tune.report(_final_report(res, payload))
