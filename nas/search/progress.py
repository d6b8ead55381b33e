"""What a running search shows: the progress counts, a line for the data set, one line per trial start and
per finished trial, the ETA, the time budget, and the log.

:class:`LiveProgress` is the part that runs between finished trials, as a Ray Tune callback: it prints the
data line and each trial's start, counts every round a trial reports (so the ETA counts a trial half through
its rounds as half done), and stops the search once the session's time budget is spent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, TextIO

from nas.search.record import TrialRecord
from nas.search.rundir import RunDir

ETA_WINDOW = 20  # finished trials whose pace the ETA assumes
REPORT_WINDOW = 200  # round reports whose pace the ETA assumes (all trials together)


@dataclass
class Progress:
    """Counts shown in the live progress line (and passed to ``should_stop``)."""

    target: int
    done: int = 0
    running: int = 0
    failed: int = 0
    skipped: int = 0
    done_at_start: int = 0
    best: TrialRecord | None = None
    elapsed_s: float = 0.0
    finished_at: deque = field(default_factory=lambda: deque(maxlen=ETA_WINDOW))  # elapsed_s of recent trials
    budget_s: float | None = None  # the session's time budget, seconds from the command's start
    budget_spent: bool = False
    reports: dict[str, int] = field(default_factory=dict)  # running trials (Tune trial id) -> reports so far
    trial_reports: deque = field(default_factory=lambda: deque(maxlen=ETA_WINDOW))  # of recent finished trials
    report_at: deque = field(default_factory=lambda: deque(maxlen=REPORT_WINDOW))  # elapsed_s of recent reports
    reports_hint: int | None = None  # reports of a trial that runs to its end, until one has finished
    first_start_s: float | None = None  # elapsed_s when this session's first trial started

    @property
    def eta_s(self) -> float | None:
        """Seconds left. With the trials' round reports counted (:meth:`reported`, a search does), the work
        left in reports at the pace of the recent reports (:func:`eta_by_rounds`). Else at the pace of the
        recent trials (the last :data:`ETA_WINDOW`). Either way a run whose trials get slower (a sampler
        whose cost grows, longer candidates later) is not promised its early pace."""
        if self.report_at:
            eta = eta_by_rounds(
                list(self.report_at),
                list(self.reports.values()),
                list(self.trial_reports),
                max(0, self.target - self.done - len(self.reports)),
                self.reports_hint,
                self.first_start_s if len(self.report_at) < REPORT_WINDOW else None,
            )
            if eta is not None:
                return eta
        new = self.done - self.done_at_start
        if new <= 0:
            return None
        left = max(0, self.target - self.done)
        if len(self.finished_at) >= 4:
            times = list(self.finished_at)
            return (times[-1] - times[0]) / (len(times) - 1) * left
        return self.elapsed_s / new * left

    def add(self, rec: TrialRecord) -> None:
        """Count a newly finished trial record (and keep the best ``ok`` one); ``elapsed_s`` is its time."""
        self.finished_at.append(self.elapsed_s)
        self.done += 1
        self.failed += not rec.ok
        if rec.ok and (self.best is None or rec.score > self.best.score):
            self.best = rec
        n = self.reports.pop(rec.tune_trial_id, None) if rec.tune_trial_id else None
        if n:  # its reports, an ASHA-stopped trial's few included, are what a trial costs
            self.trial_reports.append(n)

    def started(self, trial_id: str, elapsed_s: float = 0.0) -> bool:
        """Count trial ``trial_id`` as running from ``elapsed_s``; ``False`` when it was already (Tune restarted
        it)."""
        if self.first_start_s is None:
            self.first_start_s = elapsed_s
        new = trial_id not in self.reports
        self.reports.setdefault(trial_id, 0)
        self.running = len(self.reports)
        return new

    def reported(self, trial_id: str, elapsed_s: float) -> None:
        """Count one report (a round, or the final one) of running trial ``trial_id`` at ``elapsed_s``."""
        if trial_id in self.reports:
            self.reports[trial_id] += 1
            self.report_at.append(elapsed_s)

    def ended(self, trial_id: str) -> None:
        """Trial ``trial_id`` ended without a record (stopped by a pause, or lost): no longer running."""
        if self.reports.pop(trial_id, None) is not None:
            self.running = len(self.reports)


def eta_by_rounds(
    report_at: list[float],
    running: list[int],
    finished: list[int],
    waiting: int,
    hint: int | None = None,
    since: float | None = None,
) -> float | None:
    """Seconds left of a search, counted in reports (a trial's rounds and its final report).

    Args:
        report_at: the times of the recent reports, all trials together: their pace is the rate of work.
        running: the reports each running trial has sent so far.
        finished: the reports of each recent finished trial: an ASHA-stopped trial counts its few rounds.
        waiting: trials still to start.
        hint: the reports of a trial that runs to its end, used until a trial has finished.
        since: when the first trial started, while ``report_at`` holds every report since: the pace then
            includes the wait for the first report (workers starting, the data loading in each).

    A waiting trial costs the mean of ``finished``; a running trial with ``r`` reports the mean of what the
    finished trials that went past ``r`` sent after it (a trial half through its rounds is half done), else
    what ``hint`` leaves. ``None`` when there is no pace or no size of a trial yet.
    """
    start, n = (since, len(report_at)) if since is not None else (report_at[0], len(report_at) - 1)
    if n < 1 or report_at[-1] <= start:
        return None
    rate = n / (report_at[-1] - start)  # reports per second, all workers together
    per_trial = fmean(finished) if finished else hint
    if per_trial is None:
        return None

    def left_of(r: int) -> float:
        further = [n - r for n in finished if n > r]
        if further:
            return fmean(further)
        return float(hint - r) if hint and r < hint else 0.5  # past every known size: nearly done

    work = waiting * per_trial + sum(left_of(r) for r in running)
    return work / rate


class Printer:
    """Writes a line to the run's ``search.log`` and, unless ``out`` is ``None``, to ``out``."""

    def __init__(self, out: TextIO | None, run: RunDir):
        self.out, self.run = out, run

    def __call__(self, text: str) -> None:
        self.run.log_line(text)
        if self.out is not None:
            print(text, file=self.out, flush=True)


def fmt_duration(s: float | None) -> str:
    """``MM:SS`` (``H:MM:SS`` from an hour), ``--:--`` for unknown."""
    if s is None:
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def trial_line(prog: Progress, rec: TrialRecord) -> str:
    """The progress line printed when the trial of ``rec`` finished."""
    best = f"best {prog.best.score:.3f} (trial {prog.best.number})" if prog.best else "best -"
    what = rec.status + (f": {rec.reason[:60]}" if not rec.ok else f" score {rec.score:.3f}")
    return (
        f"[{prog.done:>3}/{prog.target}] trial {rec.number} {rec.arch_str} -> {what} | "
        f"running {prog.running} failed {prog.failed} skipped {prog.skipped} | {best} | "
        f"{fmt_duration(prog.elapsed_s)} elapsed, ETA {fmt_duration(prog.eta_s)}"
    )


def start_line(prog: Progress, number: int, arch: str, elapsed_s: float, again: bool = False) -> str:
    """The line printed when a trial starts on a worker, indented under the ``[done/target]`` column of
    :func:`trial_line`."""
    pad = " " * len(f"[{prog.target:>3}/{prog.target}]")
    return (
        f"{pad} trial {number} {arch} {'restarted' if again else 'started'} | running {prog.running} | "
        f"{fmt_duration(elapsed_s)} elapsed"
    )


def data_line(data: Any, images: int | None, shared: bool) -> str:
    """What the search's trials train on: the source, its images (``images``: before ``limit``; ``None``:
    unknown), the limit and the validation share."""
    where = f" {data.path}" if getattr(data, "path", None) else ""
    parts = [f"{images:,} images" if images is not None else None]
    parts.append(f"limit {data.limit:,}" if data.limit is not None else None)
    parts.append(f"{data.val_fraction:.0%} for validation")
    what = f"{data.name}{where}, {', '.join(p for p in parts if p)}"
    if shared:
        return f"nas-search: loading data: {what}, into Ray's object store (once per node)"
    return f"nas-search: data: {what}; each worker loads it at its first trial"


class LiveProgress:
    """One session's progress between finished trials, fed by Ray Tune (:meth:`callback`).

    Args:
        exp: the experiment (its data source, for :meth:`loading`; its rounds, for the ETA).
        prog: the session's :class:`Progress`; its ``budget_s`` is the time budget.
        say: the session's :class:`Printer`.
        t0: ``time.perf_counter()`` when the session's trial loop began (the elapsed time of the lines).
        t_cmd: ``time.perf_counter()`` when the command began (the time budget counts from there).
        stop: asks the trial loop to stop as a pause does (running trials re-run on resume), with a reason.
    """

    def __init__(
        self, exp: Any, prog: Progress, say: Printer, t0: float, t_cmd: float, stop: Callable[[str], None]
    ) -> None:
        from nas.search.tuning import reports_per_trial

        self.exp, self.prog, self.say, self.t0, self.t_cmd, self.stop = exp, prog, say, t0, t_cmd, stop
        prog.reports_hint = reports_per_trial(exp)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Around the making of the trials' setup, which loads a file-backed data set into Ray's object store:
        a line saying what is loaded before, how long it took after. A built-in source (digits, synthetic),
        which each worker makes itself, gets one line; a replayed table (no data) none."""
        from trainers.data.config import SOURCES
        from trainers.training.tabular import is_table

        if is_table(self.exp.search.trainer):
            yield
            return
        from nas.search.config import images_hint

        data = self.exp.train.data
        shared = SOURCES[data.name].path is not None
        self.say(data_line(data, images_hint(data), shared))
        t = time.perf_counter()
        yield
        if shared:
            self.say(f"nas-search: data loaded in {time.perf_counter() - t:.1f} s")

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        from nas.model.arch import Architecture

        again = not self.prog.started(trial_id, self.elapsed())
        arch = str(Architecture.from_dict(config["arch"]))
        self.say(start_line(self.prog, config["number"], arch, self.elapsed(), again))

    def check_budget(self) -> None:
        """Stop the search once the time budget is spent (once)."""
        p = self.prog
        if p.budget_s is None or p.budget_spent or time.perf_counter() - self.t_cmd < p.budget_s:
            return
        from nas.search.config import format_duration

        p.budget_spent = True
        self.say(
            f"nas-search: time budget {format_duration(p.budget_s)} spent: stopping; running trials will be "
            "re-run on resume"
        )
        self.stop("time budget")

    def callback(self):
        """The Ray Tune callback that feeds this object."""
        from ray.tune import Callback

        class _Live(Callback):
            def __init__(self, live: LiveProgress) -> None:
                self.live = live

            def __getstate__(self) -> dict:
                """Nothing: Ray Tune pickles its callbacks with the Tuner, and this one keeps the printer."""
                return {}

            def on_trial_start(self, iteration, trials, trial, **info):
                self.live.trial_started(trial.trial_id, trial.config)

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.live.prog.reported(trial.trial_id, self.live.elapsed())

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.live.prog.ended(trial.trial_id)

            def on_trial_error(self, iteration, trials, trial, **info):
                self.live.prog.ended(trial.trial_id)

            def on_step_end(self, iteration, trials, **info):
                self.live.check_budget()

        return _Live(self)


def proposals_line(stats: dict[str, Any]) -> str:
    """The closing line on the sampler's proposals (``nas.search.proposals.ProposalStats.as_dict``)."""
    rejected = {k: int(v) for k, v in stats.get("rejected", {}).items()}
    n = int(stats["proposals"])
    if not any(rejected.values()):
        return f"nas-search: the sampler made {n} proposal(s), all new candidates"
    neighbour, uniform = int(stats.get("replaced_by_neighbour", 0)), int(stats.get("replaced_by_uniform", 0))
    why = ", ".join(f"{v} {k}" for k, v in rejected.items() if v)
    return (
        f"nas-search: the sampler made {n} proposal(s); {sum(rejected.values())} ({stats['rejected_share']:.0%}) "
        f"were not new ({why}) and were replaced: {neighbour} by a new neighbour, {uniform} by a uniform draw; "
        f"{stats['rejected_s']:.1f} s"
    )
