"""scripts/bench_driver.py: a tiny real run (30 random trials with the instant trainer on local Ray) whose
figures parse and whose counts agree with the run directory and the study; its segment arithmetic; its
refusal of a bad mode. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nas.fsio import read_json

ROOT = Path(__file__).resolve().parent.parent


def test_a_tiny_random_run_reports_counts_that_agree(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_driver.py"), "--mode", "random:30", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = read_json(out, dict, what="bench_driver JSON", fix="")
    (res,) = doc["results"]
    assert res["mode"] == "random" and res["asked"] == 30 and res["completed"] == 30
    assert res["records"] == res["distinct_ids"] == 30 and res["statuses"] == ["ok"]
    assert len(res["stamps"]) == len(res["running"]) == 30  # should_stop: once per finished trial
    assert res["stamps"] == sorted(res["stamps"]) and 0 < res["stamps"][0] < res["run_s"] < res["total_s"]
    assert res["study_kinds"]["real"] == 30 and res["study_trials"] == sum(res["study_kinds"].values())
    assert res["files"]["trials.jsonl"] > 0 and res["files"]["optuna.journal"] > 0
    assert {"leaderboard.csv", "leaderboard.json"} <= set(res["files"])
    assert max(res["running"]) <= 1  # other trials running beside the one that finished, 2 at a time
    assert "search_s" in res["timings"]

    text = proc.stdout
    assert "== random: random, 30/30 trials, 2 concurrent" in text
    fifths = next(line for line in text.splitlines() if "ms per trial, per fifth:" in line)
    assert [p.split()[0] for p in fifths.split(": ", 1)[1].split(", ")] == ["1-6", "7-12", "13-18", "19-24", "25-30"]
    row = next(line for line in text.splitlines() if line.startswith("| random |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in text.splitlines() if line.startswith("| mode |"))
    assert len(cells) == len(header.strip("|").split("|")) == 14
    assert cells[3] == "30" and cells[9] == f"{res['study_trials']} / 30"
    assert float(cells[4]) > 0 and cells[7].endswith("x") and "of proposals" in cells[10]


def test_segments_and_the_target_ratio(load_script):
    b = load_script("bench_driver")
    assert b.bounds_of(2500, 500) == [500, 1000, 1500, 2000, 2500]
    assert b.bounds_of(1260, 500) == [500, 1000, 1260]  # a tail of half a segment or more is kept
    assert b.bounds_of(1200, 500) == [500, 1000]
    assert b.bounds_of(30, None) == [6, 12, 18, 24, 30]
    even = [0.01 * i for i in range(3000)]  # 10 ms between finished trials throughout
    segs = b.segments(even, 500)
    assert [(a, z) for a, z, _ in segs] == [(k * 500 + 1, k * 500 + 500) for k in range(6)]
    assert all(abs(ms - 10.0) < 1e-6 for _, _, ms in segs)
    assert abs(b.at_target(even) - 1.0) < 1e-6
    growing = [0.0]
    for i in range(1, 2500):  # the gap before trial i+1 grows linearly: 10 ms + 0.01 ms per trial
        growing.append(growing[-1] + 0.010 + 0.00001 * i)
    assert 2.5 < b.at_target(growing) < 3.5  # (10 + 22.5) / (10 + 2.5) ms
    assert b.at_target(even[:2499]) is None


def test_a_bad_mode_is_refused(load_script, capsys):
    b = load_script("bench_driver")
    assert b.main(["--mode", "annealing"]) == 2
    err = capsys.readouterr().err
    assert "--mode 'annealing'" in err and "random, nsga2, tpe, gp, local-2, local-8, cluster" in err
    assert b.main(["--set", "search.max_skips"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
