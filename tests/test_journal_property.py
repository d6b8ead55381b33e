"""The Optuna journal and trials.jsonl under damage: resume either continues with every recorded trial in the
study once (no two records share a trial number, none lost, none trained again) or refuses with one paragraph,
and never leaves a file worse than it found it (what was cut is kept aside).

Hypothesis damages the files of a real small run (written by the driver's own searcher, study and records,
without Ray): each file torn at a random byte, its last newline removed, emptied, deleted, lines dropped, a
record's number made to clash with another's (as an earlier version wrote after losing its journal). The
resume start-up (the driver's own ``resolve_target`` and ``_open_session``: the readers, the journal repair
or rebuild, the study opening, recovery and reconciliation) runs in process without Ray, then three more
trials are asked and told through the searcher, and the start-up runs once more. Two end-to-end cases run
``nas.search.run`` on real Ray with a torn and an emptied journal.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from nas.errors import UserError
from nas.search import RunDir, driver, load_experiment, run
from nas.search import optuna_bridge as ob
from nas.search.progress import Printer
from nas.search.rundir import new_meta
from nas.search.searcher import OptunaSearcher
from nas.search.startup import resolve_target
from nas.search.trainable import FINAL_KEY, RESULT_KEY
from trainers.objectives.registry import objectives_of
from trainers.training.result import TrialResult

RESUME = dict(trials=None, max_concurrent=None, cpus_per_trial=None, gpus_per_trial=None, sampler=None, seed=None)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _cost_fn(exp):
    from nas.model.cost import count_cost

    sp = exp.space
    return lambda arch: count_cost(arch, image_size=sp.image_size, num_classes=4, in_chans=sp.in_chans)


def _trials(searcher: OptunaSearcher, n: int, start: int) -> None:
    """Ask and tell ``n`` trials as Ray Tune would: ok ones, a worker error and a trial stopped early."""
    for i in range(start, start + n):
        tid = f"t{i}"
        config = searcher.suggest(tid)
        if not isinstance(config, dict):
            return
        if i % 5 == 3:
            searcher.on_trial_complete(tid, error=True)
        elif i % 5 == 4:
            searcher.on_trial_complete(tid, {"score": 0.3, "generalization": 0.2, "capacity": 0.4, "epoch": 1})
        else:
            g = 0.05 * (i % 10)
            res = TrialResult(
                status="ok", generalization=g, capacity=0.5, score=(g + 0.5) / 2, metrics={"params": 1.0, "wall_s": 1.0}
            )
            searcher.on_trial_complete(tid, {FINAL_KEY: 1, RESULT_KEY: json.dumps(res.to_dict()), "score": res.score})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished run of 9 trials (ok, error, stopped; over-budget and duplicate proposals told to the study
    but never recorded), written by the driver's own pieces: RunDir, the journal study, OptunaSearcher."""
    from conftest import TINY_SPACE

    root = tmp_path_factory.mktemp("journal")
    space = root / "tiny.yaml"
    space.write_text(TINY_SPACE.replace("MAX_PARAMS", "30000").replace("SAMPLER", "random").replace("EPOCHS", "1"))
    exp = load_experiment(space)
    rd = RunDir(root / "run")
    rd.path.mkdir()
    rd.write_experiment(exp, "run")
    meta = new_meta("run", exp.space.fingerprint(), str(space))
    meta.sessions.append({"started": "2025-05-01 10:00:00", "trials": 9, "address": None})
    rd.write_meta(meta)
    objectives = objectives_of(exp.objective)
    study = ob.open_study(rd, ob.make_sampler("random", 0, 4), study_name=meta.study, objectives=objectives)
    searcher = OptunaSearcher(study, exp.space, _cost_fn(exp), {}, 9, run=rd)
    _trials(searcher, 9, 0)
    return rd.path


# ----------------------------------------------------------------------------------------- damage
def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _damage(data: bytes | None, how: tuple) -> bytes | None:
    """``data`` (a file's bytes; ``None``: no file) damaged as ``how`` says; ``None``: delete the file."""
    kind = how[0]
    if data is None or kind == "keep":
        return data
    if kind == "missing":
        return None
    if kind == "empty":
        return b""
    if kind == "truncate":
        return data[: how[1] % (len(data) + 1)]
    if kind == "no-newline":
        return data.rstrip(b"\n")
    if kind == "drop":
        lines = _lines(data)
        gone = {i % len(lines) for i in how[1]} if lines else set()
        return b"".join(l for i, l in enumerate(lines) if i not in gone)
    raise AssertionError(how)


def _clash(data: bytes | None, i: int, j: int) -> bytes | None:
    """Record ``j`` given the number of record ``i`` (two records of one trial number)."""
    if data is None:
        return None
    lines = _lines(data)
    whole = [k for k, l in enumerate(lines) if l.endswith(b"\n")]
    if len(whole) < 2:
        return data
    a, b = whole[i % len(whole)], whole[j % len(whole)]
    if a == b:
        return data
    rec = json.loads(lines[b])
    rec["number"] = json.loads(lines[a])["number"]
    lines[b] = (json.dumps(rec, sort_keys=True) + "\n").encode()
    return b"".join(lines)


DAMAGE = st.one_of(
    st.just(("keep",)),
    st.just(("missing",)),
    st.just(("empty",)),
    st.just(("no-newline",)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("drop"), st.lists(st.integers(0, 10**4), min_size=1, max_size=4)),
)
TRIALS_DAMAGE = st.one_of(
    DAMAGE,
    st.tuples(st.just("clash"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("inside"), st.integers(0, 20)),  # a damaged line that is not the last: refused
)


def _write(path: Path, data: bytes | None) -> None:
    if data is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(data)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


# ---------------------------------------------------------------------------------------- resume
def _start(rd: Path):
    """The resume start-up of ``nas-search --resume RD`` up to the first trial, without Ray."""
    target = resolve_target(None, None, rd, True, None, False, RESUME)
    study, records, _, _ = driver._open_session(target, None, None, 100, Printer(None, target.run))
    return target, study, records


def _check_consistent(rd: Path, study) -> list:
    """Every record's number is unique and its study trial is that architecture, finished; none RUNNING."""
    records = RunDir(rd).read_records()
    numbers = [r.number for r in records if r.number is not None]
    assert len(numbers) == len(set(numbers)), f"two records share a trial number: {sorted(numbers)}"
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for r in records:
        t = by_number.get(r.number)
        assert t is not None, f"record of trial {r.number} is not in the study"
        assert t.user_attrs.get("arch_id") == r.id and t.state in FINISHED, (r.number, t.state, t.user_attrs)
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return records


def _kept(before: bytes | None, now: bytes | None, torn: Path, aside: bytes | None) -> None:
    """Nothing of ``before`` is lost: a cut tail is in ``torn``, the rest is at the start of the file now
    (or of the copy kept aside when the file was replaced)."""
    if before is None:
        return
    fragment = torn.read_bytes()[:-1] if torn.is_file() else b""
    assert before.endswith(fragment), "the .torn file holds something the file did not end with"
    base = before[: len(before) - len(fragment)]
    kept = aside if aside is not None else now
    assert kept is not None and kept.startswith(base), "a file lost bytes it had"


def _aside(rd: Path, name: str) -> bytes | None:
    """The newest copy of ``name`` kept aside by a repair (``NAME.replaced-N``, ``NAME.before-renumbering-N``)."""
    kept = sorted(rd.glob(f"{name}.*-[0-9]*"), key=lambda p: p.stat().st_mtime_ns)
    return kept[-1].read_bytes() if kept else None


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(journal_damage=DAMAGE, trials_damage=TRIALS_DAMAGE)
def test_resume_after_any_damage_keeps_every_record_once_or_refuses(base_run, journal_damage, trials_damage):
    with tempfile.TemporaryDirectory() as tmp:
        rd = Path(tmp) / "run"
        shutil.copytree(base_run, rd)
        full = RunDir(rd).read_records()
        journal, trials = rd / "optuna.journal", rd / "trials.jsonl"
        _write(journal, _damage(_read(journal), journal_damage))
        kind = trials_damage[0]
        if kind == "clash":
            _write(trials, _clash(_read(trials), trials_damage[1], trials_damage[2]))
        elif kind == "inside":
            lines = _lines(trials.read_bytes())
            lines[trials_damage[1] % (len(lines) - 1)] = b'{"id": "bro\n'
            trials.write_bytes(b"".join(lines))
        else:
            _write(trials, _damage(_read(trials), trials_damage))
        before = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()}
        try:
            readable = RunDir(rd).read_records()
        except UserError:
            readable = None

        try:
            target, study, records = _start(rd)
        except UserError as err:
            msg = str(err)
            assert "\n\n" not in msg and "trials.jsonl" in msg and "line" in msg, msg
            assert readable is None, f"refused a readable run: {msg}"
            assert {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()} == before, "a refusal changed files"
            return
        assert readable is not None, "resumed although trials.jsonl could not be read"

        after = _check_consistent(rd, study)
        # No record that could be read before is lost (a clash renumbers the later record of the pair).
        now = {(r.id, r.score, r.status) for r in after}
        assert {(r.id, r.score, r.status) for r in readable} <= now
        if journal_damage == ("keep",):  # an intact journal gives back every finished trial of the run
            assert {r.id for r in full} <= {r.id for r in after}
        if trials_damage == ("keep",):
            assert [(r.id, r.number) for r in after[: len(full)]] == [(r.id, r.number) for r in full]
        _kept(before.get("trials.jsonl"), _read(trials), rd / "trials.jsonl.torn", _aside(rd, "trials.jsonl"))
        _kept(before.get("optuna.journal"), _read(journal), rd / "optuna.journal.torn", _aside(rd, "optuna.journal"))

        # Three more trials: new numbers, and no finished architecture is trained again.
        exp = target.exp
        searcher = OptunaSearcher(study, exp.space, _cost_fn(exp), records, 3, run=target.run)
        _trials(searcher, 3, 100)
        ob.reconcile(study, target.run.read_records())
        grown = _check_consistent(rd, study)
        new = grown[len(after) :]
        assert not {r.id for r in new} & {r.id for r in after}, "a finished architecture was trained again"

        # The next resume accepts the run as it is: no repair, the same records.
        _, study2, _ = _start(rd)
        assert [(r.id, r.number) for r in _check_consistent(rd, study2)] == [(r.id, r.number) for r in grown]


def test_a_journal_that_is_a_link_or_a_folder_is_refused_naming_it(base_run, tmp_path):
    rd = tmp_path / "run"
    shutil.copytree(base_run, rd)
    real = rd / "optuna.journal"
    real.rename(tmp_path / "elsewhere.journal")
    real.symlink_to(tmp_path / "elsewhere.journal")
    with pytest.raises(UserError, match=r"optuna.journal is not a regular file .* Move it aside") as info:
        _start(rd)
    assert "\n\n" not in str(info.value) and real.is_symlink()
    real.unlink()
    real.mkdir()
    with pytest.raises(UserError, match="optuna.journal is not a regular file"):
        _start(rd)


def test_records_sharing_a_number_are_renumbered_and_the_file_kept(base_run, tmp_path):
    """What an earlier version left after resuming on an emptied journal: two records of trial 0."""
    rd = tmp_path / "run"
    shutil.copytree(base_run, rd)
    (rd / "optuna.journal").write_bytes(b"")
    lines = _lines((rd / "trials.jsonl").read_bytes())
    second = json.loads(lines[1])
    second["number"] = 0
    lines[1] = (json.dumps(second, sort_keys=True) + "\n").encode()
    before = b"".join(lines)
    (rd / "trials.jsonl").write_bytes(before)
    _, study, _ = _start(rd)
    records = _check_consistent(rd, study)
    moved = next(r for r in records if r.id == second["id"])
    assert moved.number > max(r.number for r in records if r.id != second["id"])
    assert moved.extra["renumbered_from"] == 0
    assert (rd / "trials.jsonl.before-renumbering-1").read_bytes() == before
    assert (rd / "optuna.journal.replaced-1").read_bytes() == b""
    log = (rd / "search.log").read_text()
    assert "rebuilt the Optuna study from trials.jsonl: it is empty" in log and "renumbered (0 -> " in log


# ------------------------------------------------------------------------------------ end to end
def test_torn_then_emptied_journal_resume_with_unique_trial_numbers(ray_local, write_space, tmp_path):
    """issue 19: a torn journal made every resume crash; an emptied one reused trial numbers."""
    space = write_space()
    rd = tmp_path / "run"
    assert run(space, trials=2, run_dir=rd, progress=False).completed == 2
    journal = rd / "optuna.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 40])  # cut inside its last operation
    res = run(None, resume=True, run_dir=rd, trials=3, progress=False)
    assert res.completed == 3 and (rd / "optuna.journal.torn").is_file()
    journal.write_bytes(b"")  # emptied
    res = run(None, resume=True, run_dir=rd, trials=4, progress=False)
    assert res.completed == 4
    records = _check_consistent(rd, ob.open_study(RunDir(rd)))
    assert len(records) == 4 and len({r.id for r in records}) == 4
    assert sorted(row["trial"] for row in res.rows) == sorted(r.number for r in records)
    assert (rd / "optuna.journal.replaced-1").read_bytes() == b""
    assert "rebuilt the Optuna study" in (rd / "search.log").read_text()
