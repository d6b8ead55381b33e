"""End-to-end searches on synthetic data with tiny budgets on a real local Ray (the session fixture)."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from nas.export.model_config import export_from_run, load_model_config
from nas.model.builder import build_model
from nas.model.cost import count_cost
from nas.search import RunDir, run
from nas.search.optuna_bridge import open_study
from trainers.objectives.registry import pareto_mask


def _study(run_dir):
    return open_study(RunDir(run_dir))


def test_search_leaderboard_pareto_export(ray_local, write_space, tmp_path):
    space = write_space(sampler="tpe")
    with open(tmp_path / "progress.txt", "w") as out:  # a file the caller opened for writing (Tune pickles
        res = run(space, trials=4, run_dir=tmp_path / "run", progress=out)  # its callbacks: they must not hold it)
    assert res.completed == 4 and not res.interrupted
    printed = (tmp_path / "progress.txt").read_text()
    assert "[  4/4] trial" in printed and "nas-search: best" in printed
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 4 and len({r.id for r in records}) == 4
    assert all(r.ok for r in records)

    rows = json.loads((res.run_dir / "leaderboard.json").read_text())
    assert len(rows) == 4
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    by_id = {r.id: r for r in records}
    expect = pareto_mask([(by_id[r["id"]].values["generalization"], by_id[r["id"]].values["capacity"]) for r in rows])
    assert [r["pareto"] for r in rows] == expect
    assert (res.run_dir / "leaderboard.csv").read_text().count("\n") == 5

    # The Optuna study is a real journal study holding every trained trial with its values.
    study = _study(res.run_dir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    by_number = {t.number: t for t in study.trials}
    for rec in records:
        t = by_number[rec.number]
        assert t.state == TrialState.COMPLETE
        assert t.values == [rec.values["generalization"], rec.values["capacity"]]
        assert t.user_attrs["score"] == rec.score and t.user_attrs["arch_id"] == rec.id
    loaded = optuna.load_study(
        study_name="nas",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(res.run_dir / "optuna.journal"))
        ),
    )
    assert len(loaded.trials) == len(study.trials)

    # best.yaml and nas-export rebuild exactly the network: same parameter count, same layer names.
    assert res.best_path == res.run_dir / "best.yaml"
    best = load_model_config(res.best_path)
    assert best.arch == by_id[rows[0]["id"]].architecture()
    out = export_from_run(res.run_dir, tmp_path / "third.yaml", rank=3)
    mc = load_model_config(out)
    rec = by_id[rows[2]["id"]]
    assert mc.provenance["trial"] == rec.number and mc.num_classes == 4 and mc.in_chans == 1
    model = build_model(mc)
    ref = build_model(rec.architecture(), num_classes=4, image_size=32, in_chans=1)
    assert sum(p.numel() for p in model.parameters()) == rec.metrics["params"]
    assert list(model.state_dict()) == list(ref.state_dict())
    assert count_cost(mc).params == rec.metrics["params"]


def test_budget_candidates_never_reach_a_worker(ray_local, write_space, tmp_path):
    limit = 18000  # 14 of the 24 candidates fit
    res = run(write_space(max_params=limit), trials=5, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 5
    assert all(r.metrics["params"] <= limit for r in records)
    study = _study(res.run_dir)
    over = [t for t in study.trials if t.user_attrs.get("params", 0) > limit]
    assert over, "the random sampler should have proposed some over-budget candidates"
    for t in over:
        assert t.user_attrs["status"] == "infeasible" and "tune_trial_id" not in t.user_attrs
        assert max(t.user_attrs["constraints"]) > 0
    # Tune started exactly one trial per record: over-budget proposals took no worker.
    tune_trials = [p for p in (res.run_dir / "tune").rglob("params.json")]
    assert len(tune_trials) == 5
    trained = {json.loads(p.read_text())["arch_id"] for p in tune_trials}
    assert trained == {r.id for r in records}


def test_tpe_exhausts_a_budgeted_space_telling_each_candidate_once(ray_local, write_space, tmp_path):
    """Proposals are screened before they become study trials (nas.search.proposals): each of the 24
    candidates is in the study once, trained (the 5 within the budget) or told infeasible (the other 19),
    and the search ends as soon as no new candidate is left."""
    res = run(write_space(sampler="tpe", max_params=14000), trials=50, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 5 and res.exhausted and len({r.id for r in records}) == 5
    study = _study(res.run_dir)
    told = [t for t in study.trials if t.user_attrs.get("status") != "no_new_candidate"]
    assert len(told) == 24 and len({t.user_attrs["arch_id"] for t in told}) == 24
    assert sum(t.user_attrs["status"] == "infeasible" for t in told) == 19
    assert len(study.trials) == 25  # and the one proposal that found the space exhausted (FAIL)
    assert res.proposals["no_new_candidate"] == 1
    assert sum(res.proposals["rejected"].values()) >= 1


def test_new_over_budget_candidates_do_not_use_up_max_skips(ray_local, write_space, tmp_path):
    """Each over-budget candidate is told once and is progress, not a skip: with max_skips 3 a random search
    still trains all 5 candidates within the budget (19 of the 24 are over it), then finds the space used up."""
    path = write_space(max_params=14000)
    path.write_text(path.read_text().replace("search: {trials: 4,", "search: {max_skips: 3, trials: 4,"))
    res = run(path, trials=24, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 5 and res.exhausted
    told = [t for t in _study(res.run_dir).trials if t.user_attrs.get("status") == "infeasible"]
    assert len(told) == len({t.user_attrs["arch_id"] for t in told}) == 19


def test_grid_runs_every_candidate_once_then_finishes(ray_local, write_space, tmp_path):
    path = write_space(sampler="grid", max_params=14000)  # only 5 candidates fit (12,264..13,936 params)
    res = run(path, trials=50, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert res.target == 24 and len(records) == 5 and res.exhausted
    assert len({r.id for r in records}) == 5
    assert all(r.metrics["params"] <= 14000 for r in records)


def test_asha_scheduler_search_completes(ray_local, write_space, tmp_path):
    extra = "  scheduler: {type: asha, grace_period: 1, reduction_factor: 2}\n"
    path = write_space(epochs=3, extra="")
    text = path.read_text().replace(
        "search: {trials: 4, sampler: random, max_concurrent: 2, seed: 0}",
        "search:\n  trials: 4\n  sampler: random\n  max_concurrent: 2\n" + extra,
    )
    path.write_text(text)
    res = run(path, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 4 and len({r.id for r in records}) == 4
    assert {r.status for r in records} <= {"ok", "stopped"}
    assert "ok" in {r.status for r in records}
    study = _study(res.run_dir)
    states = {t.number: t.state for t in study.trials}
    for r in records:
        assert states[r.number] == (TrialState.COMPLETE if r.ok else TrialState.PRUNED)


def test_failed_trials_are_recorded_with_reason_and_search_goes_on(ray_local, write_space, tmp_path):
    path = write_space()
    # lr 10 is the documented maximum (docs/space.md, Limits); without clipping or warmup it diverges
    path.write_text(path.read_text().replace("batch_size: 32", "batch_size: 32\n  lr: 10\n  grad_clip: 0\n  warmup: 0"))
    res = run(path, trials=3, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert len(records) == 3 and res.completed == 3
    failed = [r for r in records if not r.ok]
    assert failed, "an lr of 10 without clipping should make training diverge"
    assert all(r.status in ("diverged", "error") and r.reason for r in failed)
    rows = json.loads((res.run_dir / "leaderboard.json").read_text())
    assert all(r["rank"] is None and not r["pareto"] for r in rows if r["status"] != "ok")
    study = _study(res.run_dir)
    for r in failed:
        t = study.trials[r.number]
        assert t.state == TrialState.FAIL and t.values is None and t.user_attrs["status"] == r.status


def test_prescreen_queues_the_best_zero_cost_candidates_as_the_first_trials(ray_local, write_space, tmp_path):
    from nas.search import load_experiment
    from nas.search.prescreen import prescreen

    path = write_space(sampler="tpe")
    path.write_text(path.read_text().replace("seed: 0}", "seed: 0, prescreen: {proxy: snip, candidates: 12, keep: 3}}"))
    ranked = prescreen(load_experiment(path), 0)
    assert len(ranked) == 12 and [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)
    res = run(path, trials=4, run_dir=tmp_path / "run", progress=False)
    first = sorted(_study(res.run_dir).trials, key=lambda t: t.number)[:3]
    assert [t.user_attrs["arch_id"] for t in first] == [a.id for a, _ in ranked[:3]]
    assert [t.user_attrs["prescreen_rank"] for t in first] == [1, 2, 3]
    assert res.completed == 4


@pytest.mark.parametrize(
    "prescreen, fragment",
    [("{proxy: flops}", "not a zero-cost proxy"), ("{proxy: snip, keep: 0}", "search.prescreen.keep")],
)
def test_prescreen_config_errors(write_space, prescreen, fragment):
    from nas.errors import ConfigError
    from nas.search import load_experiment

    path = write_space()
    path.write_text(path.read_text().replace("seed: 0}", f"seed: 0, prescreen: {prescreen}}}"))
    with pytest.raises(ConfigError, match=fragment):
        load_experiment(path)
