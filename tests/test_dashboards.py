"""The dashboards docs/dashboards.md documents, started for real on 127.0.0.1 over a run directory's files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from nas.search.optuna_bridge import open_study
from nas.search.rundir import RunDir

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None):
    """GET ``url`` as JSON, retrying while the server starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the server exited: {proc.communicate()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def tell(study: optuna.Study, gen: float, cap: float) -> None:
    t = study.ask({"S1.block": optuna.distributions.CategoricalDistribution(["C", "T"])})
    t.set_user_attr("score", (gen + cap) / 2)
    study.tell(t, [gen, cap])


def test_optuna_dashboard_reads_the_run_journal_live(tmp_path):
    """optuna-dashboard (the `test` extra installs it) serves the study of RUN/optuna.journal over HTTP."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    study = open_study(run)  # the run's study as nas-search creates it: RUN/optuna.journal, 2 objectives
    tell(study, 0.9, 0.6)
    tell(study, 0.7, 0.8)
    tell(study, 0.6, 0.5)  # dominated by both
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "optuna-dashboard"), str(run.journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        studies = get_json(f"{base}/api/studies", proc=proc)["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [("nas", ["maximize", "maximize"])]
        sid = studies[0]["study_id"]
        detail = get_json(f"{base}/api/studies/{sid}")
        assert [t["values"] for t in detail["trials"]] == [[0.9, 0.6], [0.7, 0.8], [0.6, 0.5]]
        assert sorted(t["number"] for t in detail["best_trials"]) == [0, 1]  # the Pareto front
        assert {"key": "score", "value": "0.75"} in detail["trials"][0]["user_attrs"]
        tell(study, 0.95, 0.9)  # a trial finishing while the dashboard runs shows up
        deadline = time.monotonic() + 30
        while len(detail["trials"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            detail = get_json(f"{base}/api/studies/{sid}")
        assert sorted(t["number"] for t in detail["best_trials"]) == [3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
