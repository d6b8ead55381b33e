"""Verified finalists (``finalists:``; nas.search.finalists): the tie rule, the records, the YAML section,
and a search that verifies its top candidates, is stopped during the verification and resumes it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from scipy import stats

from nas.errors import ConfigError, UserError
from nas.search import RunDir, run
from nas.search.config import load_experiment
from nas.search.finalists import (
    FinalistRecord,
    protocol_key,
    summarize,
    t_interval,
    tied_with,
    welch_interval,
)
from nas.search.leaderboard import VERIFIED_COLUMNS, build_rows

sys.path.insert(0, str(Path(__file__).parent))

FINALISTS = "finalists: {top_k: 2, pareto: false, seeds: 2, train: {epochs: 2}}\n"


# ------------------------------------------------------------------------------------------------ statistics
def test_intervals_match_scipy():
    a, b = [0.61, 0.58, 0.64], [0.52, 0.55, 0.50, 0.57]
    lo, hi = t_interval(a)
    ref = stats.t.interval(0.95, len(a) - 1, loc=sum(a) / 3, scale=stats.sem(a))
    assert math.isclose(lo, ref[0]) and math.isclose(hi, ref[1])
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    w = welch_interval(a, b)
    assert math.isclose(w[0], ci.low) and math.isclose(w[1], ci.high)
    assert t_interval([0.5]) is None and welch_interval([0.5], b) is None


def test_tie_rule():
    best = [0.60, 0.62, 0.61]
    assert tied_with(best, [0.59, 0.62, 0.60]) is True  # overlapping draws: the interval holds 0
    assert tied_with(best, [0.40, 0.41, 0.42]) is False  # clearly worse
    assert tied_with(best, [0.61]) is None  # one seed: no interval, not told
    assert tied_with([0.5, 0.5], [0.5, 0.5]) is True and tied_with([0.6, 0.6], [0.5, 0.5]) is False


def _rec(arch_id: str, index: int, score: float, status: str = "ok") -> FinalistRecord:
    from nas.model.arch import Architecture

    arch = Architecture.from_dict({"layout": "C-C-C-T", "depths": [1, 1, 1, 1, 1], "widths": [8, 8, 16, 16, 32]})
    arch = {"a": arch, "b": Architecture.from_dict({**arch.to_dict(), "widths": [8, 16, 16, 16, 32]})}[arch_id]
    return FinalistRecord(
        id=arch.id,
        arch=arch.to_dict(),
        arch_str=str(arch),
        trial=0 if arch_id == "a" else 1,
        seed=1 + index,
        seed_index=index,
        protocol="p",
        status=status,
        score=score,
        wall_s=1.0,
    )


def test_summarize_orders_by_verified_mean_and_marks_ties():
    recs = [_rec("a", 0, 0.50), _rec("a", 1, 0.52), _rec("b", 0, 0.70), _rec("b", 1, 0.72)]
    out = list(summarize(recs).values())
    assert [v.trial for v in out] == [1, 0]  # b is the verified best although listed second
    assert out[0].best and out[0].tied is True and out[1].tied is False
    assert out[0].n == 2 and math.isclose(out[0].mean, 0.71)
    # a finalist whose every training failed comes last, without a mean
    failed = summarize([_rec("a", 0, 0.0, "diverged"), _rec("b", 0, 0.6)])
    assert [v.mean for v in failed.values()] == [0.6, None]
    # the first training of a seed counts, a later one is a re-run
    assert summarize([_rec("a", 0, 0.4), _rec("a", 0, 0.9)])[recs[0].id].scores == (0.4,)
    # a finalist that failed on a seed ranks after those whose every training was ok, whatever its mean
    shaky = summarize([_rec("a", 0, 0.45), _rec("a", 1, 0.0, "diverged"), _rec("b", 0, 0.42), _rec("b", 1, 0.43)])
    assert [(v.trial, v.failed) for v in shaky.values()] == [(1, 0), (0, 1)]
    assert list(shaky.values())[1].row()["verified_failed"] == 1


def test_record_round_trip_and_refusals(tmp_path):
    from nas.fsio import append_jsonl, read_jsonl

    rec = _rec("a", 1, 0.5)
    assert FinalistRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    path = tmp_path / "finalists.jsonl"
    append_jsonl(path, rec.to_json(), FinalistRecord.from_json)
    bad = {
        "a NaN": json.dumps(rec.to_json()).replace('"score": 0.5', '"score": NaN'),
        "a trial record": json.dumps({**rec.to_json(), "kind": "search"}),
        "a wrong type": json.dumps({**rec.to_json(), "seed": "1"}),
        "a missing key": json.dumps({k: v for k, v in rec.to_json().items() if k != "protocol"}),
    }
    for what, line in bad.items():
        path.write_text(line + "\n" + json.dumps(rec.to_json()) + "\n")
        with pytest.raises(UserError, match="line 1") as err:
            read_jsonl(path, FinalistRecord.from_json, what="The verification records", fix="Fix it.")
        assert str(path) in str(err.value), what
    # a line of trials.jsonl (a newer record format than finalists.jsonl's) is named as such, not as the record
    # of a newer coatnas
    path.write_text(json.dumps({**rec.to_json(), "kind": "search", "format": 2, "number": 3}) + "\n")
    with pytest.raises(UserError, match="a line of trials.jsonl") as err:
        read_jsonl(path, FinalistRecord.from_json, what="The verification records", fix="Fix it.")
    assert "newer" not in str(err.value)


# ------------------------------------------------------------------------------------------------ the YAML
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("{seeds: 0}", "finalists.seeds"),
        ("{top_k: 2, topk: 3}", "finalists.topk"),
        ("{train: {stepz: 3}}", "finalists.train.stepz"),
        ("{train: {epochs: 0}}", "finalists.train.epochs"),
        ("{objective: {mode: sometimes}}", "finalists.objective.mode"),
        ("{train: 28}", "finalists.train"),
        ("[3]", "finalists"),
    ],
)
def test_bad_finalists_section(write_space, section, key):
    path = write_space(extra=f"finalists: {section}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert f"`{key}`" in msg and str(path) in msg and "\n" not in msg


def test_finalists_section_parsed_over_train(write_space):
    exp = load_experiment(write_space(extra="finalists: {seeds: 3, train: {steps: 7, lr: 0.001}}\n"))
    f = exp.finalists
    assert (f.top_k, f.pareto, f.max, f.seeds) == (3, True, 6, 3)
    assert (f.train.steps, f.train.lr, f.train.batch_size) == (7, 0.001, exp.train.batch_size)
    assert [f.seed_of(i) for i in range(3)] == [1, 2, 3]  # never the search's own seed 0
    assert load_experiment(write_space("plain.yaml")).finalists is None
    other = load_experiment(write_space("other.yaml", extra="finalists: {seeds: 5, train: {steps: 8}}\n"))
    same_yaml = "finalists: {seeds: 1, top_k: 9, train: {steps: 7, lr: 0.001}}\n"
    same = load_experiment(write_space("same.yaml", extra=same_yaml))
    assert protocol_key(same) == protocol_key(exp) != protocol_key(other)  # only the training protocol counts


def test_a_verification_seed_that_is_the_search_s_own_draw_is_refused(write_space):
    """The verification trains at `finalists.train.seed` + 1 .. + `finalists.seeds`; where one of them is the
    seed the search's trials were trained with (`train.seed`), the verification would repeat the draw it
    verifies: refused at the start, naming the key, the clashing seeds and what to set."""

    def yaml(name: str, finalists: str) -> Path:
        path = write_space(name, extra=finalists)
        path.write_text(path.read_text().replace("  batch_size: 32\n", "  batch_size: 32\n  seed: 2\n"))
        return path

    exp = load_experiment(yaml("default.yaml", "finalists: {seeds: 3}\n"))
    assert exp.train.seed == 2 and [exp.finalists.seed_of(i) for i in range(3)] == [3, 4, 5]
    for finalists, seeds in (("{seeds: 3, train: {seed: 2}}", [3, 4, 5]), ("{seeds: 1, train: {seed: 0}}", [1])):
        f = load_experiment(yaml("fine.yaml", f"finalists: {finalists}\n")).finalists
        assert [f.seed_of(i) for i in range(f.seeds)] == seeds  # around the search's seed 2: allowed
    path = yaml("clash.yaml", "finalists: {seeds: 3, train: {seed: 0, epochs: 2}}\n")  # 1, 2, 3
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert str(path) in msg and "`finalists.train.seed`" in msg and "\n" not in msg
    assert "seeds 1, 2, 3, but 2 is the seed the search's own trials were trained with (`train.seed`)" in msg
    assert "a `finalists.train.seed` of 2 or more (seeds 3 to 5), or no `finalists.train.seed`" in msg


def test_build_rows_without_finalists_unchanged(write_space):
    from nas.search.record import TrialRecord

    rec = TrialRecord(
        id="x",
        arch={"layout": "C-C-C-T", "depths": [1, 1, 1, 1, 1], "widths": [8, 8, 16, 16, 32]},
        arch_str="x",
        number=0,
        tune_trial_id=None,
        status="ok",
        score=0.5,
        values={"generalization": 0.5, "capacity": 0.5},
    )
    assert build_rows([rec]) == build_rows([rec], finalists=None) == build_rows([rec], finalists={})
    assert not set(VERIFIED_COLUMNS) & set(build_rows([rec])[0])


# ------------------------------------------------------------------------------------------------ a search
def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_search_verifies_finalists(ray_local, write_space, tmp_path):
    from nas.export.model_config import select_record
    from nas.search.optuna_bridge import open_study
    from nas.search.report import write_report
    from nas.yamlio import load_yaml_file

    space = write_space(extra=FINALISTS)
    rd = tmp_path / "run"
    res = run(space, trials=4, run_dir=rd, progress=False)
    assert not res.interrupted and res.completed == 4
    r = RunDir(rd)
    jobs = r.read_finalists()
    assert len(jobs) == 4 and len({(j.id, j.seed_index) for j in jobs}) == 4
    assert sorted({j.seed for j in jobs}) == [1, 2]
    proxy = [row for row in build_rows(r.read_records()) if row["status"] == "ok"]
    assert {j.id for j in jobs} == {proxy[0]["id"], proxy[1]["id"]}  # the top 2 by proxy score
    rows = json.loads(r.leaderboard_json.read_text())
    assert all(set(VERIFIED_COLUMNS) <= set(row) for row in rows)
    verified = [row for row in rows if row["verified"] is not None]
    assert [row["rank"] for row in verified] == [1, 2] and verified[0]["verified"] >= verified[1]["verified"]
    means = {}
    for j in jobs:
        means.setdefault(j.id, []).append(j.score)
    best_id = max(means, key=lambda k: sum(means[k]) / 2)
    assert rows[0]["id"] == best_id and rows[0]["verified_n"] == 2 and rows[0]["tied"] is True
    assert res.best["id"] == best_id
    best_arch = load_yaml_file(r.best_yaml)["architecture"]
    widths = [int(w) for w in rows[0]["widths"].split(",")]
    assert (best_arch["layout"], best_arch["widths"]) == (rows[0]["layout"], widths)
    assert select_record(rd)[0].id == best_id  # nas-export RUN takes the verified best
    assert [row["id"] for row in json.loads(r.finalists_json.read_text())] == [v["id"] for v in verified]
    meta = r.read_meta()
    cost = meta.sessions[-1]["verification"]
    assert cost["jobs"] == cost["trainings"] == 4
    assert cost["verification_wall_s"] > 0 and cost["proxy_trial_equivalents"] > 0
    md = Path(write_report(rd)["report_md"]).read_text()
    assert "## Verified finalists" in md and "proxy-trial equivalents" in md
    attrs = open_study(r).user_attrs
    assert attrs[f"verified trial {rows[0]['trial']}"]["tied"] is True
    # A line of another run pasted into finalists.jsonl (a candidate that is not a finalist here) counts for nothing.
    from nas.fsio import append_jsonl
    from nas.search.finalists import FinalistRecord, verified_of

    other = next(t for t in r.read_records() if t.id not in means)
    fake = dataclasses.replace(jobs[0], id=other.id, arch=other.arch, arch_str=other.arch_str, trial=other.number)
    append_jsonl(r.finalists_jsonl, dataclasses.replace(fake, score=9.0).to_json(), FinalistRecord.from_json)
    assert other.id not in verified_of(r) and select_record(rd)[0].id == best_id
    lines = r.finalists_jsonl.read_text().splitlines()
    r.finalists_jsonl.write_text("\n".join(lines[:-1]) + "\n")
    # Raising the seeds trains only the new ones; the recorded trainings are kept as they are.
    more = write_space("tiny.yaml", extra=FINALISTS.replace("seeds: 2", "seeds: 3"))
    run(more, resume=True, run_dir=rd, progress=False)
    again = _lines(r.finalists_jsonl)
    assert len(again) == 6 and again[:4] == [j.to_json() for j in jobs]
    assert {j["seed_index"] for j in again[4:]} == {2}


def test_stop_during_verification_resumes_missing_jobs(ray_local, write_space, tmp_path):
    """SIGTERM while the finalists train (a trainer whose verification trainings take 3 s): the session stops
    as a pause does; the resume trains only the trainings not recorded, none twice."""
    space = write_space(extra=FINALISTS)
    space.write_text(space.read_text().replace("seed: 0}", "seed: 0, trainer: 'verify_trainer:train'}", 1))
    rd = tmp_path / "run"
    jsonl = RunDir(rd).finalists_jsonl
    sent = threading.Event()

    def stop_when_one_recorded() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not sent.is_set():
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
                os.kill(os.getpid(), signal.SIGTERM)
                sent.set()
            time.sleep(0.05)

    old = signal.signal(signal.SIGTERM, lambda *a: None)  # a late signal (after run returned) does nothing
    try:
        watcher = threading.Thread(target=stop_when_one_recorded, daemon=True)
        watcher.start()
        first = run(space, trials=4, run_dir=rd, progress=False)
        sent.set()
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert first.interrupted and first.stopped_by == signal.SIGTERM
    before = _lines(jsonl)
    assert 1 <= len(before) < 4
    meta = RunDir(rd).read_meta()
    assert meta.sessions[-1]["verification"]["stopped"] is True
    second = run(None, resume=True, run_dir=rd, progress=False)
    assert not second.interrupted
    after = _lines(jsonl)
    assert after[: len(before)] == before and len(after) == 4
    assert len({(j["id"], j["seed_index"]) for j in after}) == 4
    assert second.verification["jobs"] == 4 - len(before)


def test_a_section_that_chooses_nobody_is_refused_and_the_dry_run_shows_the_plan(write_space):
    from nas.errors import ConfigError
    from nas.search.dryrun import dry_run

    with pytest.raises(ConfigError, match="verify nothing"):
        load_experiment(write_space(extra="finalists: {top_k: 0, pareto: false}\n"))
    text = dry_run(write_space("b.yaml", extra=FINALISTS), samples=1)
    assert "verification: up to" in text and "x 2 seeds" in text
