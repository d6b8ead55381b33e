"""Faults a cluster has, on real Ray and real Optuna storage: a trial that raises, returns NaN, runs out of
memory or kills its worker; a worker node that dies mid-trial (a real 2-node cluster on this machine); two
drivers on one run directory; damaged run-directory files; the study in an RDB; a run directory on a URI,
resumed from another machine's cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nas.cli.search import main as search_cli
from nas.errors import UserError
from nas.search import RunDir, run
from nas.search.optuna_bridge import open_study
from nas.search.record import TrialRecord

sys.path.insert(0, str(Path(__file__).parent))
from chaos_trainer import fault_of  # noqa: E402

BIN = Path(sys.executable).parent

CHAOS_SPACE = """\
space:
  input: {image_size: 32, channels: 1}
  stem: {width: 8}
  stages:
    S1: {block: [C], depth: 1, width: [8, 16]}
    S2: {block: [C], depth: 1, width: 16}
    S3: {block: [C, T], depth: [1, 2], width: 16}
    S4: {block: [T], depth: 1, width: 32}
  blocks: {head_dim: 8, mbconv_expansion: 2, ffn_expansion: 2}
train:
  data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}
  epochs: 1
  batch_size: 32
objective: {mode: single}
search: {trials: 8, sampler: grid, max_concurrent: 2, max_retries: 1, trainer: "chaos_trainer:train"}
"""


def _records_match_study(rd: Path) -> list[TrialRecord]:
    records = RunDir(rd).read_records()
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids), "an architecture was recorded twice"
    study = open_study(RunDir(rd))
    by_number = {t.number: t for t in study.trials}
    for r in records:
        t = by_number[r.number]
        assert t.user_attrs["arch_id"] == r.id and t.user_attrs["status"] == r.status
        if r.ok:
            assert t.state == TrialState.COMPLETE and t.values == [r.values["generalization"], r.values["capacity"]]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    return records


def test_raise_nan_oom_and_dead_worker_are_recorded_and_the_search_goes_on(ray_local, tmp_path):
    space = tmp_path / "chaos.yaml"
    space.write_text(CHAOS_SPACE)
    res = run(space, run_dir=tmp_path / "run", progress=False)
    records = {r.architecture(): r for r in _records_match_study(res.run_dir)}
    assert len(records) == 8 and res.completed == 8
    by_fault = {fault_of(a): r for a, r in records.items() if fault_of(a)}
    assert by_fault["raise"].status == "error" and "ValueError: chaos: refusing" in by_fault["raise"].reason
    assert by_fault["nan"].status == "diverged" and "non-finite" in by_fault["nan"].reason
    assert by_fault["oom"].status == "oom" and "out of memory" in by_fault["oom"].reason
    died = by_fault["die"]
    assert died.status == "error" and "worker failed" in died.reason, died
    # The dead worker was retried (max_retries: 1): Ray Tune logged both failures of that trial.
    err = next(res.run_dir.glob(f"tune/session-0/trial-{died.number:04d}-*/error.txt")).read_text()
    assert "Failure # 2" in err
    # The healthy candidates trained and are ranked; the failed ones are not.
    healthy = [r for a, r in records.items() if not fault_of(a)]
    assert len(healthy) == 4 and all(r.ok for r in healthy)
    ranked = {row["id"] for row in res.rows if row["rank"] is not None}
    assert ranked == {r.id for r in healthy}


def _start_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster, worker


def test_worker_node_dies_mid_trial_the_trial_is_retried(write_space, tmp_path, monkeypatch):
    """A 2-node cluster (1 CPU each). Once a trial runs on the worker node, kill that node abruptly: the
    trial is retried on the head, the search completes, every trial is on the leaderboard."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("CHAOS_MARKERS", str(markers))  # inherited by the cluster's workers
    cluster, worker = _start_cluster()
    space = write_space(epochs=10)
    space.write_text(space.read_text().replace("seed: 0}", 'seed: 0, trainer: "chaos_trainer:train_marked"}'))
    rd = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [
            str(BIN / "nas-search"),
            "--space",
            str(space),
            "--run-dir",
            str(rd),
            "--trials",
            "4",
            "--address",
            cluster.address,
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not list(markers.glob(f"{worker.node_id}.*")):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        lost = next(markers.glob(f"{worker.node_id}.*")).name.split(".")[1]
        cluster.remove_node(worker, allow_graceful=False)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.shutdown()
    assert proc.returncode == 0, out
    records = _records_match_study(rd)
    assert len(records) == 4 and all(r.ok for r in records), records
    assert lost in {r.id for r in records}
    board = json.loads((rd / "leaderboard.json").read_text())
    assert sorted(r["id"] for r in board) == sorted(r.id for r in records)
    errors = {p.parent.name: p.read_text() for p in rd.glob("tune/session-0/trial-*/error.txt")}
    assert list(errors) == [next(n for n in errors if n.endswith(lost))], errors
    assert "Failure # 1" in next(iter(errors.values()))  # failed once on the dead node, then ran on the head
    assert "lost its worker" in (rd / "search.log").read_text() and "Trial task failed" not in out


def test_second_driver_on_a_run_directory_is_refused(ray_local, write_space, tmp_path, capsys):
    space = write_space(epochs=3)
    rd = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [str(BIN / "nas-search"), "--space", str(space), "--run-dir", str(rd), "--trials", "3", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = rd / "driver.lock"
        deadline = time.time() + 60
        while not (lock.is_file() and str(proc.pid) in lock.read_text()):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.1)
        rc = search_cli(["--space", str(space), "--run-dir", str(rd)])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 2 and "in use by another nas-search driver" in err and f"pid {proc.pid}" in err, err
        assert proc.wait(180) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_records_match_study(rd)) == 3  # the first driver was not disturbed


def _finished_run(space, rd, n=2, **kw):
    res = run(space, trials=n, run_dir=rd, progress=False, **kw)
    assert res.completed == n
    return res


def test_damaged_run_files_name_the_file_or_are_rebuilt(ray_local, write_space, tmp_path):
    space = write_space()
    rd = tmp_path / "run"
    _finished_run(space, rd)
    # Derived files are rebuilt from trials.jsonl.
    (rd / "leaderboard.json").write_text('[{"rank": 1, "tri')
    (rd / "leaderboard.csv").write_text("")
    res = run(None, resume=True, run_dir=rd, trials=3, progress=False)
    assert res.completed == 3 and len(json.loads((rd / "leaderboard.json").read_text())) == 3
    # State files: a clear error naming the file and what to do; nothing is changed.
    for name, damage, says in [
        ("experiment.json", '{"name": "run", "finger', "experiment.json"),
        ("space.yaml", "space: [unclosed", "space.yaml"),
        ("trials.jsonl", None, "line 1"),
    ]:
        path = rd / name
        good = path.read_bytes()
        path.write_bytes(good.replace(b"{", b"#", 1) if damage is None else damage.encode())
        before = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != "driver.lock"}
        with pytest.raises(UserError) as info:
            run(None, resume=True, run_dir=rd, trials=4, progress=False)
        msg = str(info.value)
        assert says in msg and str(rd) in msg and "\n\n" not in msg, msg
        assert {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != "driver.lock"} == before
        path.write_bytes(good)
    # The recovery the experiment.json message gives: move it aside and resume.
    (rd / "experiment.json").rename(rd / "experiment.json.bad")
    res = run(None, resume=True, run_dir=rd, trials=4, progress=False)
    assert res.completed == 4 and len(_records_match_study(rd)) == 4
    assert "rebuilt" in json.loads((rd / "experiment.json").read_text())


def test_lost_trial_records_are_recovered_from_the_study(ray_local, write_space, tmp_path):
    """trials.jsonl truncated (or deleted): the finished trials the Optuna study holds are recovered, not
    trained again."""
    space = write_space()
    rd = tmp_path / "run"
    _finished_run(space, rd, n=3)
    full = RunDir(rd).read_records()
    lines = (rd / "trials.jsonl").read_text().splitlines(keepends=True)
    (rd / "trials.jsonl").write_text(lines[0])
    res = run(None, resume=True, run_dir=rd, trials=4, progress=False)
    assert res.completed == 4
    records = _records_match_study(rd)
    ids = [r.id for r in records]
    assert {r.id for r in full} <= set(ids) and len(ids) == 4
    recovered = [r for r in records if r.extra.get("recovered_from")]
    assert len(recovered) == 2 and all(r.extra["recovered_from"] == "optuna.journal" for r in recovered)
    by_id = {r.id: r for r in full}
    for r in recovered:
        assert r.score == by_id[r.id].score and r.number == by_id[r.id].number


def test_study_in_an_rdb_and_resume(ray_local, write_space, tmp_path):
    space = write_space()
    rd = tmp_path / "run"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _finished_run(space, rd, storage=url)
    meta = json.loads((rd / "experiment.json").read_text())
    assert meta["storage"] == url and meta["study"].startswith("run-")
    assert not (rd / "optuna.journal").exists()
    res = run(None, resume=True, run_dir=rd, trials=3, progress=False)  # the URL comes from the run
    assert res.completed == 3
    records = _records_match_study(rd)
    import optuna

    study = optuna.load_study(study_name=meta["study"], storage=url)
    assert {t.number for t in study.trials if t.state == TrialState.COMPLETE} >= {r.number for r in records}
    with pytest.raises(UserError, match="its Optuna study lives in sqlite"):
        run(None, resume=True, run_dir=rd, trials=4, storage=f"sqlite:///{tmp_path / 'other.db'}", progress=False)
    with pytest.raises(UserError, match="not a database URL"):
        run(space, run_dir=tmp_path / "r2", storage="redis://localhost", progress=False)


def test_uri_run_directory_resumes_from_another_machine(ray_local, write_space, tmp_path, monkeypatch):
    space = write_space()
    remote = tmp_path / "bucket" / "runs" / "s1"
    uri = f"file://{remote}"
    monkeypatch.setenv("COATNAS_CACHE", str(tmp_path / "head-a"))
    first = _finished_run(space, uri)
    assert str(first.run_dir).startswith(str(tmp_path / "head-a"))
    assert RunDir(remote).read_records() == RunDir(first.run_dir).read_records()
    assert (remote / "optuna.journal").is_file() and (remote / "leaderboard.csv").is_file()
    assert not (remote / "driver.lock").exists()
    shutil.rmtree(tmp_path / "head-a")  # the first head node is gone
    monkeypatch.setenv("COATNAS_CACHE", str(tmp_path / "head-b"))
    second = run(None, resume=True, run_dir=uri, trials=3, progress=False)
    assert second.completed == 3 and str(second.run_dir).startswith(str(tmp_path / "head-b"))
    records = _records_match_study(remote)
    assert len(records) == 3
    assert json.loads((remote / "experiment.json").read_text())["uri"] == uri
    # Deleting the run at the URI starts it over: the local copy does not bring it back.
    shutil.rmtree(remote)
    again = run(space, run_dir=uri, trials=1, progress=False)
    assert again.completed == 1 and len(RunDir(remote).read_records()) == 1
