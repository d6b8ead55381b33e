"""Progress from the first second and a time budget (issue 21, item 3): the data and trial-start lines of a
real search, ETAs that count rounds (search) and kinds of job (fidelity), and ``--time-budget``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli import search as search_cli
from nas.errors import ConfigError
from nas.fidelity.runner import eta_by_kind
from nas.search import RunDir, load_experiment
from nas.search.config import format_duration, parse_duration
from nas.search.progress import Progress, eta_by_rounds


def _main(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = search_cli.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------------------- the ETA, pure


def test_search_eta_counts_rounds_not_trials():
    # 4 trials of 10 reports each, 2 finished, 2 running half through; one report a second, all trials together.
    times = [float(t) for t in range(31)]  # 30 reports so far (20 finished + 2 x 5 running), one per second
    eta = eta_by_rounds(times, running=[5, 5], finished=[10, 10], waiting=0)
    assert eta == pytest.approx(10.0)  # 2 x 5 reports left at 1 report/s; counting trials would say 30 s
    # ASHA: three trials stopped after 2 reports, one ran all 10. A waiting trial costs their mean (4); a
    # running one with 3 reports costs what the trials that went past 3 sent after it (7).
    eta = eta_by_rounds(times, running=[3], finished=[2, 2, 2, 10], waiting=2)
    assert eta == pytest.approx(2 * 4 + 7)
    # Before any trial finished, a trial's size is the hint (its rounds and the final report); the pace counts
    # from the first trial's start (the workers' start-up and data loading included).
    assert eta_by_rounds([4.0, 6.0], running=[1, 1], finished=[], waiting=2, hint=5, since=0.0) == pytest.approx(
        (2 * 5 + 4 + 4) / (2 / 6.0)
    )
    assert eta_by_rounds([4.0], running=[1], finished=[], waiting=1, hint=5) is None  # no pace yet
    assert eta_by_rounds([4.0, 6.0], running=[1], finished=[], waiting=1) is None  # no size of a trial yet


def test_progress_feeds_the_rounds_to_the_eta():
    from nas.search.record import TrialRecord

    prog = Progress(target=3, reports_hint=4)
    for t in ("a", "b"):
        assert prog.started(t, 0.0)
    assert not prog.started("a", 1.0)  # Tune restarted it: still one trial
    for i, t in enumerate(["a", "b", "a", "b", "a", "b", "a"]):
        prog.reported(t, float(i + 1))
    rec = TrialRecord.from_json(
        {
            "id": "a" * 12,
            "arch": {"layout": "C-C-C-C", "depths": [2, 1, 1, 1, 1], "widths": [8, 8, 8, 8, 8]},
            "status": "ok",
            "score": 0.5,
            "tune_trial_id": "a",
        }
    )
    prog.elapsed_s = 7.0
    prog.add(rec)  # trial a finished after its 4 reports
    assert list(prog.trial_reports) == [4] and prog.reports == {"b": 3}
    # 7 reports in 7 s; left: b's 1 report and one waiting trial of 4
    assert prog.eta_s == pytest.approx(5.0)
    prog.ended("b")  # stopped by a pause: no record, no longer running
    assert prog.running == 0


def test_fidelity_eta_is_by_kind_of_job():
    seconds = {"zero_cost": [1.0] * 30, "proxy": [10.0, 10.0]}
    left = {"zero_cost": 0, "proxy": 28, "reference": 30}
    work = {"proxy": 14 * 32.0, "reference": 375 * 32.0}
    # The untimed reference is estimated from the timed proxy through the work: 10 s x 375/14 per job.
    expect = (28 * 10.0 + 30 * 10.0 * 375 / 14) / 2
    assert eta_by_kind(seconds, left, parallel=2, work=work) == pytest.approx(expect)
    old = (30 * 1.0 + 2 * 10.0) / 2 / 32 * 58  # the mean over every job done, times the jobs left
    assert expect > 6 * old
    # Without a way to size the reference, the ETA is unknown rather than wrong.
    assert eta_by_kind(seconds, left, parallel=2) is None
    # Once a reference job is timed, its own mean counts; a running job's time so far is not left.
    seconds["reference"] = [200.0]
    assert eta_by_kind(seconds, left, parallel=2, work=work) == pytest.approx((28 * 10.0 + 30 * 200.0) / 2)
    running = [("reference", 150.0), ("proxy", 4.0)]
    assert eta_by_kind(seconds, left, 2, work, running) == pytest.approx((28 * 10.0 + 30 * 200.0 - 154.0) / 2)
    assert eta_by_kind(seconds, {"reference": 1}, parallel=4) == pytest.approx(200.0)  # one job: no parallelism


# ----------------------------------------------------------------------------------- the budget's values


@pytest.mark.parametrize(
    "text,seconds", [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("1h0m5s", 3605), (" 1.5H ", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


BAD_BUDGETS = ["2 hours", "90", "1h30", "30m2h", "0s", "800h", "-5m", "h", ""]


@pytest.mark.parametrize("value", BAD_BUDGETS)
def test_bad_time_budget_flag_is_one_paragraph(value, capsys, tmp_path, write_space):
    rc, out, err = _main(
        ["--space", str(write_space()), "--run-dir", str(tmp_path / "r"), f"--time-budget={value}"], capsys
    )
    assert rc == 2 and "Traceback" not in err and "\n\n" not in err.strip()
    msg = " ".join(err.split())
    assert msg.startswith("nas-search: error: `--time-budget`:")
    assert "90s, 45m, 2h, 1h30m" in msg and "from 1s to 720h" in msg
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["3600", "2 hours", "0s"])
def test_bad_time_budget_key_names_the_file(value, write_space):
    path = write_space(extra="")
    path.write_text(path.read_text().replace("seed: 0}", f"seed: 0, time_budget: {value}}}"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert str(path) in msg and "search.time_budget" in msg and "90s, 45m, 2h, 1h30m" in msg
    assert ("needs a unit" in msg) == (value == "3600")


def test_time_budget_key_is_read(write_space):
    path = write_space()
    path.write_text(path.read_text().replace("seed: 0}", "seed: 0, time_budget: 1h30m}"))
    assert load_experiment(path).search.time_budget == "1h30m"


# ---------------------------------------------------------------------------------------- real searches


def test_data_and_trial_start_lines(ray_local, write_space, tmp_path, capsys):
    """A file-backed source is loaded into Ray's object store with a line before and after; every trial's
    start has its line; --quiet prints none of them (search.log has them all)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    x = (rng.random((120, 16, 16)) * 60 + y[:, None, None] * 45).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    space = write_space()
    space.write_text(
        space.read_text().replace(
            "data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}",
            f"data: {{name: npz, path: {tmp_path / 'd.npz'}, val_fraction: 0.25}}",
        )
    )
    run_dir = tmp_path / "run"
    rc, out, _ = _main(["--space", str(space), "--run-dir", str(run_dir), "--trials", "2"], capsys)
    assert rc == 0, out
    lines = out.splitlines()
    loading = next(i for i, line in enumerate(lines) if line.startswith("nas-search: loading data: npz"))
    assert "120 images" in lines[loading] and "25% for validation" in lines[loading]
    assert lines[loading + 1].startswith("nas-search: data loaded in ")
    starts = [line for line in lines if " started | running " in line]
    numbers = sorted(r.number for r in RunDir(run_dir).read_records())
    assert len(starts) == 2 and sorted(int(s.split()[1]) for s in starts) == numbers
    assert all(s.startswith(" " * len("[  2/2]") + " trial ") for s in starts)
    first_done = next(i for i, line in enumerate(lines) if line.startswith("[  1/2]"))
    assert loading < lines.index(starts[0]) < first_done  # the start comes before the first result

    rc, out, _ = _main(["--resume", str(run_dir), "--trials", "3", "--quiet"], capsys)
    assert rc == 0
    assert "loading data" not in out and " started | " not in out and "rank" in out
    log = (run_dir / "search.log").read_text()
    assert log.count("nas-search: loading data: npz") == 2 and log.count(" started | running ") == 3


def test_time_budget_stops_cleanly_and_the_run_resumes(ray_local, write_space, tmp_path, capsys):
    """A budget of one second is spent before four trials can finish: the search stops like a pause, says how
    to resume, exits 0; the resumed session (no budget: the flag is not kept) completes the run."""
    space = write_space(epochs=2)
    run_dir = tmp_path / "run"
    rc, out, _ = _main(["--space", str(space), "--run-dir", str(run_dir), "--time-budget", "1s"], capsys)
    assert rc == 0, out
    assert "time budget 1s)" in out
    assert "nas-search: time budget 1s spent: stopping" in out
    assert "the time budget (1s) is spent: stopped with " in out and f"`nas-search --resume {run_dir}`" in out
    session = json.loads((run_dir / "experiment.json").read_text())["sessions"][-1]
    assert session["stopped_by"] == "time_budget" and session["time_budget_s"] == 1.0 and session["interrupted"]
    done = len(RunDir(run_dir).read_records())
    assert done < 4
    assert "time_budget: null" in (run_dir / "space.yaml").read_text()  # the flag is this session's only

    rc, out, _ = _main(["--resume", str(run_dir)], capsys)
    assert rc == 0 and "time budget" not in out
    records = RunDir(run_dir).read_records()
    assert len(records) == 4 and len({r.id for r in records}) == 4 and all(r.ok for r in records)
    session = json.loads((run_dir / "experiment.json").read_text())["sessions"][-1]
    assert not session["interrupted"] and "time_budget_s" not in session
