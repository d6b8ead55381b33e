"""What each outcome is in the run's Optuna study (docs/dashboards.md), and the TensorBoard run of a record.

Real Optuna journal studies in a run directory; no Ray (the search end to end: tests/test_dashboards.py).
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from optuna.trial import TrialState

import nas.search.optuna_bridge as ob
from nas.search import RunDir, load_experiment
from nas.search.record import TrialRecord
from nas.search.searcher import OptunaSearcher
from nas.search.tensorboard import run_name, scalars, write_trial
from trainers.objectives.registry import objectives_of

STATES = {
    "ok": TrialState.COMPLETE,
    "stopped": TrialState.PRUNED,
    "error": TrialState.FAIL,
    "diverged": TrialState.FAIL,
    "oom": TrialState.FAIL,
    "infeasible": TrialState.COMPLETE,  # a worker measured an objective beyond its budget: samplers learn from it
}


def _cost_fn(arch):
    from nas.model.cost import count_cost

    return count_cost(arch, image_size=32, num_classes=4, in_chans=1)


def _records(exp, n=len(STATES)):
    """One record per status, of distinct architectures, numbered 0.."""
    archs = list(exp.space.enumerate())[:n]
    out = []
    for i, (arch, status) in enumerate(zip(archs, STATES)):
        values = {"generalization": 0.1 * (i + 1), "capacity": 0.5} if status in ("ok", "stopped") else {}
        out.append(
            TrialRecord.of_trial(
                arch,
                i,
                f"t{i}",
                status,
                reason="" if status == "ok" else f"{status} on purpose",
                score=0.3,
                values=values,
                metrics={"params": float(_cost_fn(arch).params), "macs": float(_cost_fn(arch).macs)},
            )
        )
    return out


@pytest.fixture
def exp(write_space):
    return load_experiment(write_space())


def _run(tmp_path, name="run"):
    rd = RunDir(tmp_path / name)
    rd.path.mkdir()
    return rd


def test_each_outcome_has_its_state_and_a_lost_record_is_recovered_from_the_study(exp, tmp_path):
    """ok -> COMPLETE with values, stopped -> PRUNED, a failed training -> FAIL without values (on no Pareto
    front, never a best trial), infeasible -> COMPLETE; and records lost from trials.jsonl are rebuilt from
    the study whatever their state."""
    rd = _run(tmp_path)
    objectives = objectives_of(exp.objective)
    study = ob.open_study(rd, objectives=objectives)
    records = _records(exp)
    for rec in records:
        study.enqueue_trial(exp.space.encode(rec.architecture()))
        trial = study.ask()
        assert exp.space.suggest(trial).id == rec.id
        ob.set_attrs(study, trial, {"arch": rec.arch_str, "arch_id": rec.id, "tune_trial_id": rec.tune_trial_id})
        ob.tell_record(study, trial, rec)
    for rec, t in zip(records, study.trials):
        assert t.state == STATES[rec.status], rec.status
        assert t.user_attrs["status"] == rec.status and t.user_attrs["reason"] == rec.reason
        if t.state == TrialState.COMPLETE:
            assert t.values == rec.axis_values(objectives)
        else:
            assert t.values is None
    assert [t.number for t in study.best_trials] == [0]  # the only ok result; the infeasible one is dominated

    recovered = ob.recover_records(study, [], exp.space, rd)  # trials.jsonl lost: every trained trial is rebuilt
    assert [(r.number, r.id, r.status) for r in recovered] == [(r.number, r.id, r.status) for r in records]
    assert [r.number for r in rd.read_records()] == [r.number for r in records]


def test_a_study_rebuilt_from_trials_jsonl_keeps_the_states_and_the_list_form_of_constraints(exp, tmp_path):
    rd = _run(tmp_path)
    records = _records(exp)
    for rec in records:
        rd.append_record(rec)
    repair = ob.prepare_journal(rd, records, exp.space, objectives_of(exp.objective))
    assert repair.rebuilt == "it is missing"
    study = ob.open_study(rd, objectives=objectives_of(exp.objective))
    assert [t.state for t in study.trials] == [STATES[r.status] for r in records]
    assert all(t.system_attrs[ob.CONSTRAINTS_KEY] == [0.0, 0.0] for t in study.trials)
    assert ob.constraint_form(study) == "list"


def _ask_and_tell(searcher, n):
    for i in range(n):
        config = searcher.suggest(f"x{i}")
        if config is None or config == OptunaSearcher.FINISHED:
            return
        searcher.live.pop(f"x{i}")
        searcher.study.tell(config["number"], [0.2, 0.3])


@pytest.mark.skipif(not ob.TRIAL_CONSTRAINTS, reason="Optuna < 5 has no per-key constraints")
def test_constraints_are_stored_in_the_form_the_dashboard_reads_unless_the_run_began_with_the_other(exp, tmp_path):
    """A new study stores each trial's constraints as the list optuna-dashboard reads (and samplers); a study an
    earlier version began with Optuna 5's per-key form keeps that form, so every trial has the same names."""
    rd = _run(tmp_path)
    study = ob.open_study(rd, ob.make_sampler("random", 0, 4), objectives=objectives_of(exp.objective))
    _ask_and_tell(OptunaSearcher(study, exp.space, _cost_fn, {}, 2, run=rd), 2)
    for t in study.trials:
        assert t.system_attrs[ob.CONSTRAINTS_KEY] == t.user_attrs["constraints"] and len(t.constraints) == 2
        assert not any(k.startswith("constraints:") for k in t.system_attrs)

    old_run = _run(tmp_path, "old")
    old = ob.open_study(old_run, ob.make_sampler("random", 0, 4), objectives=objectives_of(exp.objective))
    trial = old.ask()
    trial.set_constraint("params", -0.5)  # how the searcher stored them before
    trial.set_constraint("macs", -1.0)
    old.tell(trial, [0.1, 0.1])
    assert ob.constraint_form(old) == "keys"
    _ask_and_tell(OptunaSearcher(old, exp.space, _cost_fn, {}, 2, run=old_run), 2)
    assert len(old.trials) >= 2
    for t in old.trials:
        assert ob.CONSTRAINTS_KEY not in t.system_attrs and set(t.constraints) == {"params", "macs"}


# -------------------------------------------------------------------------------------------- TensorBoard
def _history(regimes):
    rows = []
    for regime in regimes:
        for step in (2, 4):
            rows.append(
                {
                    "regime": regime,
                    "step": step,
                    "train_loss": 2.0 / step,
                    "val_loss": 3.0 / step,
                    "train_acc": 0.125 * step,
                    "val_acc": 0.0625 * step,
                    "generalization": 0.0625 * step,
                    "capacity": (0.03125 if regime == "generalization" else 0.25) * step,  # the subset's fit is not it
                    "score": 0.5,
                    "lr": 0.001,
                    "round_s": 0.1,
                }
            )
    return rows


def test_each_regime_is_its_own_group_and_ray_s_figures_are_left_out(exp):
    rec = dataclasses.replace(_records(exp, 1)[0], history=_history(["generalization", "full"]))
    got = {}
    for tag, value, step in scalars(rec):
        got.setdefault(tag, []).append((step, value))
    assert got["capacity_regime/capacity"] == [(2, 0.5), (4, 1.0)]  # only the full-split training's capacity
    assert got["generalization_regime/generalization"] == [(2, 0.125), (4, 0.25)]
    assert "generalization_regime/capacity" not in got and "capacity_regime/generalization" not in got
    assert got["capacity_regime/val_loss"] == [(2, 1.5), (4, 0.75)]
    assert got["result/generalization"] == [(4, 0.1)] and got["result/score"] == [(4, 0.3)]
    assert not any(t.split("/")[-1] in ("lr", "round_s", "score") for t in got if not t.startswith("result/"))

    single = dataclasses.replace(rec, history=_history(["full"]))  # objective.mode single: one training
    tags = {tag for tag, _, _ in scalars(single)}
    assert {"training/generalization", "training/capacity", "training/train_acc"} <= tags
    assert not any(t.startswith(("capacity_regime", "generalization_regime")) for t in tags)


def test_run_names_are_readable_valid_folder_names(exp, tmp_path):
    rec = _records(exp, 1)[0]
    assert run_name(rec) == f"t0000 {rec.arch_str}"
    odd = dataclasses.replace(rec, number=12, status="diverged", arch_str='C-T/T:T L=1 "x" ' + "D" * 300)
    name = run_name(odd)
    assert name.startswith("t0012 C-T_T_T L=1 _x_ D") and len(name) == 200
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 =,.+_-")
    assert run_name(dataclasses.replace(rec, number=7, status="diverged")).endswith(" - diverged")


def test_the_event_file_is_written_whole_and_a_trial_that_never_trained_gets_none(exp, tmp_path):
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    rec = dataclasses.replace(_records(exp, 1)[0], history=_history(["generalization", "full"]))
    folder = write_trial(tmp_path, rec)
    assert folder == tmp_path / run_name(rec)
    (path,) = folder.iterdir()
    assert "tfevents" in path.name
    data, events = path.read_bytes(), []
    while data:  # TFRecord framing, each part checked
        (n,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
        body = data[12 : 12 + n]
        assert struct.unpack("<I", data[12 + n : 16 + n])[0] == masked_crc32c(body)
        events.append(Event.FromString(body))
        data = data[16 + n :]
    assert events[0].file_version == "brain.Event:2"
    tags = [v.tag for e in events for v in e.summary.value]
    assert sorted(set(tags) - {"trial/text_summary", "trial"}) == sorted({t for t, _, _ in scalars(rec)})

    never = dataclasses.replace(_records(exp, 6)[5])  # infeasible: measured, never trained
    assert never.status == "infeasible" and write_trial(tmp_path, never) is None
