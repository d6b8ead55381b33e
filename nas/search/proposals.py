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

**The same seed, the same search** (``search.ordered``, on by default). With several trials at a time, what a
sampler proposes would depend on which trials happened to finish first. In ordered mode each launch has an
index ``m`` (the user attribute ``proposal``), and proposal ``m`` sees the study through
:class:`OrderedView`: the results of launches ``0 .. m - lag`` (``lag`` = ``max_concurrent``), the candidates
told infeasible up to now, and every later launch as RUNNING without values, finished or not (a constant
liar where the sampler uses one). The searcher waits for launch ``m - lag`` to finish before proposing ``m``,
and the samplers' random states (and this wrapper's) are reseeded from ``(seed, m)`` before each proposal,
so a seed and a ``max_concurrent`` fix the sequence of candidates whatever the timing, across a resume too.
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


SYNC_STATUSES = ("infeasible", "duplicate", "no_new_candidate")
"""Trials told while a proposal is made (not trained): visible to the proposals after the one that told them."""


def _as_running(ft: FrozenTrial) -> FrozenTrial:
    """``ft`` as it looked while it trained: RUNNING, without values or a completion time."""
    return FrozenTrial(
        number=ft.number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=ft.datetime_start,
        datetime_complete=None,
        params=ft.params,
        distributions=ft.distributions,
        user_attrs=ft.user_attrs,
        system_attrs=ft.system_attrs,
        intermediate_values={},
        trial_id=ft._trial_id,
    )


class OrderedView:
    """The study as proposal ``index`` sees it in ordered mode (see the module notes): a launch later than
    ``index - lag`` is RUNNING without values, finished or not; every other trial is as stored. A trial
    without a ``proposal`` attribute (a run started before ordered mode) is as stored. Everything but the
    trial lists is the study's own."""

    def __init__(self, study: optuna.Study, index: int, lag: int):
        self._study, self._index, self._lag = study, index, lag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _seen(self, ft: FrozenTrial) -> FrozenTrial:
        p = ft.user_attrs.get("proposal")
        if not isinstance(p, int) or ft.state in (TrialState.RUNNING, TrialState.WAITING):
            return ft
        if ft.user_attrs.get("status") in SYNC_STATUSES or ft.user_attrs.get("interrupted"):
            return ft if p <= self._index else _as_running(ft)
        return ft if p <= self._index - self._lag else _as_running(ft)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        seen = [self._seen(t) for t in self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)]
        return seen if states is None else [t for t in seen if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def reseed(sampler: Any, seed: int, _seen: set[int] | None = None) -> None:
    """Reseed every random state of ``sampler`` (Optuna's ``LazyRandomState`` and ``numpy`` states, in the
    sampler and in the samplers and strategies it holds) from ``seed``: Optuna's ``reseed_rng`` draws a fresh,
    unrepeatable seed instead."""
    import numpy as np
    from optuna.samplers._lazy_random_state import LazyRandomState

    seen = set() if _seen is None else _seen
    if id(sampler) in seen or not hasattr(sampler, "__dict__"):
        return
    seen.add(id(sampler))
    for i, value in enumerate(vars(sampler).values()):
        if isinstance(value, LazyRandomState):
            value.rng.seed((seed + 7919 * i) % 2**32)
        elif isinstance(value, np.random.RandomState):
            value.seed((seed + 7919 * i) % 2**32)
        elif isinstance(value, random.Random):
            value.seed(seed + 7919 * i)
        elif isinstance(value, BaseSampler) or type(value).__module__.startswith("optuna.samplers"):
            reseed(value, seed + 104729 * (i + 1), seen)


def proposal_seed(seed: int, index: int) -> int:
    """The seed of proposal ``index`` of a search with ``seed`` (stable across processes and resumes)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "little")


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
        self.seed = seed
        self.ordered: tuple[int, int] | None = None  # (index, lag) of the proposal being made in ordered mode

    def order(self, index: int, lag: int) -> None:
        """Make the next proposals as proposal ``index`` of an ordered search with ``lag`` (see the module
        notes): reseed every random state from ``(seed, index)``; the base sampler sees :class:`OrderedView`."""
        self.ordered = (index, lag)
        s = proposal_seed(self.seed, index)
        reseed(self.base, s)
        self._rng.seed(s)

    def _view(self, study: optuna.Study) -> Any:
        return study if self.ordered is None else OrderedView(study, *self.ordered)

    def __str__(self) -> str:
        return f"FreshProposals({type(self.base).__name__})"

    # ----------------------------------------------------------------------------------- sampler API
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if "fixed_params" in trial.system_attrs:  # enqueued: its own parameters are the proposal
            return {}
        params, dists = self._propose(self._view(study), trial)
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
        return self.base.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(self._view(study), trial)

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
