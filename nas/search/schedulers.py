"""Early stopping of trials (the ``search.scheduler`` section), as Ray Tune schedulers.

- ``asha``: Ray's asynchronous successive halving on the per-round ``score``.
- ``pareto``: the same rungs, but a trial is ranked at a rung by its non-dominated rank on the objective
  axes (generalization, capacity, or those ``objective.axes`` names) among the trials recorded there, ties by
  score; the best ``1/reduction_factor``
  continue. Single-score halving drops candidates that are strong on one axis only, which are on the Pareto
  front the search exists to find (measured in docs/benchmark.md).

Neither stops a trial after its last training round (``last_round`` in the report): the result follows at
once, and stopping there would save nothing and lose the trial's final record.

Every scheduler here (``none`` too: :class:`LiveFIFO`) picks the next trial to start among the live trials
only. Ray's FIFO choice scans every trial of the session at each step of Tune's loop, so the driver's cost per
trial grew with the number of trials (measured in docs/search.md, "Driver throughput").
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from nas.search.config import SCHEDULERS
from trainers.objectives.registry import Objective, objectives_of


class LiveChoice:
    """Mixin for a Ray Tune scheduler: the next trial to start is the pending trial started first, else the
    paused one (Ray's FIFO order), chosen among the live trials only."""

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:
                return min(ready, key=lambda t: (t.config.get("number", 0), t.trial_id))
        return None


class LiveFIFO(LiveChoice, FIFOScheduler):
    """Ray's FIFO scheduler (every trial trains to the end)."""


class CompletingASHA(LiveChoice, ASHAScheduler):
    """Ray's ASHA, except that a trial whose training is done is never stopped."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("last_round"):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def nondominated_ranks(points: list[tuple[float, ...]]) -> list[int]:
    """Rank 0 for the Pareto front (maximising every coordinate), 1 for the front of the rest, and so on."""
    ranks = [-1] * len(points)
    left = set(range(len(points)))
    r = 0
    while left:
        front = {
            i
            for i in left
            if not any(points[j] != points[i] and all(a >= b for a, b in zip(points[j], points[i])) for j in left)
        }
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


class ParetoHalving(LiveChoice, FIFOScheduler):
    """Asynchronous successive halving on non-dominated rank.

    Rungs at ``grace_period * reduction_factor**k`` reports (below ``max_t``). A trial reaching a rung is
    recorded there; it continues if, among the trials recorded at that rung so far (itself included), its
    position by (non-dominated rank, -score) is within the best ``ceil(n / reduction_factor)``; the first
    ``reduction_factor`` trials at a rung always continue (nothing to compare with yet), as in ASHA.
    """

    def __init__(
        self,
        *,
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3.0,
        time_attr: str = "training_iteration",
        objectives: tuple[Objective, ...] | None = None,
    ):
        super().__init__()
        self.objectives = objectives or objectives_of(None)
        self.time_attr, self.rf = time_attr, reduction_factor
        self.rungs: list[int] = []
        t = grace_period
        while t < max_t:
            self.rungs.append(int(t))
            t = math.ceil(t * reduction_factor) if t * reduction_factor > t + 0.5 else t + 1
        self.recorded: dict[int, dict[str, tuple[tuple[float, ...], float]]] = {r: {} for r in self.rungs}
        self.num_stopped = 0

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("last_round") or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        it = result[self.time_attr]
        for rung in reversed(self.rungs):
            if it < rung or trial.trial_id in self.recorded[rung]:
                continue
            here = self.recorded[rung]
            here[trial.trial_id] = (
                tuple(float(result[o.name]) * (-1.0 if o.direction == "minimize" else 1.0) for o in self.objectives),
                float(result["score"]),
            )
            if len(here) <= self.rf:
                return TrialScheduler.CONTINUE
            ids = list(here)
            ranks = nondominated_ranks([here[i][0] for i in ids])
            order = sorted(range(len(ids)), key=lambda k: (ranks[k], -here[ids[k]][1]))
            keep = {ids[k] for k in order[: math.ceil(len(ids) / self.rf)]}
            if trial.trial_id not in keep:
                self.num_stopped += 1
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"ParetoHalving: rungs {self.rungs}, stopped {self.num_stopped}"


# The schedulers by name are nas.search.config.SCHEDULERS (search.scheduler.type -> these factories, each
# ``factory(SchedulerConfig, reports per trial, objectives)``, imported on use).
def no_scheduler(cfg: Any, max_t: int, objectives: tuple[Objective, ...] | None) -> TrialScheduler:
    """``none``: every trial trains to the end."""
    return LiveFIFO()


def asha_scheduler(cfg: Any, max_t: int, objectives: tuple[Objective, ...] | None) -> TrialScheduler:
    """``asha``: successive halving on the per-round ``score``."""
    return CompletingASHA(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        max_t=cfg.max_t or max_t,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )


def pareto_scheduler(cfg: Any, max_t: int, objectives: tuple[Objective, ...] | None) -> TrialScheduler:
    """``pareto``: successive halving on the non-dominated rank of the objective axes."""
    return ParetoHalving(
        max_t=cfg.max_t or max_t,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
        objectives=objectives,
    )


def make_scheduler(cfg: Any, max_t: int, objectives: tuple[Objective, ...] | None = None) -> TrialScheduler:
    """The scheduler of ``search.scheduler``; ``max_t`` is the most reports of a
    trial when the config leaves ``max_t`` null; ``objectives`` are the axes ``pareto`` ranks on."""
    return SCHEDULERS[cfg.type](cfg, max_t, objectives)
