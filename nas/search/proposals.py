"""Proposals that are new to the run: the run's Optuna sampler, wrapped so that a trial it proposes is a
candidate worth a worker.

A sampler that has found a good region keeps proposing what it has already seen: TPE, once its model is
sharp, proposes a trained candidate again and again. Telling each such proposal to the study as a trial
of its own (with the recorded values) made a 983-trial TPE search hold 7,717 study trials, and the
sampler's cost grows with all of them. :class:`FreshProposals` screens the sampler's proposal *before*
the trial's parameters are written: a candidate that is trained, running, or over the budgets and already
told so, is replaced by its nearest new neighbour (one choice changed, then two), else by a uniform draw
of the space, else by one of the untried set (small spaces). ``redraws`` > 1 asks the sampler again
first; that costs a TPE or GP draw each time and ranked no better on the CIFAR table (docs/benchmark.md).
The study holds one trial per candidate that is trained or told infeasible once; the sampler still learns
from every real result.

How: Optuna asks a sampler for the relative search space of a trial before any of its parameters is
suggested (``infer_relative_search_space``), then for the relative parameters (``sample_relative``).
The wrapper answers the first with the distributions of a complete, screened proposal and the second with
its values, so every parameter of the trial comes from the screened proposal. A trial with fixed
parameters (enqueued: the grid, the pre-screen, a re-queued trial) is left to them.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nas.model.arch import Architecture

Screen = Callable[[Architecture], "str | None"]
"""``screen(arch)``: ``None`` if ``arch`` may be proposed, else why not (``"trained"``, ``"running"``,
``"infeasible"``)."""


@dataclass
class ProposalStats:
    """What the wrapper did in one driver session."""

    proposals: int = 0  # proposals the sampler made (each draw)
    rejected: Counter = field(default_factory=Counter)  # reason -> draws rejected
    neighbours: int = 0  # trials given the nearest new neighbour of a rejected proposal
    uniform: int = 0  # trials given a uniform draw of the space
    none_found: int = 0  # trials for which no new candidate was found (the searcher's skip path takes them)
    propose_s: float = 0.0  # seconds spent proposing (the sampler's draws included)
    rejected_s: float = 0.0  # of which after a first draw was rejected: further draws, finding a replacement

    @property
    def rejected_share(self) -> float:
        """The fraction of the sampler's proposals that were rejected."""
        return sum(self.rejected.values()) / self.proposals if self.proposals else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "proposals": self.proposals,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_share": round(self.rejected_share, 4),
            "replaced_by_neighbour": self.neighbours,
            "replaced_by_uniform": self.uniform,
            "no_new_candidate": self.none_found,
            "propose_s": round(self.propose_s, 3),
            "rejected_s": round(self.rejected_s, 3),
        }


class StandInTrial:
    """A trial-like object for ``space.suggest`` that answers each ``suggest_categorical`` with
    ``answer(name, distribution)`` and notes the parameters and distributions asked for (so a proposal, or
    a trial rebuilt from a record, has both, as if it had been sampled)."""

    def __init__(self, answer: Callable[[str, CategoricalDistribution], Any]):
        self.answer = answer
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, CategoricalDistribution] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        dist = CategoricalDistribution(list(choices))
        value = self.answer(name, dist)
        self.params[name], self.distributions[name] = value, dist
        return value


def _key(name: str) -> str:
    """A parameter's name without the condition a width carries (``S2.width|S1=48`` -> ``S2.width``)."""
    return name.split("|", 1)[0]


def _closest(value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is a choice, else the numerically closest choice (the first for other kinds)."""
    if value in choices:
        return value
    if isinstance(value, (int, float)) and all(isinstance(c, (int, float)) for c in choices):
        return min(choices, key=lambda c: (abs(c - value), c))
    return choices[0]


class FreshProposals(BaseSampler):
    """Wraps ``base`` (the run's sampler) so that the trials it proposes are new candidates.

    Args:
        base: the sampler that proposes (TPE, NSGA-II, GP, random).
        space: the search space (``suggest``, ``encode``, ``sample``).
        screen: see :data:`Screen`.
        seed: seed of the replacement choices (neighbour order, uniform draws).
        redraws: proposals drawn from ``base`` per trial before a rejected one is replaced.
        tries: candidates tried per stage of the replacement (two-choice neighbours, uniform draws).
        enumerate_limit: a space of at most this many candidates is enumerated when the draws found
            nothing new, so that "no new candidate" means the space is exhausted.
    """

    def __init__(
        self,
        base: BaseSampler,
        space,
        screen: Screen,
        seed: int = 0,
        redraws: int = 1,
        tries: int = 200,
        enumerate_limit: int = 50_000,
    ):
        self.base, self.space, self.screen = base, space, screen
        self.redraws, self.tries, self.enumerate_limit = max(1, redraws), tries, enumerate_limit
        self._rng = random.Random(seed)
        self._proposal: dict[int, dict[str, Any]] = {}  # trial id -> screened parameters
        self.no_new_candidate: set[int] = set()  # trials for which the whole space was tried: it is exhausted
        self.stats = ProposalStats()

    def __str__(self) -> str:
        return f"FreshProposals({type(self.base).__name__})"

    # ----------------------------------------------------------------------------------- sampler API
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if "fixed_params" in trial.system_attrs:  # enqueued: its own parameters are the proposal
            return {}
        params, dists = self._propose(study, trial)
        self._proposal[trial._trial_id] = params
        return dict(dists)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self._proposal.pop(trial._trial_id, {})
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._proposal.pop(trial._trial_id, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()

    # ------------------------------------------------------------------------------------ proposing
    def _draw(self, study: optuna.Study, trial: FrozenTrial, relative_space: dict) -> tuple[dict, dict, Architecture]:
        """One proposal of ``base`` (its relative parameters, its independent draw for the others):
        (parameters, distributions, architecture)."""
        rel = self.base.sample_relative(study, trial, relative_space) if relative_space else {}

        def answer(name: str, dist: CategoricalDistribution) -> Any:
            if dist.single():
                return dist.choices[0]
            if name in rel and name in relative_space and rel[name] in dist.choices:
                return rel[name]
            return self.base.sample_independent(study, trial, name, dist)

        stand_in = StandInTrial(answer)
        arch = self.space.suggest(stand_in)
        return stand_in.params, stand_in.distributions, arch

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        """A screened proposal for ``trial``: (parameters, distributions)."""
        t0 = time.perf_counter()
        relative_space = self.base.infer_relative_search_space(study, trial)
        t_reject = None
        draw = None
        try:
            for _ in range(self.redraws):
                draw = self._draw(study, trial, relative_space)
                self.stats.proposals += 1
                why = self.screen(draw[2])
                if why is None:
                    return draw[0], draw[1]
                self.stats.rejected[why] += 1
                t_reject = time.perf_counter() if t_reject is None else t_reject
            assert draw is not None
            for source, candidate in self._replacements(draw[0], draw[1]):
                if self.screen(candidate[2]) is None:
                    if source == "neighbour":
                        self.stats.neighbours += 1
                    else:
                        self.stats.uniform += 1
                    return candidate[0], candidate[1]
            self.stats.none_found += 1
            self.no_new_candidate.add(trial._trial_id)
            return draw[0], draw[1]
        finally:
            t1 = time.perf_counter()
            self.stats.propose_s += t1 - t0
            if t_reject is not None:
                self.stats.rejected_s += t1 - t_reject

    def _replay(self, values: dict[str, Any], change: dict[str, Any]) -> tuple[dict, dict, Architecture]:
        """The candidate whose parameters are ``values`` with ``change`` applied (keys without their
        conditions); a parameter whose choices no longer hold its value takes the closest choice."""

        def answer(name: str, dist: CategoricalDistribution) -> Any:
            key = _key(name)
            if key in change and change[key] in dist.choices:
                return change[key]
            return _closest(values.get(key, dist.choices[0]), dist.choices)

        stand_in = StandInTrial(answer)
        arch = self.space.suggest(stand_in)
        return stand_in.params, stand_in.distributions, arch

    def _replacements(self, params: dict[str, Any], dists: dict[str, Any]) -> Iterator[tuple[str, tuple]]:
        """Candidates near the rejected proposal ``params``: every one-choice change (in a seeded random
        order), then up to ``tries`` two-choice changes, then up to ``tries`` uniform draws of the space."""
        values = {_key(n): v for n, v in params.items()}
        moves = [(_key(n), c) for n, d in dists.items() if not d.single() for c in d.choices if c != params[n]]
        self._rng.shuffle(moves)
        for key, choice in moves:
            yield "neighbour", self._replay(values, {key: choice})
        pairs = [(a, b) for a, b in itertools.combinations(moves, 2) if a[0] != b[0]]
        for a, b in self._rng.sample(pairs, min(self.tries, len(pairs))):
            yield "neighbour", self._replay(values, {a[0]: a[1], b[0]: b[1]})
        for _ in range(self.tries):
            arch = self.space.sample(self._rng)
            yield "uniform", self._replay({_key(n): v for n, v in self.space.encode(arch).items()}, {})
        if self.space.size() <= self.enumerate_limit:  # the untried set, exactly: no new one means exhausted
            every = list(self.space.enumerate())
            self._rng.shuffle(every)
            for arch in every:
                yield "uniform", self._replay({_key(n): v for n, v in self.space.encode(arch).items()}, {})
