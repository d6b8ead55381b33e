"""Ordered proposals: the same seed gives the same search, whatever the order trials finish in, and across a
resume (nas.search.proposals, OrderedView; search.ordered)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.search import RunDir, run
from nas.search.optuna_bridge import open_study
from nas.search.proposals import OrderedView, proposal_seed, reseed

JITTER = "  trainer: 'jitter_trainer:train'\n"


def _space(write_space, name: str, trials: int = 10):
    path = write_space(name, sampler="tpe")
    text = path.read_text().replace(
        "search: {trials: 4, sampler: tpe, max_concurrent: 2, seed: 0}",
        f"search:\n  trials: {trials}\n  sampler: tpe\n  max_concurrent: 2\n  seed: 3\n  startup_trials: 3\n" + JITTER,
    )
    path.write_text(text)
    return path


def _sequence(run_dir) -> dict[int, str]:
    """Launch index -> architecture id of every trained trial of the run's study."""
    study = open_study(RunDir(run_dir))
    return {
        t.user_attrs["proposal"]: t.user_attrs["arch_id"]
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "ok"
    }


def _board(run_dir) -> list[tuple]:
    from nas.search.leaderboard import build_rows

    return [(r["rank"], r["id"], r["score"]) for r in build_rows(RunDir(run_dir).read_records())]


def test_two_runs_of_different_timing_make_the_same_search(ray_local, write_space, tmp_path):
    space = _space(write_space, "a.yaml")
    one = run(space, run_dir=tmp_path / "one", progress=False)
    two = run(space, run_dir=tmp_path / "two", progress=False)
    assert one.completed == two.completed == 10
    seq_one, seq_two = _sequence(tmp_path / "one"), _sequence(tmp_path / "two")
    assert sorted(seq_one) == list(range(10)) and seq_one == seq_two
    assert _board(tmp_path / "one") == _board(tmp_path / "two")
    # the timing did differ: the trials did not finish in the same order in both runs
    finish = [[r.number for r in RunDir(tmp_path / d).read_records()] for d in ("one", "two")]
    assert finish[0] != finish[1] or finish[0] != sorted(finish[0])
    # interrupted after 4 and resumed: the same candidates at the same places, the same pick
    three = run(space, run_dir=tmp_path / "three", progress=False, should_stop=lambda p: p.done >= 4)
    assert three.interrupted
    run(None, resume=True, run_dir=tmp_path / "three", progress=False)
    assert _sequence(tmp_path / "three") == seq_one
    assert [row[1:] for row in _board(tmp_path / "three")] == [row[1:] for row in _board(tmp_path / "one")]


def _study_with(proposals: list[tuple[int, str]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize"])
    dist = {"x": CategoricalDistribution([1, 2, 3])}
    for index, status in proposals:
        t = study.ask(dist)
        t.set_user_attr("proposal", index)
        t.set_user_attr("status", status)
        study.tell(t, float(index))
    return study


def test_the_view_hides_what_a_proposal_may_not_see_yet():
    study = _study_with([(0, "ok"), (1, "ok"), (2, "infeasible"), (2, "ok"), (3, "ok")])
    view = OrderedView(study, index=4, lag=2)  # proposal 4 sees launches 0..2 and every infeasible told
    seen = {(t.user_attrs["proposal"], t.user_attrs["status"]): t.state for t in view.get_trials()}
    assert seen[(2, "ok")] == TrialState.COMPLETE and seen[(3, "ok")] == TrialState.RUNNING
    assert seen[(2, "infeasible")] == TrialState.COMPLETE
    assert [t.number for t in view._get_trials(states=(TrialState.COMPLETE,))] == [0, 1, 2, 3]
    assert all(t.values is None for t in view.get_trials() if t.state == TrialState.RUNNING)
    assert view.directions == study.directions  # everything else is the study's
    early = OrderedView(study, index=2, lag=2)  # a launch is seen lag proposals later; a told infeasible at once
    assert [t.user_attrs["proposal"] for t in early._get_trials(states=(TrialState.COMPLETE,))] == [0, 2]


def test_reseeding_makes_each_proposal_repeatable():
    a = optuna.samplers.TPESampler(seed=1)
    b = optuna.samplers.TPESampler(seed=99)
    reseed(a, proposal_seed(5, 7))
    reseed(b, proposal_seed(5, 7))
    assert a._rng.rng.randint(1 << 30) == b._rng.rng.randint(1 << 30)
    assert a._random_sampler._rng.rng.randint(1 << 30) == b._random_sampler._rng.rng.randint(1 << 30)
    assert proposal_seed(5, 7) != proposal_seed(5, 8) and proposal_seed(5, 7) == proposal_seed(5, 7)


def test_a_table_replay_is_the_same_whatever_the_lag_order(tmp_path):
    from nas.search.replay import replay_search

    a = replay_search("bench-cifar-replay.yaml", trials=12, seed=4, lag=2)
    b = replay_search("bench-cifar-replay.yaml", trials=12, seed=4, lag=2)
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 12
