"""Resume: a search stopped after k of N trials (in-process, or its driver SIGKILLed) finishes with exactly N
distinct completed trials, none trained twice, and the Optuna study holding them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from nas.search import RunDir, run
from nas.search.optuna_bridge import open_study
from nas.search.record import TrialRecord

sys.path.insert(0, str(Path(__file__).parent))

BIN = Path(sys.executable).parent


def _check_complete(run_dir: Path, n: int) -> list[TrialRecord]:
    records = RunDir(run_dir).read_records()
    ids = [r.id for r in records]
    assert len(records) == n, f"{len(records)} records, wanted {n}"
    assert len(set(ids)) == n, "an architecture was trained twice"
    study = open_study(RunDir(run_dir))
    by_number = {t.number: t for t in study.trials}
    for r in records:
        t = by_number[r.number]
        assert t.state == TrialState.COMPLETE and t.values == [r.values["generalization"], r.values["capacity"]]
        assert t.user_attrs["arch_id"] == r.id
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    # Every interrupted trial's architecture was trained on resume.
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert {t.user_attrs["arch_id"] for t in interrupted} <= set(ids)
    return records


def test_resume_after_in_process_stop(ray_local, write_space, tmp_path):
    space = write_space()
    rd = tmp_path / "run"
    first = run(space, trials=6, run_dir=rd, progress=False, should_stop=lambda p: p.done >= 2)
    assert first.interrupted and 2 <= first.completed < 6
    done_first = {r.id: r.number for r in RunDir(rd).read_records()}
    second = run(None, resume=True, run_dir=rd, progress=False)
    assert second.completed == 6 and not second.interrupted
    records = _check_complete(rd, 6)
    # Trials finished before the stop kept their records (same Optuna trial), they were not re-run.
    assert {r.id: r.number for r in records[: len(done_first)]} == done_first
    # --trials on resume extends the budget.
    third = run(space, resume=True, run_dir=rd, trials=7, progress=False)
    assert third.completed == 7
    _check_complete(rd, 7)


def test_resume_after_driver_sigkill(ray_local, write_space, tmp_path):
    """SIGKILL of the driver alone: the Ray processes it started notice and exit on their own (Ray's fate
    sharing; about 3 s measured here): no trial worker, raylet or GCS is alive 30 s later. Ray's dashboard
    and runtime-env agents have been seen to linger longer on this loaded machine (docs/cluster.md), so
    they are reported, not asserted. Then the run resumes."""
    from test_reliability import _marked

    space = write_space(epochs=2)
    rd = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COATNAS_TEST_MARK": f"coatnas-test-{os.getpid()}-kill"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(BIN / "nas-search"), "--space", str(space), "--run-dir", str(rd), "--trials", "5", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    jsonl = rd / "trials.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            raise AssertionError("the search did not finish 2 trials in time")
        assert len(_marked(env["COATNAS_TEST_MARK"])) > 1  # the driver and the Ray processes it started
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30  # trial workers, raylet, GCS: asserted; Ray's agents: reported
        while time.monotonic() < deadline and any(
            "Agent" not in _cmdline(p) for p in _marked(env["COATNAS_TEST_MARK"])
        ):
            time.sleep(0.2)
        left = _marked(env["COATNAS_TEST_MARK"])
        names = {pid: _cmdline(pid) for pid in left}
        core = {pid: n for pid, n in names.items() if "Agent" not in n}
        assert not core, f"Ray processes of the killed driver still alive after 30 s: {core}"
        if names:
            print(f"Ray agents still alive 30 s after the driver's SIGKILL: {names}")
    finally:
        try:  # the local Ray the killed driver started (same process group) goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stderr.close()
    done_before = len(RunDir(rd).read_records())
    assert 2 <= done_before < 5
    res = run(None, resume=True, run_dir=rd, progress=False)
    assert res.completed == 5
    _check_complete(rd, 5)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "(gone)"


def test_ctrl_c_stops_cleanly_and_resumes(ray_local, write_space, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: exit 130, resume hint, no loss."""
    from test_reliability import _wait_gone

    space = write_space(epochs=3)
    rd = tmp_path / "run"
    mark = f"coatnas-test-{os.getpid()}-int"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["COATNAS_TEST_MARK"] = mark
    proc = subprocess.Popen(
        [str(BIN / "nas-search"), "--space", str(space), "--run-dir", str(rd), "--trials", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    jsonl = rd / "trials.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and not (jsonl.is_file() and jsonl.read_text().count("\n") >= 1):
            assert proc.poll() is None
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        left = _wait_gone(mark, 10)
        assert not left, f"Ray processes of the run alive 10 s after the driver exited: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and f"nas-search --resume {rd}" in out
    records = RunDir(rd).read_records()
    assert 1 <= len(records) < 5 and all(r.ok for r in records), records
    res = run(None, resume=True, run_dir=rd, progress=False)
    assert res.completed == 5
    _check_complete(rd, 5)
