"""The Ray Tune side of a search: joining Ray, and one session's trial loop (Tuner, searcher, scheduler).

:func:`run_trials` runs up to ``remaining`` trials of one driver session: the Optuna searcher proposes, Ray
Tune places each trial on a worker (``nas.search.trainable``), and every finished trial is recorded,
counted, printed and given its TensorBoard run (``nas.search.tensorboard``) as it arrives. It returns when
the budget is spent, the space is exhausted, a signal or ``should_stop`` asked to stop, or the loop was
aborted.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.runtime.command import Command
from nas.runtime.signals import StopFlag, StopSignals
from nas.runtime.throttle import Throttle
from nas.search.config import Experiment
from nas.search.leaderboard import write_leaderboard
from nas.search.progress import Printer, Progress, trial_line
from nas.search.record import TrialRecord
from nas.search.rundir import RunDir

if TYPE_CHECKING:
    from nas.search.trainable import WorkerSetup


SEARCH = Command(
    name="nas-search",
    folder="run directory",
    new_folder="a different `--name`/`--run-dir` for a new search",
    gpus="`--gpus-per-trial {value}`",
    gpus_off="`--gpus-per-trial 0` (or `search.gpus_per_trial: 0` in the YAML)",
    cpus="`--cpus-per-trial`",
)
"""``nas-search`` as the shared runtime names it (its lock, its Ray set-up)."""


def connect_ray(
    address: str | None,
    search,
    where_set: dict[str, str | None] | None = None,
    log: Callable[[str], None] = lambda line: None,
    signals: StopSignals | None = None,
) -> bool:
    """Join (or start) Ray and check the per-trial resources (``nas.runtime.cluster.start_ray``); ``True`` when
    this call started Ray.

    ``where_set`` names where ``gpus``/``cpus`` per trial were set (a YAML key), for the error message;
    ``log`` takes Ray's start-up notices (the run's search.log); ``signals`` are put back after ``ray.init``.
    """
    from nas.runtime.cluster import start_ray

    where_set = where_set or {}
    return start_ray(
        SEARCH,
        address,
        cpus_per_trial=search.cpus_per_trial,
        gpus_per_trial=search.gpus_per_trial,
        log=log,
        signals=signals,
        gpus_from=where_set.get("gpus"),
        cpus_from=where_set.get("cpus"),
    )


@dataclass
class LoopOutcome:
    """How one session's trial loop ended."""

    stopped: bool  # a signal, should_stop or an abort stopped it (resumable)
    exhausted: bool  # the space had no new candidates within the budgets
    stopped_by: int | None  # the signal, if one stopped it
    timings: dict[str, float] = field(default_factory=dict)
    proposals: dict[str, Any] = field(default_factory=dict)  # nas.search.proposals.ProposalStats.as_dict


def reports_per_trial(exp: Experiment) -> int:
    """How many reports a trial sends (its rounds and the final one): a scheduler's ``max_t`` default."""
    from trainers.training.tabular import is_table, load_table, table_path

    if is_table(exp.search.trainer):  # the recorded rounds, plus the final report
        table = load_table(table_path(exp.search.trainer))
        return max(len(e.history) for e in table.entries.values()) + 1
    return exp.train.epochs * (2 if exp.objective.mode == "both" else 1) + 1


def _trial_name(trial) -> str:
    return f"trial-{trial.config['number']:04d}-{trial.config['arch_id']}"


def _error_file(trial) -> str:
    path = getattr(trial, "local_path", None) or getattr(trial, "path", None)
    return f"{path}/error.txt" if path else "the run's tune/ folder"


def _callbacks(say: Printer, max_retries: int, started: Callable[[], None], tick: Callable[[], None]):
    """Tune callbacks: note when the first trial starts; say when a trial lost its worker; ``tick`` at every
    step of Tune's loop (about ten a second)."""
    from ray.tune import Callback

    class _Events(Callback):
        def __init__(
            self, say_: Printer, retries: int, on_start: Callable[[], None], on_step: Callable[[], None]
        ) -> None:
            self.say, self.max_retries, self.started, self.on_step = say_, retries, on_start, on_step

        def __getstate__(self) -> dict:
            """Nothing: Ray Tune pickles its callbacks with the Tuner (``tuner.pkl``), and these keep the
            driver's printer, whose file the caller may have opened for writing (``run(progress=f)``)."""
            return {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started()

        def on_step_end(self, iteration, trials, **info):
            self.on_step()

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.say(
                f"nas-search: trial {trial.config['number']} lost its worker (a dead process or node); Ray Tune "
                f"re-runs it (search.max_retries {self.max_retries}); details in {_error_file(trial)}"
            )

    return [_Events(say, max_retries, started, tick)]


def _stopper(flag: StopFlag):
    """A Tune stopper that ends the whole loop once ``flag`` is set (no single trial is stopped by it)."""
    from ray import tune

    class _StopAll(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return flag.set

    return _StopAll()


def worker_setup(exp: Experiment) -> WorkerSetup:
    """What every trial's worker is given: the frozen protocol, and the data set of a file-backed source
    loaded once into Ray's object store (read by every worker of a node; Ray must be running)."""
    from nas.search.trainable import WorkerSetup

    setup = WorkerSetup(
        trainer=exp.search.trainer,
        train=exp.train,
        objective=exp.objective,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        cpus_per_trial=exp.search.cpus_per_trial,
    )
    return setup if setup.replays else setup.sharing()


def _tuner(
    exp: Experiment, run: RunDir, searcher, remaining: int, session: int, flag: StopFlag, callbacks: list, setup=None
):
    """The session's Tuner: the trainable with the frozen protocol (``setup``, else :func:`worker_setup`), the
    searcher, the scheduler, and the session's folder ``RUN/tune/session-K``."""
    from nas.search.schedulers import make_scheduler
    from trainers.objectives.registry import objectives_of

    scheduler = make_scheduler(exp.search.scheduler, reports_per_trial(exp), objectives_of(exp.objective))
    return make_tuner(
        exp,
        run,
        setup or worker_setup(exp),
        searcher,
        remaining,
        f"session-{session}",
        flag,
        callbacks,
        name=_trial_name,
        scheduler=scheduler,
        max_concurrent=exp.search.max_concurrent,
    )


def make_tuner(
    exp: Experiment,
    run: RunDir,
    setup,
    searcher,
    samples: int,
    folder: str,
    flag: StopFlag,
    callbacks: list,
    *,
    name: Callable,
    scheduler=None,
    max_concurrent: int | None = None,
):
    """A Tuner of this run: ``train_trial`` with ``setup`` (a :class:`~nas.search.trainable.WorkerSetup`) and the
    search's resources per trial, ``searcher`` handing out ``samples`` trials, stopped by ``flag``, in
    ``RUN/tune/<folder>`` (the search's sessions and the verification of finalists both run through here)."""
    from ray import tune

    from nas.search.tensorboard import ray_logger_off
    from nas.search.trainable import train_trial

    s = exp.search
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, setup=setup), {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}
    )
    run.tune_dir.mkdir(exist_ok=True)
    # Tune logs every lost worker with a full traceback; the trial record and a progress line say it instead.
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_name_creator=name,
            trial_dirname_creator=name,
        ),
        run_config=tune.RunConfig(
            name=folder,
            storage_path=str(run.tune_dir),
            verbose=0,
            stop=_stopper(flag),
            callbacks=[*callbacks, ray_logger_off()],  # the run's own TensorBoard runs: nas.search.tensorboard
            failure_config=tune.FailureConfig(max_failures=s.max_retries),
        ),
    )


def concurrency(exp: Experiment) -> int:
    """Trials that run at once: ``search.max_concurrent``, else as many as the cluster's CPUs (and GPUs, where
    trials take some) hold. Ordered proposals lag by this many (``nas.search.proposals``)."""
    import ray

    s = exp.search
    if s.max_concurrent is not None:
        return s.max_concurrent
    res = ray.cluster_resources()
    fits = [int(res.get("CPU", 1) // s.cpus_per_trial)]
    if s.gpus_per_trial > 0:
        fits.append(int(res.get("GPU", 0) // s.gpus_per_trial))
    return max(1, min(fits))


def fit_pausable(tuner, flag: StopFlag, searcher, signals: StopSignals, say: Printer, what: str, after: str) -> None:
    """``tuner.fit()`` with SIGINT/SIGTERM/SIGHUP as a pause: the first signal sets ``flag`` and stops the
    ``searcher`` from proposing (Tune then stops the running trials), saying ``what`` and ``after``; a second one
    aborts the loop, and what is recorded stays saved. Used by the search's sessions and by the verification."""

    def on_signal(signum: int) -> None:
        flag.request(signal.Signals(signum).name)
        searcher.stopping = True
        say(
            f"nas-search: {signal.Signals(signum).name}: {what} (Ctrl-C or the same signal again aborts at once); "
            f"{after}"
        )

    signals.on_stop = on_signal
    try:
        tuner.fit()
    except KeyboardInterrupt as err:  # a second signal: abort the loop, still save what is recorded
        signum = getattr(err, "signum", signal.SIGINT)
        flag.request(signal.Signals(signum).name)
        signals.received = signals.received or signum
    finally:
        signals.on_stop = None


def run_trials(
    exp: Experiment,
    run: RunDir,
    study,
    records: dict,
    remaining: int,
    session: int,
    prog: Progress,
    say: Printer,
    should_stop: Callable[[Progress], bool] | None,
    t_cmd: float,
    sync: Callable[[], None] | None,
    signals: StopSignals,
) -> LoopOutcome:
    """Run up to ``remaining`` new trials of session ``session``; see the module docstring."""
    from nas.errors import UserError
    from nas.model.cost import count_cost
    from nas.search.searcher import OptunaSearcher
    from nas.search.tensorboard import write_trial
    from trainers.training.tabular import is_table

    s, sp = exp.search, exp.space
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    flag = StopFlag()

    def cost_fn(arch):
        return count_cost(arch, image_size=sp.image_size, num_classes=exp.num_classes, in_chans=sp.in_chans)

    setup = None
    if exp.train.supernet is not None and not is_table(s.trainer):  # the weight-sharing proxy: its supernets first
        from nas.search.supernet import with_supernets

        setup = with_supernets(exp, run, worker_setup(exp), say, signals, flag)
        timings["supernet_s"] = time.perf_counter() - t0
        if setup is None:
            return LoopOutcome(stopped=True, exhausted=False, stopped_by=signals.received, timings=timings)

    # The leaderboard and a cloud run directory's copy summarise the whole run, so rewriting them costs more
    # as it grows: they are rewritten when due (nas.runtime.throttle), and by the driver at the end.
    board = Throttle(share=0.05, min_interval_s=1.0)
    push = Throttle(share=0.05, min_interval_s=10.0)

    tb_failed: list[str] = []

    def tensorboard(rec: TrialRecord) -> None:
        """The trial's TensorBoard run (nas.search.tensorboard); a failure to write it is said once, not fatal.
        A table replay writes none (thousands of trials a minute, each round a copy of the table's)."""
        if is_table(s.trainer):
            return
        try:
            write_trial(run.tune_dir, rec)
        except (UserError, ImportError) as err:
            if not tb_failed:
                tb_failed.append(str(err))
                say(f"nas-search: the trials' TensorBoard logs are not written: {err}")

    def on_record(rec: TrialRecord) -> None:
        prog.elapsed_s = time.perf_counter() - t0
        prog.add(rec)
        prog.running = len(searcher.live)
        prog.skipped = searcher.skipped + searcher.duplicates
        say(trial_line(prog, rec))
        tensorboard(rec)
        board(lambda: write_leaderboard(run, list(records.values()), axes=exp.objective.axes))
        if sync is not None:
            push(sync)
        if should_stop is not None and not flag.set and should_stop(prog):
            flag.request("should_stop")
            searcher.stopping = True

    searcher = OptunaSearcher(
        study,
        sp,
        cost_fn,
        records,
        remaining,
        run=run,
        grid=s.sampler == "grid",
        max_skips=s.max_skips,
        on_record=on_record,
        seed=s.seed if s.ordered else s.seed + 1000 * session,
        ordered_lag=concurrency(exp) if s.ordered else None,
    )
    first = lambda: timings.setdefault("first_trial_s", time.perf_counter() - t_cmd)  # noqa: E731

    def tick() -> None:  # a rewrite skipped after the last finished trial is made once due, not a trial later
        board.catch_up()
        push.catch_up()

    from nas.search.progress import LiveProgress  # the data and trial-start lines, rounds for the ETA, time budget

    def stop(why: str) -> None:  # the time budget is spent: stop as a pause does (running trials re-run on resume)
        flag.request(why)
        searcher.stopping = True

    live = LiveProgress(exp, prog, say, t0, t_cmd, stop)
    with live.loading():  # the Tuner's worker_setup loads a file-backed data set into Ray's object store
        callbacks = [*_callbacks(say, s.max_retries, first, tick), live.callback()]
        tuner = _tuner(exp, run, searcher, remaining, session, flag, callbacks, setup)

    fit_pausable(tuner, flag, searcher, signals, say, "stopping", "running trials will be re-run on resume")
    timings["search_s"] = time.perf_counter() - t0
    timings["leaderboard_s"] = board.total_s
    timings["leaderboard_writes"] = board.runs
    if sync is not None:
        timings["push_s"], timings["pushes"] = push.total_s, push.runs
    return LoopOutcome(
        stopped=flag.set,
        exhausted=searcher.exhausted,
        stopped_by=signals.received,
        timings=timings,
        proposals=searcher.proposals.stats.as_dict(),
    )
