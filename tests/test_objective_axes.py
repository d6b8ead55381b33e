"""The registry of objectives: named axes, their directions, the latency objective and budget, N-axis fronts."""

from __future__ import annotations

import json
import random

import optuna
import pytest
from optuna.trial import TrialState

from nas.errors import ConfigError
from nas.model.arch import Architecture
from nas.search import RunDir, load_experiment, run
from nas.search.config import protocol_diff, protocol_of
from nas.search.leaderboard import build_rows, format_table
from nas.search.optuna_bridge import open_study
from nas.search.record import TrialRecord
from trainers.objectives.latency import measure_latency
from trainers.objectives.registry import (
    OBJECTIVES,
    LatencyConfig,
    ObjectiveConfig,
    measure_objectives,
    objectives_of,
    pareto_mask,
)

LATENCY_AXES = "{mode: single, axes: [generalization, capacity, latency], latency: {repeats: 5}}"


def _objective(path, section: str):
    """The tiny search YAML at ``path`` with ``objective: section``."""
    path.write_text(path.read_text().replace("objective: {mode: single}", f"objective: {section}"))
    return path


def _brute_front(points, signs):
    pts = [tuple(v * s for v, s in zip(p, signs)) for p in points]
    return [not any(q != p and all(a >= b for a, b in zip(q, p)) for q in pts) for p in pts]


def test_unknown_or_repeated_axis_is_refused_with_the_known_names(write_space):
    for axes in ("[generalization, speed]", "[capacity, capacity]", "[]"):
        with pytest.raises(ConfigError) as err:
            load_experiment(_objective(write_space(), f"{{axes: {axes}}}"))
        assert "objective.axes" in str(err.value)
        assert all(name in str(err.value) for name in OBJECTIVES)


def test_directions_and_failed_values_come_from_the_registry():
    objs = objectives_of(ObjectiveConfig(axes=("latency", "generalization")))
    assert [o.direction for o in objs] == ["minimize", "maximize"]
    arch = Architecture(layout=("C", "C", "T", "T"), depths=(1, 1, 1, 1, 1), widths=(8, 8, 16, 16, 32))
    values = {"generalization": 0.7, "capacity": 0.5, "latency": 3.0}
    ok = TrialRecord.of_trial(arch, 0, "t0", "ok", values=values)
    assert ok.axis_values(objs) == [3.0, 0.7]
    failed = TrialRecord.of_trial(arch, 0, "t0", "error", values=values)
    assert failed.axis_values(objs) == [OBJECTIVES["latency"].failed, 0.0]


@pytest.mark.parametrize("dims", [2, 3])
def test_pareto_mask_matches_brute_force_with_directions(dims):
    rng = random.Random(dims)
    for _ in range(50):
        pts = [tuple(rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(dims)) for _ in range(rng.randint(1, 12))]
        dirs = [rng.choice(["maximize", "minimize"]) for _ in range(dims)]
        signs = [-1 if d == "minimize" else 1 for d in dirs]
        assert pareto_mask(pts, dirs) == _brute_front(pts, signs)


def test_record_is_flat_on_disk_with_every_objective_under_its_name():
    arch = Architecture(layout=("C", "C", "T", "T"), depths=(1, 1, 1, 1, 1), widths=(8, 8, 16, 16, 32))
    payload = {
        "status": "ok",
        "reason": "",
        "generalization": 0.6,
        "capacity": 0.4,
        "score": 0.5,
        "metrics": {"latency": 2.5, "params": 10.0},
        "history": [],
    }
    typed = TrialRecord.from_payload(arch, 3, "t3", payload)
    rec = typed.to_json()
    assert rec["generalization"] == 0.6 and rec["capacity"] == 0.4 and rec["latency"] == 2.5
    assert rec["id"] == arch.id and rec["number"] == 3 and rec["score"] == 0.5
    assert (rec["format"], rec["kind"]) == (2, "search") and TrialRecord.from_json(rec) == typed
    rows = build_rows([typed], ("generalization", "latency"))
    assert rows[0]["latency"] == 2.5 and rows[0]["pareto"]
    assert "latency (ms)" in format_table(rows)


def test_a_protocol_recorded_before_axes_existed_still_matches(write_space):
    exp = load_experiment(write_space())
    new = protocol_of(exp)
    old = {k: v for k, v in new.items() if not k.startswith(("objective.axes", "objective.latency"))}
    assert protocol_diff(old, new) == []
    changed = dict(new, **{"objective.axes": ["generalization", "capacity", "latency"]})
    assert [d.split(":")[0] for d in protocol_diff(old, changed)] == ["objective.axes"]


def test_latency_is_measured_and_grows_with_the_model():
    small = Architecture(layout=("C",) * 4, depths=(1, 1, 1, 1, 1), widths=(8, 8, 8, 8, 8))
    big = Architecture(layout=("C",) * 4, depths=(2, 2, 2, 3, 2), widths=(32, 64, 96, 128, 192))
    cfg = ObjectiveConfig(latency=LatencyConfig(batch_size=8, repeats=5, warmup=1))
    ctx = dict(image_size=32, in_chans=3, num_classes=10, device="cpu", threads=1)
    t_small, t_big = measure_latency(small, cfg, **ctx), measure_latency(big, cfg, **ctx)
    assert 0 < t_small < t_big  # ~100x the multiply-adds
    values, over = measure_objectives(small, ObjectiveConfig(latency=LatencyConfig(repeats=3, max_ms=1e-6)), **ctx)
    assert "latency" in values and over.startswith("latency") and "budget" in over
    assert measure_objectives(small, ObjectiveConfig(), **ctx) == ({}, "")  # not an axis, no budget: not measured


def test_search_with_a_latency_axis_and_a_latency_budget(ray_local, write_space, tmp_path):
    space = _objective(write_space(), LATENCY_AXES)
    res = run(space, trials=3, run_dir=tmp_path / "run", progress=False)
    records = RunDir(res.run_dir).read_records()
    assert res.completed == 3 and all(r.ok and r.values["latency"] > 0 for r in records)
    study = open_study(RunDir(res.run_dir))
    assert study.metric_names == ["generalization", "capacity", "latency"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    by_number = {t.number: t for t in study.trials}
    for rec in records:
        assert by_number[rec.number].values == [rec.values[k] for k in ("generalization", "capacity", "latency")]
    rows = json.loads((res.run_dir / "leaderboard.json").read_text())
    front = pareto_mask(
        [(r["generalization"], r["capacity"], r["latency"]) for r in rows], ["maximize", "maximize", "minimize"]
    )
    assert [r["pareto"] for r in rows] == front and "latency" in (res.run_dir / "leaderboard.csv").read_text()

    # A budget no candidate meets: every trial is recorded infeasible with its reason, none trained.
    tight = _objective(write_space("tight.yaml"), "{mode: single, latency: {repeats: 3, max_ms: 1.0e-6}}")
    res2 = run(tight, trials=2, run_dir=tmp_path / "tight", progress=False)
    recs2 = RunDir(res2.run_dir).read_records()
    assert len(recs2) == 2 and all(r.status == "infeasible" and "budget" in r.reason for r in recs2)
    assert all(r.metric("steps") == 0 and r.values["latency"] > 0 for r in recs2)
    study2 = open_study(RunDir(res2.run_dir))
    assert all(t.values == [0.0, 0.0] for t in study2.trials if t.state == TrialState.COMPLETE)


def test_a_resume_cannot_change_the_axes(ray_local, write_space, tmp_path):
    space = write_space()
    run(space, trials=1, run_dir=tmp_path / "run", progress=False)
    _objective(space, "{mode: single, axes: [generalization]}")
    from nas.errors import UserError

    with pytest.raises(UserError, match="axes of a run cannot change"):
        run(space, trials=2, run_dir=tmp_path / "run", progress=False, new_protocol=True)
    assert len(RunDir(tmp_path / "run").read_records()) == 1
    study = optuna.load_study(
        study_name="nas",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "run" / "optuna.journal"))
        ),
    )
    assert len(study.directions) == 2 and sum(t.state == TrialState.COMPLETE for t in study.trials) == 1


def test_a_table_replay_refuses_a_measured_objective(tmp_path):
    from importlib.resources import files

    bundled = files("search_spaces")
    text = (bundled / "bench-cifar-replay.yaml").read_text()
    text = text.replace("table:benchmarks/", f"table:{bundled / 'benchmarks'}/")
    for section in (
        "  train_eval_limit: 1000\n  axes: [generalization, capacity, latency]\n",
        "  train_eval_limit: 1000\n  latency: {max_ms: 5.0}\n",
    ):
        path = tmp_path / "replay.yaml"
        path.write_text(text.replace("  train_eval_limit: 1000\n", section))
        with pytest.raises(ConfigError, match="objective.axes") as err:
            load_experiment(path)
        assert "latency" in str(err.value) and "table" in str(err.value)
    path.write_text(text)
    assert load_experiment(path).search.trainer.startswith("table:")  # the unchanged YAML replays
