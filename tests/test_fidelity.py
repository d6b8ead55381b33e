"""nas-fidelity: rank statistics (checked against scipy), study validation, a tiny study on real Ray with
resume, a budget-limited run and a SIGTERM pause."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from nas.errors import ConfigError, UserError
from nas.fidelity import (
    StudyDir,
    agreement,
    bootstrap_ci,
    kendall_tau,
    load_study,
    plan_jobs,
    run_study,
    sample_architectures,
    spearman_rho,
    top_overlap,
    write_report,
)
from nas.fidelity.config import ZERO_COST_JOB

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("seed", range(5))
def test_tau_and_rho_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 25).astype(float)  # many ties
    y = x + rng.normal(0, 2, 25)
    y[:5] = y[0]
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0])
    assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])


def test_statistics_on_known_orders():
    up = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert kendall_tau(up, up) == 1 and kendall_tau(up, up[::-1]) == -1
    assert spearman_rho(up, [v**3 for v in up]) == pytest.approx(1.0)
    assert top_overlap(up, up, 0.2) == 1.0 and top_overlap(up, up[::-1], 0.2) == 0.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # a constant has no order
    assert kendall_tau([1, 2, float("nan"), 3], [1, 2, 5, 3]) == 1  # NaN pairs are left out


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(2, 15))
    small[1] += small[0]
    big = rng.normal(size=(2, 300))
    big[1] += big[0]
    lo_s, hi_s = bootstrap_ci(kendall_tau, *small, reps=300)
    lo_b, hi_b = bootstrap_ci(kendall_tau, *big, reps=300)
    assert lo_s <= kendall_tau(*small) <= hi_s
    assert lo_b <= kendall_tau(*big) <= hi_b
    assert hi_b - lo_b < hi_s - lo_s
    a = agreement(*big, reps=100)
    assert a["n"] == 300 and a["tau_ci"][0] <= a["tau"] <= a["tau_ci"][1]


# ------------------------------------------------------------------------------------------ study files
def _write_study(tmp_path: Path, write_space, body: str = "", *, archs: int = 4, extra_space: str = "") -> Path:
    write_space("space.yaml", extra=extra_space)
    text = (
        body
        or f"""\
study: {{space: space.yaml, architectures: {archs}, max_concurrent: 2, bootstrap: 50,
        zero_cost: [params, synflow, naswot]}}
proxies:
  p1: {{train: {{steps: 2}}}}
  p1-running-bn: {{train: {{steps: 2, bn_recalibrate: 0}}}}
reference: {{seeds: [0, 1], train: {{steps: 40}}}}
"""
    )
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "body, key",
    [
        ("study: {space: space.yaml, architectures: 1}", "study.architectures"),
        ("study: {space: space.yaml, zero_cost: [flops]}", "study.zero_cost"),
        ("study: {space: space.yaml}\nproxies: {reference: {}}", "proxies.reference"),
        ("study: {space: space.yaml}\nproxies: {p: {train: {stepz: 3}}}", "proxies.p.train"),
        ("study: {space: space.yaml}\nreference: {seeds: []}", "reference.seeds"),
        ("study: {space: space.yaml, bootstrap: 1}", "study.bootstrap"),
        ("studdy: {}", "studdy"),
    ],
)
def test_bad_study_files_name_the_key(tmp_path, write_space, body, key):
    path = _write_study(tmp_path, write_space, body)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_missing_study_file_lists_the_bundled_ones(tmp_path):
    with pytest.raises(UserError, match="fidelity-cifar.yaml"):
        load_study(tmp_path / "nope.yaml")


def test_sample_is_stratified_over_layouts_and_plan_orders_cheap_jobs_first(tmp_path, write_space):
    study = load_study(_write_study(tmp_path, write_space, archs=9))
    archs = sample_architectures(study)
    counts = Counter(a.layout_name for a in archs)
    assert len(archs) == 9 and len({a.id for a in archs}) == 9
    assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == len(study.experiment.space.layouts)
    jobs = plan_jobs(study, archs)
    kinds = [j["protocol"] for j in jobs]
    assert len(jobs) == 9 * (1 + 2 + 2)
    assert kinds.index("reference") > max(i for i, k in enumerate(kinds) if k in (ZERO_COST_JOB, "p1", "p1-running-bn"))
    refs = [j["seed"] for j in jobs if j["protocol"] == "reference"]
    assert refs == sorted(refs)  # every architecture's first seed before any second seed


# ------------------------------------------------------------------------------------------ real Ray
def test_tiny_study_end_to_end_resumes_without_retraining(tmp_path, write_space, ray_local):
    study_file = _write_study(tmp_path, write_space)
    sdir = tmp_path / "run"
    first = run_study(study_file, study_dir=sdir, max_jobs=7, out=None)
    assert first == {"done": 7, "ran": 7, "remaining": 13, "stopped": False}
    second = run_study(None, study_dir=sdir, out=None)  # resume from the directory alone
    assert second["ran"] == 13 and second["done"] == 20
    recs = StudyDir(sdir).read_records()
    assert len(recs) == 20 and len({r.key for r in recs}) == 20
    assert all(r.status == "ok" for r in recs), [r.reason for r in recs]
    assert {r.kind for r in recs} == {"train", "zero_cost"}
    assert run_study(study_file, study_dir=sdir, out=None)["ran"] == 0

    paths = write_report(sdir)
    res = json.loads(paths["json"].read_text())
    assert res["complete"] == 4
    assert set(res["proxies"]) == {"p1", "p1-running-bn"}
    assert res["noise_ceiling"]["score"]["n"] == 4
    assert set(res["zero_cost"]) == {"params", "synflow", "naswot"}
    # the cost column is the median over architectures of proxy seconds / reference seconds (each a mean
    # over its seeds), read from the records; not a timing assertion (machines are noisy)
    walls = {}
    for r in recs:
        if r.protocol in ("p1", "reference"):
            walls.setdefault((r.protocol, r.arch_id), []).append(r.metrics["wall_s"])
    both = sorted({a for p, a in walls if p == "reference"} & {a for p, a in walls if p == "p1"})
    ratios = [statistics.fmean(walls["p1", a]) / statistics.fmean(walls["reference", a]) for a in both]
    assert len(both) == 4 and all(x > 0 for x in ratios)
    assert res["cost"]["p1"]["median_ratio"] == pytest.approx(statistics.median(ratios))
    assert paths["png"].stat().st_size > 1000
    md = paths["md"].read_text()
    assert "noise ceiling" in md and "Kendall tau" in md

    # a changed protocol is refused: new jobs would not be comparable with the recorded ones
    study_file.write_text(study_file.read_text().replace("steps: 40", "steps: 41"))
    with pytest.raises(UserError, match="other settings"):
        run_study(study_file, study_dir=sdir, out=None)


def test_torn_last_line_is_repaired_and_the_job_rerun(tmp_path, write_space, ray_local):
    study_file = _write_study(tmp_path, write_space, archs=2)
    sdir = tmp_path / "run"
    run_study(study_file, study_dir=sdir, max_jobs=3, out=None)
    jobs = StudyDir(sdir).jobs
    lines = jobs.read_text().splitlines()
    jobs.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # a crash mid-write
    out = run_study(None, study_dir=sdir, out=None)
    assert out["done"] == 10
    recs = StudyDir(sdir).read_records()  # the next command accepts the file
    assert len(recs) == 10 and len({r.key for r in recs}) == 10
    assert (sdir / "jobs.jsonl.torn").read_text() == lines[2][:25] + "\n"  # the fragment is kept aside


def test_sigterm_pauses_the_study_and_resume_finishes_it(tmp_path, write_space):
    study_file = _write_study(
        tmp_path,
        write_space,
        archs=2,
        body="""\
study: {space: space.yaml, architectures: 2, max_concurrent: 1, zero_cost: []}
proxies: {p: {train: {steps: 2}}}
reference: {seeds: [0], train: {steps: 400}}
""",
    )
    sdir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(BIN / "nas-fidelity"), str(study_file), "--study-dir", str(sdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (sdir / "jobs.jsonl").is_file():
        time.sleep(0.5)
    time.sleep(1.0)  # the first reference training is running now
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out  # 128 + SIGTERM, like nas-search
    assert "stopped by SIGTERM" in out and f"nas-fidelity --resume {sdir}" in out
    assert "Traceback" not in out
    done = StudyDir(sdir).read_records()
    assert 1 <= len(done) < 4
    res = subprocess.run(
        [str(BIN / "nas-fidelity"), "--resume", str(sdir), "--max-jobs", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(StudyDir(sdir).read_records()) == len(done) + 1


def test_cli_user_errors_are_one_paragraph(tmp_path):
    for argv, needle in (
        (["--resume", str(tmp_path)], "not a study directory"),
        ([], "give a study YAML"),
        (["x.yaml", "--name", "a b"], "--name"),
        (["x.yaml", "--max-jobs", "0"], "--max-jobs"),
    ):
        res = subprocess.run([str(BIN / "nas-fidelity"), *argv], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())  # a refused start leaves nothing behind


def test_prescreen_selection_against_brute_force_random_subsets():
    import itertools
    import statistics

    from nas.fidelity.report import _selection

    ref = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.6, 0.4]
    rows = [{"ref": {"score": v}, "zc": v + (1.0 if i == 0 else 0)} for i, v in enumerate(ref)]
    sel = _selection(rows, lambda r: r["zc"], share=0.25)
    assert sel["kept"] == 2 and sel["best"] == 0.9
    assert sel["kept_mean"] == pytest.approx((0.1 + 0.9) / 2) and sel["kept_best"] == 0.9  # the proxy keeps 0.1 too
    assert sel["random_best"] == pytest.approx(statistics.fmean(max(c) for c in itertools.combinations(ref, 2)))
    assert sel["random_mean"] == pytest.approx(statistics.fmean(ref))


def test_saved_study_resumes_and_reports_after_its_search_yaml_changed(tmp_path, write_space, ray_local):
    study_file = _write_study(tmp_path, write_space, archs=2)
    sdir = tmp_path / "run"
    run_study(study_file, study_dir=sdir, max_jobs=2, out=None)
    space = tmp_path / "space.yaml"
    space.write_text(space.read_text().replace("batch_size: 32", "batch_size: 16"))  # edited after the start
    assert StudyDir(sdir).read_study().experiment.train.batch_size == 32  # the study as it was
    assert run_study(None, study_dir=sdir, max_jobs=1, out=None)["ran"] == 1
    assert write_report(sdir)["md"].is_file()
    with pytest.raises(UserError, match="other settings"):  # the changed YAML is another study
        run_study(study_file, study_dir=sdir, out=None)


def test_a_refused_study_start_leaves_no_folder(tmp_path, write_space):
    from nas.model.cost import count_cost
    from nas.search import load_experiment

    exp = load_experiment(write_space("probe.yaml"))
    costs = sorted(count_cost(a, 32, 4, 1).params for a in exp.space.enumerate())
    assert costs[0] < costs[1]  # a budget of the smallest cost admits one candidate only
    write_space("space.yaml", max_params=costs[0])
    study_file = tmp_path / "study.yaml"
    study_file.write_text("study: {space: space.yaml, architectures: 4, zero_cost: []}\n")
    with pytest.raises(UserError, match="at least 2"):
        run_study(study_file, study_dir=tmp_path / "run", out=None)
    assert not (tmp_path / "run").exists()


def test_named_architectures_train_in_the_given_order_and_bad_names_are_refused(tmp_path, write_space):
    path = _write_study(tmp_path, write_space)
    space = load_study(path).experiment.space
    picked = [a for i, a in enumerate(space.enumerate()) if i in (5, 0, 17)]
    names = [str(picked[2]), str(picked[0]), str(picked[1]).split(" ffn")[0]]  # options may be left out
    body = f"study: {{space: space.yaml, architectures: {json.dumps(names)}, zero_cost: []}}\nreference: {{seeds: [0]}}"
    study = load_study(_write_study(tmp_path, write_space, body))
    archs = sample_architectures(study)
    assert [a.id for a in archs] == [picked[2].id, picked[0].id, picked[1].id]
    assert len(plan_jobs(study, archs)) == 3 * 2  # the default proxy and the reference, one seed each
    other = str(picked[0]).replace(" D=", " D=999,", 1)
    for bad, key in (
        ([names[0], names[0]], "study.architectures[1]"),
        ([names[0], other], "study.architectures[1]"),
        ([names[0], "C-C L=x"], "study.architectures[1]"),
        ([names[0], 3], "study.architectures[1]"),
        ([names[0]], "study.architectures"),
    ):
        body = f"study: {{space: space.yaml, architectures: {json.dumps(bad)}}}"
        with pytest.raises(ConfigError) as err:
            load_study(_write_study(tmp_path, write_space, body))
        assert f"`{key}`" in str(err.value), bad


def test_a_resumed_study_refuses_an_architecture_list_other_than_the_one_it_started_with(tmp_path, write_space):
    """A study of named architectures keeps those it started with (architectures.json): a YAML whose
    `study.architectures` lists others, or an architectures.json that is not the saved list, is refused with
    one paragraph naming the folder, architectures.json and `study.architectures` and what to do; the study
    as it started resumes."""
    from nas.fidelity.studydir import prepare

    space = load_study(_write_study(tmp_path, write_space)).experiment.space
    cands = list(space.enumerate())
    names = [str(cands[i]) for i in (3, 0, 7)]

    def study_file(archs: list[str]) -> Path:
        body = f"study: {{space: space.yaml, architectures: {json.dumps(archs)}, zero_cost: []}}\n"
        body += "reference: {seeds: [0]}"
        return _write_study(tmp_path, write_space, body)

    sdir = StudyDir(tmp_path / "run")
    started = prepare(sdir, load_study(study_file(names)))[1]
    assert [a.id for a in started] == [cands[i].id for i in (3, 0, 7)]
    for edited in ([names[0], names[1], str(cands[9])], [names[1], names[0], names[2]]):  # another one; reordered
        path = study_file(edited)
        with pytest.raises(UserError) as err:
            prepare(sdir, load_study(path))
        msg = " ".join(str(err.value).split())
        assert str(sdir.path) in msg and str(sdir.archs_json) in msg and f"`study.architectures` in {path}" in msg
        assert "--study-dir" in msg and "restore the list" in msg and "\n" not in str(err.value)
    assert [a.id for a in prepare(sdir, load_study(study_file(names)))[1]] == [a.id for a in started]
    assert [a.id for a in prepare(sdir, None)[1]] == [a.id for a in started]  # --resume: as it started

    # architectures.json no longer the saved list (edited, another study's, or the strings read otherwise)
    saved = sdir.archs_json.read_text()
    other = json.loads(saved)
    other["architectures"][2] = cands[9].to_dict()
    sdir.archs_json.write_text(json.dumps(other))
    for study in (None, load_study(study_file(names))):
        with pytest.raises(UserError) as err:
            prepare(sdir, study)
        msg = " ".join(str(err.value).split())
        assert str(sdir.archs_json) in msg and "`study.architectures`" in msg and "--study-dir" in msg, msg
        assert str(cands[9]).split(" ")[1] in msg  # the one not listed is named
    res = subprocess.run(
        [str(BIN / "nas-fidelity"), "--resume", str(sdir.path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 2 and "architectures.json" in res.stderr and "Traceback" not in res.stderr
    assert not sdir.jobs.exists()  # nothing ran
    sdir.archs_json.write_text(saved)
    assert [a.id for a in prepare(sdir, None)[1]] == [a.id for a in started]
