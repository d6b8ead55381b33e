"""Tabulated benchmarks: a study of every candidate becomes a table; a search replays on it with the real
driver (Ray, Optuna) and in-process, with the same proposals; bad tables and mismatched YAMLs are refused."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

import trainers.objectives.registry as obj
from nas.errors import ConfigError, UserError
from nas.fidelity import run_study
from nas.fidelity.table import write_table
from nas.search import run
from nas.search.config import load_experiment, protocol_of
from nas.search.replay import replay_search
from trainers.training.tabular import TABLE_FORMAT, axes, dump_table, load_table, replay

SPACE = """\
space:
  input: {image_size: 32, channels: 1}
  stem: {width: 8}
  stages:
    S1: {block: [C], depth: 1, width: 8}
    S2: {block: [C, T], depth: 1, width: 16}
    S3: {block: [C, T], depth: [1, 2], width: 16}
    S4: {block: [T], depth: 1, width: 32}
  blocks: {head_dim: 8, mbconv_expansion: 2, ffn_expansion: 2}
train:
  data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}
  epochs: 2
  batch_size: 32
objective: {mode: both, subset_fraction: 0.5}
"""
STUDY = """\
study: {space: space.yaml, architectures: all, max_concurrent: 2, bootstrap: 50, zero_cost: [params, synflow],
        reference_architectures: 3}
proxies: {default: {seeds: [0, 1]}}
reference: {seeds: [0], train: {epochs: 3}}
"""


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory, ray_local):
    """A real study of all 6 candidates (2 rounds per regime) and the table written from it."""
    d = tmp_path_factory.mktemp("table")
    (d / "space.yaml").write_text(SPACE)
    (d / "study.yaml").write_text(STUDY)
    res = run_study(d / "study.yaml", study_dir=d / "study", out=None)
    assert res["done"] == 6 + 12 + 3 and not res["stopped"]
    write_table(d / "study", d / "t.json")
    return d


def _replay_yaml(d: Path, search: str, name: str = "replay.yaml", space: str = SPACE) -> Path:
    p = d / name
    p.write_text(space + f"search: {{{search}, trainer: 'table:t.json'}}\n")
    return p


def test_table_records_every_candidate_with_its_provenance(table_dir):
    t = load_table(table_dir / "t.json")
    exp = load_experiment(table_dir / "space.yaml")
    assert json.loads((table_dir / "t.json").read_text())["format"] == TABLE_FORMAT and t.migrated_from is None
    assert {a.id for a in exp.space.enumerate()} == set(t.entries) and t.space == exp.space
    assert t.num_classes == 4 and dict(t.seeds) == {"proxy": (0,), "reference": (0,)}
    assert len(t.meta["code"]["commit"] or "") in (0, 40) and t.meta["hardware"]["cpus"] >= 1
    assert t.protocol["train.epochs"] == 2 and t.objective.subset_fraction == 0.5
    assert sum(bool(e.reference) for e in t.entries.values()) == 3
    for e in t.entries.values():
        assert e.status == "ok", e.reason
        assert (e.proxy, e.seed) == ("default", 0)
        assert [h["regime"] for h in e.history] == ["generalization"] * 2 + ["full"] * 2
        assert all(h["round_s"] > 0 for h in e.history)
        assert set(e.zero_cost) == {"params", "synflow"}


def test_a_table_of_another_seed_is_that_draw(table_dir):
    """``--seed 1`` tabulates the second draw: its entries are the seed-1 trainings and its protocol names
    seed 1, so a replay must ask for that seed; a seed the study did not train is refused."""
    write_table(table_dir / "study", table_dir / "t1.json", seed=1)
    t0, t1 = load_table(table_dir / "t.json"), load_table(table_dir / "t1.json")
    assert t1.protocol["train.seed"] == 1 and t0.protocol["train.seed"] == 0 and dict(t1.seeds)["proxy"] == (1,)
    assert {e.seed for e in t1.entries.values()} == {1} and set(t1.entries) == set(t0.entries)
    assert any(t1.entries[k].metrics != t0.entries[k].metrics for k in t0.entries)
    recs = {}
    for line in (table_dir / "study" / "jobs.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["key"]] = r
    for k, e in t1.entries.items():
        assert e.metrics["cap_train_acc"] == pytest.approx(recs[f"{k}/default/1"]["metrics"]["cap_train_acc"])
    with pytest.raises(UserError, match="--seed"):
        write_table(table_dir / "study", table_dir / "t5.json", seed=5)
    assert not (table_dir / "t5.json").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["nope", "t8.json"], "nope is not a study directory (no study.json)"),
        (["STUDY", "t9.json", "--seed", "9"], "not 9. Give one of those to --seed."),
        (["STUDY", "t9.json", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_make_table_user_errors_are_one_paragraph(table_dir, args, needle):
    """scripts/make_table.py, as a user runs it: a study folder that is none, a seed the study did not train,
    a seed that is no number: exit status 2 and one paragraph `make_table.py: error: ...`, no traceback, nothing
    written."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_table.py"
    argv = [str(table_dir / "study") if a == "STUDY" else a for a in args]
    res = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, cwd=table_dir)
    err = res.stderr.strip()
    assert res.returncode == 2, res.stderr
    assert err.startswith("make_table.py: error: ") and "Traceback" not in err and "\n\n" not in err, err
    assert needle in " ".join(err.split()) and res.stdout == ""
    assert not (table_dir / argv[1]).exists()


def test_replay_recomputes_the_objective_from_the_raw_measurements(table_dir):
    t = load_table(table_dir / "t.json")
    recs = {
        json.loads(line)["arch_id"]: json.loads(line)
        for line in (table_dir / "study" / "jobs.jsonl").read_text().splitlines()
    }
    e = next(iter(t.entries.values()))
    arch = e.arch
    seen = []
    res = replay(arch, t, t.objective, on_epoch=lambda i, m: seen.append((i, m["score"])))
    study_rec = next(
        json.loads(line)
        for line in (table_dir / "study" / "jobs.jsonl").read_text().splitlines()
        if json.loads(line)["key"] == f"{arch.id}/default/0"
    )
    assert res.score == pytest.approx(study_rec["score"]) and res.capacity == pytest.approx(study_rec["capacity"])
    assert [i for i, _ in seen] == [1, 2, 3, 4] and seen[-1][1] == pytest.approx(res.score)
    assert recs  # the study recorded its jobs
    strict = obj.ObjectiveConfig(
        mode="both", subset_fraction=0.5, gap_penalty=1.0, capacity_metric="accuracy", weight_capacity=0.0
    )
    res2 = replay(arch, t, strict)
    m = e.metrics
    want_g = max(0.0, m["gen_val_acc"] - max(0.0, m["gen_train_acc"] - m["gen_val_acc"]))
    assert res2.generalization == pytest.approx(want_g) and res2.score == pytest.approx(want_g)
    assert res2.capacity == pytest.approx(m["cap_train_acc"])
    assert axes(e, strict, 4)["score"] == pytest.approx(res2.score)


def test_replay_through_ray_equals_the_in_process_replay(table_dir, ray_local):
    """One trial at a time, the real driver (Ray Tune, journal storage) and replay_search propose the same
    candidates in the same order, and record the table's values."""
    yaml_path = _replay_yaml(table_dir, "trials: 5, sampler: tpe, startup_trials: 2, seed: 3, max_concurrent: 1")
    res = run(yaml_path, run_dir=table_dir / "run", progress=False)
    driver = [json.loads(line) for line in (table_dir / "run" / "trials.jsonl").read_text().splitlines()]
    fast = replay_search(yaml_path)
    assert [r["id"] for r in sorted(driver, key=lambda r: r["number"])] == [r["id"] for r in fast]
    t = load_table(table_dir / "t.json")
    for r in driver:
        assert r["score"] == pytest.approx(axes(t.get(r["id"]), t.objective, 4)["score"])
        assert r["metrics"]["table_train_s"] > 0
    assert len(res.rows) == 5


def test_a_replayed_search_verifies_its_finalists_by_training_them(table_dir, ray_local):
    """On a table, the search's trials are replayed but the finalists are trained for real: the table's protocol
    (here with 3 epochs) at the seeds after the table's, through Ray, and the leaderboard takes the verified best."""
    from nas.search.rundir import RunDir

    body = SPACE + (
        "search: {trials: 6, sampler: grid, max_concurrent: 2, trainer: 'table:t.json'}\n"
        "finalists: {top_k: 2, pareto: false, seeds: 2, train: {epochs: 3}}\n"
    )
    (table_dir / "verify.yaml").write_text(body)
    exp = load_experiment(table_dir / "verify.yaml")
    assert exp.finalists.trainer == "trainers.proxy:train_candidate" and exp.finalists.train.epochs == 3
    res = run(table_dir / "verify.yaml", run_dir=table_dir / "verify-run", progress=False)
    assert not res.interrupted and res.completed == 6
    r = RunDir(table_dir / "verify-run")
    jobs = r.read_finalists()
    assert len(jobs) == 4 and all(j.ok for j in jobs) and sorted({j.seed for j in jobs}) == [1, 2]
    t = load_table(table_dir / "t.json")
    table_scores = sorted(t.entries, key=lambda k: -axes(t.entries[k], t.objective, 4)["score"])
    assert {j.id for j in jobs} == set(table_scores[:2])  # the table's top 2
    assert all(j.score != pytest.approx(axes(t.entries[j.id], t.objective, 4)["score"]) for j in jobs)
    rows = json.loads(r.leaderboard_json.read_text())
    assert rows[0]["verified_n"] == 2 and res.best["id"] == rows[0]["id"]
    # the verification's cost is counted against the trainings the table recorded, not the replay's lookups
    from nas.search.finalists import cost_of, verified_of

    records = [x for x in r.read_records() if x.ok]
    cost = cost_of(r, verified_of(r), records)
    tabulated = [x.metric("table_train_s") for x in records]
    assert all(v > 0 for v in tabulated) and cost["search_wall_s"] == pytest.approx(sum(tabulated), abs=0.01)
    assert cost["proxy_trial_equivalents"] == pytest.approx(
        cost["verification_wall_s"] / (sum(tabulated) / len(tabulated)), rel=0.01
    )


def _table_on_files(d: Path, name: str) -> tuple[Path, str]:
    """The fixture's table as if the study had trained on ``a.npz`` (4 classes of 32x32 grey images): its
    recorded protocol and search YAML name that file; ``b.npz`` is other data of the same shape. Returns the
    table path and the ``train:`` section that replays it."""
    for f, n in (("a.npz", 16), ("b.npz", 24)):
        np.savez(d / f, x=np.zeros((n, 32, 32, 1), np.uint8), y=np.arange(n) % 4)
    train = "train:\n  data: {name: npz, path: a.npz}\n  epochs: 2\n  batch_size: 32\n"
    (d / "on-files.yaml").write_text(
        SPACE.split("train:")[0] + train + "objective: {mode: both, subset_fraction: 0.5}\n"
    )
    built = load_experiment(d / "on-files.yaml")
    raw = json.loads((d.parent / "t.json").read_text())  # the fixture's table, next to d
    raw["protocol"] = protocol_of(built)
    raw["search_yaml"]["train"] = {**raw["search_yaml"]["train"], "data": {"name": "npz", "path": "a.npz"}}
    (d / name).write_text(dump_table(raw))
    return d / name, train


def test_a_replayed_search_verifies_its_finalists_on_the_data_the_table_was_built_on(table_dir):
    """The finalists of a replay are trained on the YAML's `train.data`: other files than the table's are
    refused at the start (naming the YAML, the key and what the table was built on), unless
    `finalists.train.data` chooses other data explicitly."""
    d = table_dir / "on-files"
    d.mkdir()
    table, train = _table_on_files(d, "t-files.json")
    head = SPACE.split("train:")[0]
    tail = "objective: {mode: both, subset_fraction: 0.5}\nsearch: {trials: 2, trainer: 'table:t-files.json'}\n"

    def yaml(name: str, data: str, finalists: str) -> Path:
        (d / name).write_text(head + train.replace("path: a.npz", f"path: {data}") + tail + finalists)
        return d / name

    verify = "finalists: {top_k: 1, pareto: false, seeds: 1}\n"
    assert load_experiment(yaml("same.yaml", "a.npz", verify)).finalists.train.data.path == str(d / "a.npz")
    assert load_experiment(yaml("other-no-verify.yaml", "b.npz", "")).finalists is None  # replay only: no data read
    with pytest.raises(ConfigError) as err:
        load_experiment(yaml("other.yaml", "b.npz", verify))
    msg = str(err.value)
    assert str(d / "other.yaml") in msg and "`train.data`" in msg and "\n" not in msg
    built_on = load_table(table).protocol["train.data.files"]
    assert built_on.startswith("1 file, ") and f"({built_on}, from a.npz)" in msg and str(table) in msg
    assert "finalists.train.data" in msg
    chosen = "finalists: {top_k: 1, pareto: false, seeds: 1, train: {data: {path: b.npz}}}\n"
    exp = load_experiment(yaml("chosen.yaml", "a.npz", chosen))
    assert exp.finalists.train.data.path == str(d / "b.npz")  # the user's choice: allowed
    assert load_experiment(yaml("chosen-both.yaml", "b.npz", chosen)).finalists.train.data.path == str(d / "b.npz")
    # a run's own copy was accepted when it started: reading it again (export, report) does not refuse it
    from nas.search.rundir import RunDir

    (d / "run").mkdir()
    stored = (d / "other.yaml").read_text().replace("path: b.npz", f"path: {d / 'b.npz'}")
    (d / "run" / "space.yaml").write_text(stored.replace("table:t-files.json", f"table:{table}"))
    assert RunDir(d / "run").read_experiment().finalists.train.data.path == str(d / "b.npz")
    with pytest.raises(ConfigError, match="is not the data the table"):
        load_experiment(d / "run" / "space.yaml")


def test_a_replay_verifies_its_finalists_at_other_seeds_than_the_table_s(table_dir):
    """A table of the seed-1 draw replays with `train.seed: 1`; verification seeds that include 1 would repeat
    the table's own draw: refused, naming `finalists.train.seed`, the table and a seed to set instead."""
    d = table_dir / "seed1"
    d.mkdir()
    write_table(table_dir / "study", d / "t1.json", seed=1)
    head = SPACE.replace("  batch_size: 32\n", "  batch_size: 32\n  seed: 1\n")
    search = "search: {trials: 2, trainer: 'table:t1.json'}\n"
    (d / "ok.yaml").write_text(head + search + "finalists: {top_k: 1, seeds: 2}\n")
    f = load_experiment(d / "ok.yaml").finalists
    assert [f.seed_of(i) for i in range(2)] == [2, 3]
    (d / "clash.yaml").write_text(head + search + "finalists: {top_k: 1, seeds: 2, train: {seed: 0}}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(d / "clash.yaml")
    msg = str(err.value)
    assert str(d / "clash.yaml") in msg and "`finalists.train.seed`" in msg and "the table t1.json" in msg
    assert "seeds 1, 2, but 1 is the seed" in msg and "of 1 or more (seeds 2 to 3)" in msg


def test_grid_replay_covers_the_table_and_finds_its_best(table_dir):
    recs = replay_search(_replay_yaml(table_dir, "trials: 50, sampler: grid"))
    t = load_table(table_dir / "t.json")
    assert sorted(r["id"] for r in recs) == sorted(t.entries)
    assert max(r["score"] for r in recs) == pytest.approx(t.best("score"))


@pytest.mark.parametrize(
    "change, key, needle",
    [
        (("width: 32}", "width: 64}"), "space", "differs from the space of the table"),
        (("epochs: 2", "epochs: 3"), "train", "train.epochs: table 2, YAML 3"),
        (("subset_fraction: 0.5", "subset_fraction: 0.4"), "train", "objective.subset_fraction"),
    ],
)
def test_a_yaml_that_differs_from_the_table_is_refused(table_dir, change, key, needle):
    p = _replay_yaml(table_dir, "trials: 2", "bad.yaml", SPACE.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    assert f"`{key}`" in str(err.value) and needle in str(err.value)


def test_scoring_may_differ_from_the_table(table_dir):
    p = _replay_yaml(
        table_dir,
        "trials: 3, sampler: random",
        "weights.yaml",
        SPACE.replace("subset_fraction: 0.5}", "subset_fraction: 0.5, gap_penalty: 1.0, weight_capacity: 0}"),
    )
    for r in replay_search(p):
        assert r["score"] == pytest.approx(r["generalization"])


@pytest.mark.parametrize(
    "trainer, needle",
    [
        ("table:missing.json", "neither a file"),
        ("table:space.yaml", "cannot be replayed: the table"),
    ],
)
def test_missing_or_foreign_table_files_are_user_errors(table_dir, trainer, needle):
    p = table_dir / "t2.yaml"
    p.write_text(SPACE + f"search: {{trainer: '{trainer}'}}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    assert "`search.trainer`" in str(err.value) and needle in str(err.value)


def test_prescreen_with_a_table_is_refused(table_dir):
    p = table_dir / "t3.yaml"
    p.write_text(SPACE + "search: {trainer: 'table:t.json', prescreen: {proxy: snip}}\n")
    with pytest.raises(ConfigError, match="search.prescreen.proxy"):
        load_experiment(p)


@pytest.mark.parametrize(
    "yaml_name", ["bench-cifar-replay.yaml", "bench-cifar-rounds-replay.yaml", "bench-cifar-rounds-250-replay.yaml"]
)
def test_the_bundled_table_replays_with_its_bundled_yaml(tmp_path, monkeypatch, yaml_name):
    """The shipped CIFAR-10 layout benchmarks are complete and replay where the CIFAR-10 files are absent
    (their YAMLs name data/cifar10-train.npz, which a replay never reads)."""
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(yaml_name)
    t = load_table(exp.search.trainer.removeprefix("table:"))
    assert len(t.entries) == exp.space.size()
    ok = [e for e in t.entries.values() if e.ok]
    assert len(ok) >= 0.95 * len(t.entries)
    assert all(math.isfinite(axes(e, exp.objective, 10)["score"]) for e in ok)
    recs = replay_search(exp, trials=40, seed=0)
    assert len(recs) == 40 and len({r["id"] for r in recs}) == 40


@pytest.mark.parametrize("name,limit", [("bench-cifar-rounds-v1.json", 500), ("bench-cifar-rounds-250-v1.json", 250)])
def test_the_bundled_rounds_tables_hold_what_their_early_stopping_figures_assume(name, limit):
    """Two rounds per regime (7 and 14 steps); the first measured on ``limit`` images, so its recorded
    measurement costs well under the full one; the table records the protocol that says so."""
    import search_spaces

    t = load_table(Path(search_spaces.__file__).parent / "benchmarks" / name)
    assert t.protocol["train.report_every"] == 7
    assert t.protocol["train.round_eval_limit"] == limit
    light, full = [], []
    for e in t.entries.values():
        assert [(h["regime"], h["step"]) for h in e.history] == [
            ("generalization", 7),
            ("generalization", 14),
            ("full", 7),
            ("full", 14),
        ]
        light += [e.history[0]["eval_s"], e.history[2]["eval_s"]]
        full += [e.history[1]["eval_s"], e.history[3]["eval_s"]]
        assert all(0 < h["eval_s"] < h["round_s"] for h in e.history)
    assert sorted(light)[len(light) // 2] < 0.7 * sorted(full)[len(full) // 2]


@pytest.mark.parametrize(
    "name, proxy",
    [
        ("bench-cifar-v1.json", "default"),
        ("bench-cifar-rounds-v1.json", "rounds"),
        ("bench-cifar-rounds-250-v1.json", "rounds"),
    ],
)
def test_the_shipped_format_1_tables_are_migrated_on_reading_and_never_rewritten(name, proxy):
    """Format 1 (the shipped tables, as they are): each entry gets the table's one proxy seed and protocol
    name; an objective recorded before `axes` and `latency` existed gets their defaults. The file is read
    only; written again through the one writer it is format 2 and reads back the same."""
    import hashlib

    import search_spaces
    from trainers.training.tabular import dump_table, parse_table

    path = Path(search_spaces.__file__).parent / "benchmarks" / name
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    raw = json.loads(path.read_text())
    assert raw["format"] == "coatnas-table/1" and all("seed" not in e for e in raw["entries"])
    t = load_table(path)
    assert t.migrated_from == "coatnas-table/1" and t.meta["format"] == TABLE_FORMAT
    assert {(e.seed, e.proxy) for e in t.entries.values()} == {(0, proxy)}
    assert t.objective.axes == obj.DEFAULT_AXES and t.objective.latency == obj.LatencyConfig()
    assert ("axes" in raw["objective"]) == (name != "bench-cifar-v1.json")  # the oldest lacks them
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    again = parse_table(json.loads(dump_table(raw)))  # format 1 in, format 2 out
    assert again.migrated_from is None and set(again.entries) == set(t.entries)
    for i, e in t.entries.items():
        f = again.entries[i]
        assert (dict(f.metrics), f.history, f.seed, f.proxy, f.arch) == (
            dict(e.metrics),
            e.history,
            e.seed,
            e.proxy,
            e.arch,
        )


# ------------------------------------------------------------------------------------------ early stopping
class _T:
    def __init__(self, tid: str):
        self.trial_id = tid


def _res(it, g, c, last=0):
    return {"training_iteration": it, "generalization": g, "capacity": c, "score": (g + c) / 2, "last_round": last}


def test_pareto_halving_keeps_one_axis_specialists_that_score_halving_drops():
    from ray.tune.schedulers import TrialScheduler

    from nas.search.schedulers import CompletingASHA, ParetoHalving, nondominated_ranks

    assert nondominated_ranks([(1, 0), (0, 1), (0.5, 0.5), (0.4, 0.4), (0, 0)]) == [0, 0, 0, 1, 2]
    # balanced trials first, then a specialist (best on one axis, lower score), then a dominated one
    seq = [("a", 0.6, 0.6), ("b", 0.55, 0.55), ("c", 0.9, 0.1), ("e", 0.3, 0.3)]
    ph = ParetoHalving(max_t=5, grace_period=1, reduction_factor=2)
    asha = CompletingASHA(
        time_attr="training_iteration", metric="score", mode="max", max_t=5, grace_period=1, reduction_factor=2
    )
    got_p, got_a = {}, {}
    for tid, g, c in seq:
        t = _T(tid)
        asha.on_trial_add(None, t)
        got_p[tid] = ph.on_trial_result(None, t, _res(1, g, c))
        got_a[tid] = asha.on_trial_result(None, t, _res(1, g, c))
    assert got_p["c"] == TrialScheduler.CONTINUE and got_p["e"] == TrialScheduler.STOP
    assert got_a["c"] == TrialScheduler.STOP  # the score ranks the specialist below the cut
    # a trial whose training is done is never stopped, however weak
    weak = _T("z")
    asha.on_trial_add(None, weak)
    assert ph.on_trial_result(None, weak, _res(1, 0.0, 0.0, last=1)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, _res(1, 0.0, 0.0, last=1)) == TrialScheduler.CONTINUE


@pytest.mark.parametrize("kind", ["asha", "pareto"])
def test_schedulers_on_a_replay_stop_only_between_rounds(table_dir, ray_local, kind):
    p = _replay_yaml(
        table_dir,
        f"trials: 6, sampler: random, max_concurrent: 1, scheduler: {{type: {kind}, "
        "grace_period: 1, reduction_factor: 3}",
        f"{kind}.yaml",
    )
    run(p, run_dir=table_dir / f"run-{kind}", progress=False)
    recs = [json.loads(line) for line in (table_dir / f"run-{kind}" / "trials.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and {r["status"] for r in recs} <= {"ok", "stopped"}
    for r in recs:
        if r["status"] == "stopped":
            assert 1 <= r["metrics"]["epochs"] < 4  # stopped after a rung, before its last round
        else:
            assert len(r["history"]) == 4


def test_a_replay_resumes_from_another_folder(table_dir, ray_local, tmp_path, monkeypatch):
    """The replay's protocol names the table by file name and size and its data as unread, so a run resumes
    wherever it is started from (a replay YAML's data path need not exist)."""
    p = _replay_yaml(table_dir, "trials: 2, sampler: random, max_concurrent: 1", "resume.yaml")
    run(p, run_dir=table_dir / "run-resume", progress=False)
    monkeypatch.chdir(tmp_path)
    res = run(resume=True, run_dir=table_dir / "run-resume", trials=3, progress=False)
    assert len(res.rows) == 3
    proto = json.loads((table_dir / "run-resume" / "experiment.json").read_text())["protocol"]
    assert proto["train.data.files"] == "-" and proto["search.trainer"].startswith("table:t.json (1 file, ")


def test_early_stopping_compute_is_counted_from_the_rounds_a_trial_ran(load_script):
    """The benchmark scripts' accounting: a stopped trial costs the rounds it ran; the one-round protocol
    costs every round less the early measurements; the target is reached at the first finished trial
    above it, counting the compute spent up to and including that trial."""
    es, ss = load_script("bench_early_stop"), load_script("bench_stop_sampler")
    hist = [
        {"regime": "generalization", "step": 7, "round_s": 1.0, "eval_s": 0.25},
        {"regime": "generalization", "step": 14, "round_s": 2.0, "eval_s": 1.0},
        {"regime": "full", "step": 7, "round_s": 1.0, "eval_s": 0.25},
        {"regime": "full", "step": 14, "round_s": 2.0, "eval_s": 1.0},
    ]
    assert es.light_eval_s(hist) == [0.25, 0.25]

    class T:
        entries = {i: types.SimpleNamespace(history=hist) for i in "abc"}

        def get(self, i):
            return self.entries[i]

    recs = [
        {"id": "a", "status": "stopped", "metrics": {"epochs": 1}},
        {"id": "b", "status": "ok", "score": 0.20, "metrics": {}},
        {"id": "c", "status": "ok", "score": 0.30, "metrics": {}},
    ]
    r = ss._cost_to_target(recs, T(), target=0.25, one_round=False)
    assert r["reached"] and r["to_target_s"] == 1.0 + 6.0 + 6.0 and r["best"] == 0.30 and r["stopped"] == 1
    one = ss._cost_to_target(recs[1:], T(), target=0.25, one_round=True)
    assert one["to_target_s"] == 2 * 5.5 and one["spent_s"] == 11.0
    assert not ss._cost_to_target(recs[:2], T(), target=0.25, one_round=False)["reached"]
    full = [dict(r, status="ok", score=r.get("score", 0.1), generalization=0.5, capacity=0.5) for r in recs]
    c = es._compare(full, recs, T(), seed=0, wall=1.0)
    assert c["saved"] == pytest.approx(5 / 18) and c["saved_vs_one_round"] == pytest.approx(1 - 13 / 16.5)
    assert c["top5_kept"] == 2 and c["top5_lost_at"] == [1] and c["same_candidates"]


def test_the_early_stopping_lines_of_coatnet_cifar_are_a_valid_search_when_uncommented(tmp_path):
    """coatnet-cifar.yaml carries the measured early-stopping setting (docs/benchmark.md) as comments; with
    them uncommented it loads as that setting, on the table's protocol."""
    import search_spaces

    text = (Path(search_spaces.__file__).parent / "coatnet-cifar.yaml").read_text()
    for key in ("report_every: 7", "round_eval_limit: 250", "scheduler: {type: asha"):
        assert f"  # {key}" in text, key
        text = text.replace(f"  # {key}", f"  {key}")
    (tmp_path / "c.yaml").write_text(text)
    (tmp_path / "data").mkdir()  # the YAML's data file (CIFAR-10 is not part of a clean clone): 2 per class
    np.savez(tmp_path / "data" / "cifar10-train.npz", x=np.zeros((20, 32, 32, 3), np.uint8), y=np.arange(20) % 10)
    exp = load_experiment(tmp_path / "c.yaml")
    assert (exp.train.report_every, exp.train.round_eval_limit) == (7, 250)
    assert (exp.search.scheduler.type, exp.search.scheduler.reduction_factor) == ("asha", 4.0)
    rounds = load_experiment("bench-cifar-rounds-250-replay.yaml")
    assert (rounds.train.report_every, rounds.train.round_eval_limit) == (7, 250)
