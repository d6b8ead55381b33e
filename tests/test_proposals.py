"""nas.search.proposals.FreshProposals: the run's sampler proposes only candidates worth a worker, with one
study trial per proposal (no Ray: a real in-memory Optuna study asked and told as the searcher does)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from nas.search.optuna_bridge import make_sampler
from nas.search.proposals import FreshProposals, _key
from nas.space.search_space import SearchSpace
from tests.conftest import TINY_SPACE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_space() -> SearchSpace:
    """The 24-candidate space of the search tests."""
    return SearchSpace.from_dict(yaml.safe_load(TINY_SPACE.replace("MAX_PARAMS", "null"))["space"])


class FirstChoice(optuna.samplers.BaseSampler):
    """A sampler that always proposes the first choice: the worst case of a converged sampler."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, dist):
        return dist.choices[0]


def drive(space, base, n, *, infeasible=frozenset(), seed=0, enqueue=()):
    """Ask and tell ``n`` trials as the searcher does: a candidate whose id is in ``infeasible`` is told
    once as infeasible, any other is 'trained' (told a value). Returns (study, wrapper, archs in order)."""
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=base)
    trained, told_infeasible, order = set(), set(), []

    def screen(arch):
        if arch.id in trained:
            return "trained"
        if arch.id in told_infeasible:
            return "infeasible"
        return None

    fresh = FreshProposals(base, space, screen, seed=seed)
    study.sampler = fresh
    for params in enqueue:
        study.enqueue_trial(params)
    for _ in range(n):
        trial = study.ask()
        arch = space.suggest(trial)
        order.append(arch)
        if arch.id in infeasible:
            told_infeasible.add(arch.id)
            study.tell(trial, [0.0, 0.0])
        else:
            trained.add(arch.id)
            study.tell(trial, [len(arch.id) * 0.0 + int(arch.id[:4], 16) / 65536, 0.5])
    return study, fresh, order


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_every_trial_is_a_new_candidate_and_the_study_holds_one_trial_each(sampler):
    space = tiny_space()
    study, fresh, order = drive(space, make_sampler(sampler, 0, 4), 24)
    assert len({a.id for a in order}) == 24  # the whole space, each candidate once
    assert len(study.trials) == 24
    assert fresh.stats.none_found == 0


def test_a_converged_sampler_gets_the_nearest_new_neighbour():
    space = tiny_space()
    study, fresh, order = drive(space, FirstChoice(), 6)
    assert len({a.id for a in order}) == 6 and len(study.trials) == 6
    first = {_key(k): v for k, v in study.trials[0].params.items()}
    second = {_key(k): v for k, v in study.trials[1].params.items()}
    assert sum(first[k] != second[k] for k in first) == 1  # one choice changed
    assert fresh.stats.proposals == 6  # one draw per trial; from the second on, it is rejected and replaced
    assert fresh.stats.rejected["trained"] == 5 and fresh.stats.neighbours == 5
    assert fresh.stats.rejected_share == pytest.approx(5 / 6)


def test_an_exhausted_space_hands_the_proposal_back_to_the_searcher():
    space = tiny_space()
    study, fresh, order = drive(space, make_sampler("random", 0, 4), 25)
    assert len({a.id for a in order}) == 24  # the 25th is a repeat: the searcher's skip path takes it
    assert fresh.stats.none_found == 1


def test_an_infeasible_candidate_is_told_once():
    space = tiny_space()
    every = [a.id for a in space.enumerate()]
    bad = frozenset(every[:12])
    study, fresh, order = drive(space, make_sampler("tpe", 0, 4), 24, infeasible=bad)
    ids = [a.id for a in order]
    assert len(set(ids)) == 24
    assert sum(i in bad for i in ids) == 12  # each told once, none proposed again


def test_enqueued_parameters_are_kept_even_when_trained():
    space = tiny_space()
    first = next(iter(space.enumerate()))
    params = space.encode(first)
    study, fresh, order = drive(space, make_sampler("random", 0, 4), 2, enqueue=[params, params])
    assert order[0].id == order[1].id == first.id  # fixed parameters are the grid's and the re-queue's own


def test_the_same_seed_gives_the_same_sequence():
    space = tiny_space()
    a = [x.id for x in drive(space, FirstChoice(), 10, seed=3)[2]]
    b = [x.id for x in drive(space, FirstChoice(), 10, seed=3)[2]]
    c = [x.id for x in drive(space, FirstChoice(), 10, seed=4)[2]]
    assert a == b and a != c
