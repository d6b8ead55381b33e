"""Units of the search without Ray: the search section, the run directory records and the leaderboard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nas.errors import ConfigError, UserError
from nas.search import RunDir, SearchConfig, load_experiment
from nas.search.leaderboard import build_rows, format_table
from nas.search.record import TrialRecord
from nas.space.reading import bundled_spaces
from trainers.objectives.registry import pareto_mask
from trainers.training.tabular import is_table


def _rec(arch, number, g, c, status="ok"):
    return TrialRecord.from_json(_rec_json(arch, number, g, c, status))


def _rec_json(arch, number, g, c, status="ok"):
    return {
        "id": arch.id,
        "arch": arch.to_dict(),
        "arch_str": str(arch),
        "number": number,
        "status": status,
        "reason": "" if status == "ok" else "boom",
        "generalization": g,
        "capacity": c,
        "score": (g + c) / 2,
        "metrics": {"params": 1000.0 + number, "macs": 5000.0},
        "history": [],
    }


def test_search_section_defaults_and_validation(write_space):
    exp = load_experiment(write_space())
    assert exp.search.trials == 4 and exp.search.sampler == "random" and exp.search.max_concurrent == 2
    assert SearchConfig().sampler == "tpe" and SearchConfig().scheduler.type == "none"
    over = exp.with_search(trials=9, sampler="nsga2", cpus_per_trial=None)
    assert (over.search.trials, over.search.sampler, over.search.cpus_per_trial) == (9, "nsga2", 1.0)
    with pytest.raises(ConfigError, match=r"search.gpus_per_trial.*-1"):
        exp.with_search(gpus_per_trial=-1)


@pytest.mark.parametrize(
    "snippet,key",
    [
        ("search: {trials: 4, sampler: bayes}", "search.sampler"),
        ("search: {trials: 4, cpus_per_trial: 0}", "search.cpus_per_trial"),
        ("search: {trials: 4, schedulr: {}}", "search.schedulr"),
        ("search: {trials: 4, scheduler: {type: asha, reduction_factor: 1}}", "search.scheduler.reduction_factor"),
        ("search: {trials: 4, scheduler: {type: hyperband}}", "search.scheduler.type"),
    ],
)
def test_bad_search_values_name_the_key(snippet, key, write_space):
    path = write_space()
    text = path.read_text()
    path.write_text(text[: text.index("search:")] + snippet + "\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert f"`{key}`" in str(info.value) and str(path) in str(info.value)


def test_every_sampler_name_has_a_factory_and_an_unknown_one_is_refused():
    import optuna

    from nas.search.config import SAMPLERS
    from nas.search.optuna_bridge import make_sampler

    for name in SAMPLERS:
        assert isinstance(make_sampler(name, 0, 4), optuna.samplers.BaseSampler)
    with pytest.raises(UserError, match="known: tpe, nsga2, gp"):
        make_sampler("bayes", 0, 4)


def test_every_scheduler_name_makes_its_scheduler():
    from ray.tune.schedulers import ASHAScheduler

    from nas.search.config import SCHEDULERS, SchedulerConfig
    from nas.search.schedulers import LiveFIFO, ParetoHalving, make_scheduler

    made = {name: make_scheduler(SchedulerConfig(type=name), max_t=5) for name in SCHEDULERS}
    assert isinstance(made["none"], LiveFIFO) and isinstance(made["asha"], ASHAScheduler)
    assert isinstance(made["pareto"], ParetoHalving) and made["pareto"].rungs == [1, 3]


@pytest.mark.parametrize(
    "registry", ["nas.search.config:SAMPLERS", "nas.search.config:SCHEDULERS", "trainers.objectives.registry:ZERO_COST"]
)
def test_each_registry_name_resolves_to_a_callable(registry):
    """Each name is declared once, with its implementation: every ``module:function`` of the registry imports."""
    from nas.registry import load

    reg = load(registry)
    assert len(reg) >= 3 and all(callable(reg[name]) for name in reg)
    assert "nope" not in reg and ["a list"] not in reg
    with pytest.raises(KeyError):
        reg["nope"]


def test_the_config_layer_knows_the_names_without_optuna_ray_or_torch():
    """The names a YAML may use are read from the registries without importing their implementations."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nas.search.config import SAMPLERS, SCHEDULERS, SearchConfig\n"
        "from trainers.objectives.registry import ZERO_COST\n"
        "assert 'tpe' in SAMPLERS and 'pareto' in SCHEDULERS and 'snip' in ZERO_COST\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'ray', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_name_missing_from_a_registry_is_refused_with_the_registry_s_names(write_space):
    from nas.search.config import SAMPLERS, SCHEDULERS

    path = write_space()
    text = path.read_text()
    for snippet, key, names in (
        ("search: {sampler: bayes}", "search.sampler", SAMPLERS),
        ("search: {scheduler: {type: hyperband}}", "search.scheduler.type", SCHEDULERS),
        ("search: {prescreen: {proxy: zen}}", "search.prescreen.proxy", None),
    ):
        path.write_text(text[: text.index("search:")] + snippet + "\n")
        with pytest.raises(ConfigError) as info:
            load_experiment(path)
        msg = str(info.value)
        assert f"`{key}`" in msg and "\n" not in msg
        for name in names or ("params", "synflow", "jacov"):
            assert repr(name) in msg or name in msg


def test_budget_below_smallest_candidate_is_refused(write_space):
    with pytest.raises(ConfigError, match="space.budgets.max_params"):
        load_experiment(write_space(max_params=1000))


@pytest.mark.parametrize("name", bundled_spaces())
def test_shipped_spaces_have_valid_search_sections(name, tmp_path, monkeypatch):
    from nas.space.reading import load_yaml

    _, data = load_yaml(name)
    path = (data["train"].get("data") or {}).get("path")
    replayed = is_table((data.get("search") or {}).get("trainer"))  # reads no data
    if path is not None and not Path(path).exists() and not replayed:  # data not on this machine (CIFAR-10)
        with pytest.raises(UserError, match="train.data.path"):
            load_experiment(name)
        fake = tmp_path / Path(path).name
        np.savez(fake, x=np.zeros((20, 32, 32, 3), np.uint8), y=np.arange(20) % 10)
        monkeypatch.chdir(tmp_path)
        (tmp_path / Path(path).parent).mkdir(parents=True, exist_ok=True)
        fake.rename(tmp_path / path)
    exp = load_experiment(name)
    assert exp.raw.get("search"), f"{name} has no search: section"
    if name == "coatnet-paper.yaml":
        assert exp.search.sampler == "grid" and exp.space.size() == 5


def test_records_survive_a_torn_last_line_but_not_damage_inside(write_space, tmp_path):
    exp = load_experiment(write_space())
    archs = list(exp.space.enumerate(3))
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.append_record(_rec(archs[0], 0, 0.5, 0.5))
    with open(rd.trials_jsonl, "a") as fh:
        fh.write('{"id": "torn')  # a driver killed mid-write
    assert [r.number for r in rd.read_records()] == [0]
    rd.append_record(_rec(archs[1], 1, 0.4, 0.6))  # the torn fragment is cut off first (issue 10)
    assert [r.number for r in rd.read_records()] == [0, 1]
    assert rd.trials_jsonl.read_text().count("\n") == 2 and "torn" not in rd.trials_jsonl.read_text()
    assert (rd.path / "trials.jsonl.torn").read_text() == '{"id": "torn\n'
    # Damage inside the file (not its last line) is an error naming the line.
    lines = rd.trials_jsonl.read_text().splitlines()
    rd.trials_jsonl.write_text("\n".join([lines[0], '{"id": "bro', lines[1]]) + "\n")
    with pytest.raises(UserError, match="line 2"):
        rd.read_records()


def test_leaderboard_ranks_pareto_and_failures(write_space):
    exp = load_experiment(write_space())
    archs = list(exp.space.enumerate(6))
    pts = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.95), (0.5, 0.5)]
    recs = [_rec(a, i, g, c) for i, (a, (g, c)) in enumerate(zip(archs, pts))]
    recs.append(_rec(archs[5], 5, 0.0, 0.0, status="diverged"))
    recs.append(dataclasses.replace(recs[1], number=9))  # the same architecture again: the first record counts
    rows = build_rows(recs)
    assert len(rows) == 6
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["rank"] for r in ok] == [1, 2, 3, 4, 5] and rows[-1]["rank"] is None
    assert rows[-1]["status"] == "diverged"
    assert [r["score"] for r in ok] == sorted((r["score"] for r in ok), reverse=True)
    by_trial = {r["trial"]: r for r in rows}
    expect = pareto_mask(pts)
    assert [by_trial[i]["pareto"] for i in range(5)] == expect == [True, True, False, True, True]
    assert 9 not in by_trial
    table = format_table(rows)
    assert len(table.splitlines()) == 8 and "diverged (boom)" in table


def test_relative_data_path_resolves_next_to_the_yaml(write_space, tmp_path, monkeypatch):
    """Workers run in other folders: the driver makes the data path absolute (found next to the YAML)."""
    import numpy as np

    from nas.search.config import load_experiment

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 4)
    path = write_space()
    path.write_text(path.read_text().replace("{name: synthetic,", "{name: npz, path: tiny.npz,"))
    monkeypatch.chdir(tmp_path.parent)  # tiny.npz is not in the working directory
    exp = load_experiment(path)
    assert exp.train.data.path == str(tmp_path / "tiny.npz") and exp.num_classes == 4


def test_where_the_data_comes_from_is_not_part_of_the_protocol(write_space):
    """A mirror URL, an MD5 or the download flag say where files come from, not what they are (their count
    and size are in the protocol): changing them must not refuse a resume."""
    import dataclasses

    from nas.search.config import protocol_of

    exp = load_experiment(write_space())
    data = dataclasses.replace(exp.train.data, url="http://127.0.0.1:1/c.tar.gz", md5="0" * 32, download=True)
    moved = dataclasses.replace(exp, train=dataclasses.replace(exp.train, data=data))
    assert protocol_of(moved) == protocol_of(exp)
    other = dataclasses.replace(exp, train=dataclasses.replace(exp.train, lr=exp.train.lr * 2))
    assert protocol_of(other) != protocol_of(exp)


def test_the_recorded_trainer_name_still_resolves():
    """Every recorded protocol and shipped table holds `trainers.proxy:train_candidate` (the module moved to
    trainers.training.proxy): that name must keep resolving, or no recorded run or table could resume."""
    import json

    from nas.search.trainable import DEFAULT_TRAINER, load_trainer
    from trainers.training.proxy import train_candidate

    assert DEFAULT_TRAINER == "trainers.proxy:train_candidate"
    assert load_trainer(DEFAULT_TRAINER) is train_candidate
    assert load_trainer("trainers.training.proxy:train_candidate") is train_candidate
    tables = sorted((Path(__file__).parents[1] / "search_spaces" / "benchmarks").glob("*.json"))
    assert tables and all(DEFAULT_TRAINER in json.loads(t.read_text())["protocol"].values() for t in tables)
    with pytest.raises(LookupError, match="no function"):
        load_trainer("trainers.training.proxy:no_such_trainer")


def test_eta_follows_the_pace_of_the_recent_trials():
    from nas.search.progress import ETA_WINDOW, Progress
    from nas.search.record import TrialRecord

    rec = TrialRecord.from_json(
        {
            "id": "a" * 12,
            "arch": {"layout": "C-C-C-C", "depths": [2, 1, 1, 1, 1], "widths": [8, 8, 8, 8, 8]},
            "status": "ok",
            "score": 0.5,
        }
    )
    prog = Progress(target=200)
    t = 0.0
    for i in range(100):  # the first 80 trials take 1 s each, the last 20 take 10 s each
        t += 1.0 if i < 80 else 10.0
        prog.elapsed_s = t
        prog.add(rec)
    assert prog.eta_s == pytest.approx(10.0 * 100)  # 100 left at the recent pace, not the average (2.8 s)
    assert len(prog.finished_at) == ETA_WINDOW


def test_token_grids_in_leaderboard_and_dry_run(tmp_path, write_space):
    """Each stage's token grid is shown, so a T at a 2x2 or 1x1 map does not pass for attention over an image."""
    from nas import Architecture
    from nas.search.dryrun import dry_run

    strided = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,64,64")
    flat = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,64,64 stem_stride=1")
    rows = build_rows([_rec(strided, 0, 0.5, 0.5), _rec(flat, 1, 0.6, 0.6)], image_size=32)
    grids = {r["trial"]: r["grid"] for r in rows}
    assert grids == {0: "8/4/2/1", 1: "16/8/4/2"}
    assert "grid S1..S4" in format_table(rows) and "16/8/4/2" in format_table(rows)
    assert build_rows([_rec(strided, 0, 0.5, 0.5)])[0]["grid"] == ""  # no input size, no grid
    text = dry_run(write_space(), samples=2)  # 32 px, stem stride 2 (needs no data, unlike the CIFAR space)
    assert "grid 8/4/2/1" in text and "S3 2x2, S4 1x1" in text and "4 token(s) at S3" in text
    s3 = write_space("s3.yaml").read_text().replace("S3: {", "S3: {stride: 1, ", 1)
    (tmp_path / "s3.yaml").write_text(s3)
    text = dry_run(tmp_path / "s3.yaml", samples=2)
    assert "stage strides 2,2,1,2" in text and "S3 4x4, S4 2x2" in text and "grid 8/4/4/2" in text
    assert "at S3" not in text and "1 token(s) at S4" not in text
