"""The dashboards docs/dashboards.md documents, started for real on 127.0.0.1 over a run directory's files:
optuna-dashboard over a study and over a real search's journal, TensorBoard over that search's ``tune/``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest

from nas.search.optuna_bridge import open_study
from nas.search.rundir import RunDir
from trainers.objectives.registry import objectives_of, pareto_mask

OBJECTIVES = objectives_of(("generalization", "capacity"))
ROUND_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc")

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


# ------------------------------------------------------------------------------ a real search, both servers
# A grid search of 16 candidates (tests/chaos_trainer.py picks the faults by architecture): S4 width 64 is over
# the parameter budget (8 candidates told infeasible, once each); of the 8 within it, S3 = C x1 raises (error),
# C x2 returns NaN axes (diverged), T x1 runs out of memory (oom) and T x2 trains for real (ok), for each S4 depth.
DASH_SPACE = """\
space:
  input: {image_size: 32, channels: 1}
  stem: {width: 8}
  stages:
    S1: {block: [C], depth: 1, width: 8}
    S2: {block: [C], depth: 1, width: 16}
    S3: {block: [C, T], depth: [1, 2], width: 16}
    S4: {block: [T], depth: [1, 2], width: [32, 64]}
  blocks: {head_dim: 8, mbconv_expansion: 2, ffn_expansion: 2}
  budgets: {max_params: 28000, max_macs: null}
train:
  data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}
  epochs: 2
  batch_size: 32
  report_every: 2
objective: {mode: both}
search: {trials: 16, sampler: grid, max_concurrent: 2, seed: 0, trainer: "chaos_trainer:train"}
"""


@pytest.fixture(scope="module")
def search_run(ray_local, tmp_path_factory):
    """The run directory of the search above, plus one duplicate proposal told to its study (a trained
    candidate queued again, as a resumed grid or a re-queued trial does) by the real searcher."""
    from nas.model.cost import count_cost
    from nas.search import load_experiment, run
    from nas.search.searcher import OptunaSearcher

    tmp = tmp_path_factory.mktemp("dash")
    (tmp / "dash.yaml").write_text(DASH_SPACE)
    res = run(tmp / "dash.yaml", run_dir=tmp / "run", progress=False)
    rd = RunDir(res.run_dir)
    records = rd.read_records()
    exp = load_experiment(tmp / "dash.yaml")
    study = open_study(rd)
    ok = next(r for r in records if r.ok)
    study.enqueue_trial(exp.space.encode(ok.architecture()))

    def cost_fn(arch):
        return count_cost(arch, image_size=32, num_classes=4, in_chans=1)

    searcher = OptunaSearcher(study, exp.space, cost_fn, {r.id: r for r in records}, 1, run=rd, grid=True)
    assert searcher.suggest("dup") == OptunaSearcher.FINISHED and searcher.duplicates == 1
    return rd, records


def _server(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def test_optuna_dashboard_shows_infeasible_failed_and_duplicate_trials_as_such(search_run):
    """Over-budget proposals are Complete but infeasible (constraints > 0, in the form optuna-dashboard reads),
    failed trainings and duplicates are Fail: the dashboard's best trials are exactly the real results' front."""
    rd, records = search_run
    by_status = {}
    for r in records:
        by_status.setdefault(r.status, []).append(r)
    assert sorted(by_status) == ["diverged", "error", "ok", "oom"] and len(by_status["ok"]) == 2
    port = free_port()
    proc = _server(
        [str(BIN / "optuna-dashboard"), str(rd.journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    )
    try:
        base = f"http://127.0.0.1:{port}"
        sid = get_json(f"{base}/api/studies", proc=proc)["study_summaries"][0]["study_id"]
        detail = get_json(f"{base}/api/studies/{sid}")
    finally:
        _stop(proc)
    trials = {t["number"]: t for t in detail["trials"]}
    attrs = {n: {a["key"]: a["value"] for a in t["user_attrs"]} for n, t in trials.items()}
    assert len(trials) == 16 + 1  # each candidate once (8 trained, 8 told infeasible) and the duplicate

    infeasible = [n for n in trials if attrs[n].get("status") == "infeasible"]
    assert len(infeasible) == 8
    for n in infeasible:
        t = trials[n]
        assert t["state"] == "Complete" and t["values"] == [0.0, 0.0]  # the values samplers learn the budget from
        assert len(t["constraints"]) == 2 and t["constraints"][0] > 0 and t["constraints"][1] <= 0
        assert attrs[n]["reason"].startswith("over the budgets: params ")
    for r in records:
        t = trials[r.number]
        assert attrs[r.number]["status"] == r.status and attrs[r.number]["arch_id"] == r.id
        assert all(c <= 0 for c in t["constraints"]) and len(t["constraints"]) == 2
        if r.ok:
            assert t["state"] == "Complete" and t["values"] == [r.values["generalization"], r.values["capacity"]]
        else:  # a failed training is no result: no values, so on no front
            assert t["state"] == "Fail" and "values" not in t and attrs[r.number]["reason"]
    (dup,) = [n for n in trials if attrs[n].get("status") == "duplicate"]
    assert trials[dup]["state"] == "Fail" and "values" not in trials[dup]
    assert attrs[dup]["duplicate_of"] in {str(r.number) for r in by_status["ok"]}

    ok = by_status["ok"]
    front = [r.number for r, on in zip(ok, pareto_mask([r.axis_values(OBJECTIVES) for r in ok])) if on]
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(front)


def test_tensorboard_shows_one_run_per_trained_trial_named_by_architecture(search_run):
    """`tensorboard --logdir RUN/tune` over the search: one run per trial that trained, named by its number
    and architecture, with per-round loss, accuracy and each axis under its regime; no Ray bookkeeping."""
    pytest.importorskip("tensorboard")
    from nas.search.tensorboard import run_name

    rd, records = search_run
    trained = [r for r in records if r.history]
    assert [r.status for r in trained] == ["ok", "ok"]  # the chaos faults fail before a first round
    port = free_port()
    proc = _server([str(BIN / "tensorboard"), "--logdir", str(rd.tune_dir), "--host", "127.0.0.1", "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}/data"
        deadline = time.monotonic() + 60
        runs = get_json(f"{base}/runs", proc=proc)
        while len(runs) < len(trained) and time.monotonic() < deadline:  # the first scan of the folder
            time.sleep(0.5)
            runs = get_json(f"{base}/runs")
        tags = get_json(f"{base}/plugin/scalars/tags")
        name = run_name(trained[0])
        query = urllib.parse.urlencode({"run": name, "tag": "capacity_regime/capacity"})
        capacity = get_json(f"{base}/plugin/scalars/scalars?{query}")
    finally:
        _stop(proc)
    assert sorted(runs) == sorted(run_name(r) for r in trained)
    for r in trained:
        assert run_name(r).startswith(f"t{r.number:04d} {r.arch_str.split(' ')[0]} L=")
    expected = {
        *(f"{g}/{k}" for g in ("generalization_regime", "capacity_regime") for k in ROUND_KEYS),
        "generalization_regime/generalization",
        "capacity_regime/capacity",
        "result/generalization",
        "result/capacity",
        "result/score",
        "result/val_acc",
    }
    for run_tags in tags.values():
        assert set(run_tags) == expected
    # each regime its own curve, stepped by that training's optimizer steps: the capacity curve is the full-split
    # training's alone (4 rounds of 2 steps), ending at the recorded capacity
    rows = [h for h in trained[0].history if h["regime"] == "full"]
    assert [(s[1], s[2]) for s in capacity] == [(h["step"], pytest.approx(h["capacity"])) for h in rows]
    assert capacity[-1][2] == pytest.approx(trained[0].values["capacity"])
