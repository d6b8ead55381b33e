"""The Ray Tune searcher over a run's Optuna study: one Tune trial per architecture to train.

Why not Ray's ``OptunaSearch``: it keeps the study inside a pickled searcher, drops intermediate results
with several objectives and disables pruners. Here Optuna's study is the durable one of the run directory
(``nas.search.optuna_bridge``), asked and told on the driver. The study's sampler is wrapped
(``nas.search.proposals.FreshProposals``) so that it proposes candidates that are neither trained, running
nor known to be over the budgets. Inside :meth:`OptunaSearcher.suggest` a candidate over the budgets is told
as infeasible, once: COMPLETE with each objective's ``failed`` value and its ``constraints`` (> 0), which the
sampler learns the budgets from and optuna-dashboard draws as infeasible; Optuna is then asked again. A trial
whose parameters were fixed in advance (the grid, a re-queued trial) and names a trained or running
architecture is told FAIL with the user attribute ``status: duplicate`` (the original trial holds the result);
after ``max_skips`` such trials in a row the space counts as exhausted. What each state means in the study:
docs/dashboards.md.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from nas.model.arch import Architecture
from nas.search.optuna_bridge import constraint_form, set_attrs, set_constraints, study_objectives, tell_record
from nas.search.proposals import FreshProposals
from nas.search.record import TrialRecord
from nas.search.rundir import RunDir
from nas.search.trainable import FINAL_KEY, RESULT_KEY
from trainers.training.result import status_of_log

INFEASIBLE_PER_SKIP = 50  # new over-budget candidates one proposal may tell, per max_skips


class OptunaSearcher(Searcher):
    """Ray Tune searcher over the study; one Tune trial per architecture to train.

    Args:
        study: the run's study.
        space: the search space (``suggest``/``encode``).
        cost_fn: ``cost_fn(arch) -> Cost`` at the run's image size and classes.
        records: finished trials by architecture id (updated as trials finish).
        to_launch: the most Tune trials to start.
        grid: stop when the study's queue is empty (grid sampler).
        max_skips: proposals in a row that may be skipped (a repeat of a trained, running or infeasible
            candidate) before the space counts as exhausted; new over-budget candidates, each told once, may
            be ``INFEASIBLE_PER_SKIP`` times as many.
        on_record: called with each new record after it was saved (progress, leaderboard).
        run: where records are appended.
        seed: seed of the choices that replace a rejected proposal (``nas.search.proposals``); in ordered
            mode, of every proposal.
        ordered_lag: ordered mode's lag (``max_concurrent``): proposal ``m`` waits for launch ``m - lag`` and sees
            only the results of launches up to it (``nas.search.proposals.OrderedView``), so the seed fixes the
            sequence of candidates whatever the timing; ``None``: proposals see whatever has finished.
    """

    def __init__(
        self,
        study: optuna.Study,
        space,
        cost_fn: Callable[[Architecture], Any],
        records: dict[str, TrialRecord],
        to_launch: int,
        *,
        run: RunDir,
        grid: bool = False,
        max_skips: int = 200,
        on_record: Callable[[TrialRecord], None] | None = None,
        seed: int = 0,
        ordered_lag: int | None = None,
    ):
        super().__init__(metric="score", mode="max")
        self.study, self.space, self.cost_fn, self.run = study, space, cost_fn, run
        self.records, self.to_launch, self.grid, self.max_skips = records, to_launch, grid, max_skips
        self.on_record = on_record
        self.budgets = space.budgets
        self.objectives = study_objectives(study)
        self.live: dict[str, tuple[optuna.Trial, Architecture]] = {}
        self.launched = 0
        self.skipped = 0  # over budget
        self.duplicates = 0  # already trained (told the recorded values)
        self.exhausted = False
        self.stopping = False
        self.last: dict[str, dict[str, Any]] = {}
        # candidates told infeasible once (by this session or an earlier one) are not proposed again
        self.infeasible = {
            ft.user_attrs["arch_id"]
            for ft in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if ft.user_attrs.get("status") == "infeasible" and "arch_id" in ft.user_attrs
        }
        self.constraint_form = constraint_form(study)
        base = study.sampler.base if isinstance(study.sampler, FreshProposals) else study.sampler
        self.proposals = FreshProposals(base, space, self._screen, seed=seed)
        study.sampler = self.proposals
        self.lag = ordered_lag if ordered_lag and not grid else None
        self.index_of: dict[str, int] = {}  # Tune trial id -> its launch index (ordered mode)
        indices = [ft.user_attrs.get("proposal") for ft in study.get_trials(deepcopy=False)]
        self.next_index = 1 + max((i for i in indices if isinstance(i, int)), default=-1)
        self.waits = 0  # proposals deferred until an earlier launch finished (ordered mode)

    # ------------------------------------------------------------------------------- helpers
    def _constraints(self, cost) -> list[float]:
        return list(self.budgets.excess(cost))

    def _over(self, cost) -> str:
        """Which budgets ``cost`` exceeds, in words (the ``reason`` of an infeasible trial)."""
        over = [
            f"{name} {value:,} > {limit:,}"
            for name, value, limit in (
                ("params", int(cost.params), self.budgets.max_params),
                ("MACs", int(cost.macs), self.budgets.max_macs),
            )
            if limit is not None and value > limit
        ]
        return "over the budgets: " + ", ".join(over)

    def _screen(self, arch: Architecture) -> str | None:
        """Why ``arch`` is not worth a trial now (``None``: it is): see ``nas.search.proposals``."""
        if arch.id in self.records:
            return "trained"
        if arch.id in self.infeasible:
            return "infeasible"
        if any(a.id == arch.id for _, a in self.live.values()):
            return "running"
        return None

    def _queue_empty(self) -> bool:
        return not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    # ------------------------------------------------------------------------------ Searcher
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stopping or self.exhausted or self.launched >= self.to_launch:
            return Searcher.FINISHED
        running = {arch.id for _, arch in self.live.values()}
        index = None
        if self.lag is not None and self._queue_empty():
            index = self.next_index
            if any(i <= index - self.lag for i in self.index_of.values()):
                self.waits += 1
                return None  # ordered: proposal m is made once launch m - lag has finished (Tune asks again)
            self.proposals.order(index, self.lag)
        # A proposal that takes no worker is a skip, but a new over-budget candidate told once is progress (the
        # space of untried candidates shrinks): those are bounded separately, so that a space where few
        # candidates fit is searched, not declared exhausted after max_skips of them.
        skips = told_infeasible = 0
        while skips < self.max_skips and told_infeasible < INFEASIBLE_PER_SKIP * self.max_skips:
            if self.grid and self._queue_empty():
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = self.study.ask()
            if index is not None:  # a new proposal (the queue was empty): its place in the sequence
                set_attrs(self.study, trial, {"proposal": index})
            arch = self.space.suggest(trial)
            if trial._trial_id in self.proposals.no_new_candidate:  # every candidate is trained, running or infeasible
                reason = "no new candidate: every candidate of the space is trained, running or over the budgets"
                attrs = {"arch": str(arch), "arch_id": arch.id, "status": "no_new_candidate", "reason": reason}
                set_attrs(self.study, trial, attrs)
                self.study.tell(trial, state=TrialState.FAIL)
                break
            cost = self.cost_fn(arch)
            cons = self._constraints(cost)
            set_attrs(
                self.study,
                trial,
                {
                    "arch": str(arch),
                    "arch_id": arch.id,
                    "params": int(cost.params),
                    "macs": int(cost.macs),
                },
            )
            set_constraints(self.study, trial, cons, self.constraint_form)
            if any(c > 0 for c in cons):
                self.skipped += 1
                if arch.id in self.infeasible:  # told before (a trial whose parameters were fixed in advance)
                    skips += 1
                    attrs = {"status": "duplicate", "reason": "a repeat of a candidate told infeasible before"}
                    set_attrs(self.study, trial, {**attrs, "duplicate_of_infeasible": True})
                    self.study.tell(trial, state=TrialState.FAIL)
                    continue
                told_infeasible += 1
                self.infeasible.add(arch.id)
                set_attrs(self.study, trial, {"status": "infeasible", "score": 0.0, "reason": self._over(cost)})
                self.study.tell(trial, [o.failed for o in self.objectives])
                continue
            rec = self.records.get(arch.id)
            if rec is not None or arch.id in running:  # told FAIL: the original trial holds (or will hold) the result
                self.duplicates += 1
                skips += 1
                of = {"duplicate_of": rec.number} if rec is not None else {"duplicate_of_running": True}
                reason = "a repeat of a running trial" if rec is None else f"a repeat of trial {rec.number}"
                set_attrs(self.study, trial, {"status": "duplicate", "reason": reason, **of})
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            set_attrs(self.study, trial, {"tune_trial_id": trial_id})
            if self.lag is not None:
                own = self.study._storage.get_trial_user_attrs(trial._trial_id).get("proposal")
                if not isinstance(own, int):  # enqueued without an index (the pre-screen): the next one
                    own = self.next_index
                    set_attrs(self.study, trial, {"proposal": own})
                self.index_of[trial_id] = own
                self.next_index = max(self.next_index, own + 1)
            self.live[trial_id] = (trial, arch)
            self.launched += 1
            return {"arch": arch.to_dict(), "number": trial.number, "arch_id": arch.id}
        self.exhausted = True
        return Searcher.FINISHED

    def __getstate__(self) -> dict[str, Any]:
        """What a pickle of the searcher keeps: its metric and mode only. Ray Tune pickles the searcher with
        its Tuner (``tuner.pkl``, for ``Tuner.restore``, which a search never uses: it resumes from the run
        directory). The study, the records and the progress printer (a file the caller opened) stay on the
        driver, so pickling neither fails on that file nor grows with the run."""
        return {"_metric": self._metric, "_mode": self._mode}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the state is the study in the run directory."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: see :meth:`save`."""

    def _worker_error(self, number: int, arch: Architecture) -> str:
        """The last line of the failed trial's Tune error file, or a pointer to it."""
        files = sorted(self.run.tune_dir.glob(f"session-*/trial-{number:04d}-{arch.id}/error.txt"))
        for f in reversed(files):
            lines = [l.strip() for l in f.read_text(errors="replace").splitlines() if l.strip()]
            if lines:
                return f"the worker failed: {lines[-1][:300]}"
        return "the worker failed (its Ray Tune error log is under tune/)"

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        entry = self.live.pop(trial_id, None)
        last = self.last.pop(trial_id, None)
        self.index_of.pop(trial_id, None)
        if entry is None:
            return
        trial, arch = entry
        result = result or last or {}
        if result.get(FINAL_KEY) == 1:
            rec = TrialRecord.from_payload(arch, trial.number, trial_id, json.loads(result[RESULT_KEY]))
        elif self.stopping:
            return  # interrupted (Ctrl-C, should_stop): left RUNNING, so reconcile() re-queues it
        elif error:
            cost = self.cost_fn(arch)
            reason = self._worker_error(trial.number, arch)
            rec = TrialRecord.of_trial(
                arch,
                trial.number,
                trial_id,
                status_of_log(reason),
                reason=reason,
                metrics={"params": float(cost.params), "macs": float(cost.macs)},
            )
        elif "score" not in result:
            return  # ended before its first report without an error: re-queued like an interruption
        else:
            cost = self.cost_fn(arch)
            epoch = int(result.get("epoch", 0))
            rec = TrialRecord.of_trial(
                arch,
                trial.number,
                trial_id,
                "stopped",
                reason=f"stopped early by the scheduler after {epoch} report(s)",
                score=_finite(result["score"], 0.0),
                values={o.name: _finite(result[o.name], o.failed) for o in self.objectives if o.name in result},
                metrics={"params": float(cost.params), "macs": float(cost.macs), "epochs": float(epoch)},
            )
        self.run.append_record(rec)
        self.records.setdefault(arch.id, rec)
        tell_record(self.study, trial, rec)
        if self.on_record is not None:
            self.on_record(rec)


def _finite(value: Any, default: float) -> float:
    """A reported number as a float; ``default`` for one that is not a finite number (a custom trainer's NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default
