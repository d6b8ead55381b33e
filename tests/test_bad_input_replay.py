"""Table replay as a hostile user drives it: a search YAML whose ``search.trainer: table:PATH`` names a missing,
damaged, truncated, NaN, wrong-type, foreign, other-space or other-protocol table, and replay YAMLs with bad
keys. Each is refused with one paragraph naming the YAML, the key and (where there is one) the table file,
with no traceback: in process through ``nas.search.load_experiment`` (the check every command runs first),
``nas.cli.search.main([... --dry-run])``, ``replay_search`` and the worker's reader; one row resumes a real
run (Ray) over a damaged table.

The tables are built here, small (6 candidates), through the real writer (``dump_table``) and protocol
(``protocol_of``), then damaged as bytes or as decoded JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import yaml
from test_table import SPACE  # the same tiny space the table tests tabulate

from nas.errors import ConfigError, UserError
from nas.model.arch import Architecture
from nas.search import load_experiment
from nas.search.config import protocol_of
from nas.search.table import read_table
from trainers.training.tabular import TABLE_FORMAT, dump_table, load_table

SEARCH = "search: {trials: 3, sampler: random, seed: 0, trainer: 'table:t.json'}\n"


SHORT = SPACE.replace("S2: {block: [C, T]", "S2: {block: [C]").replace("depth: [1, 2]", "depth: 1")


def _table(folder: Path, space: str = SPACE) -> dict:
    """A complete format-2 table of the candidates of ``space`` (SPACE: 6; SHORT: 2), with made-up
    measurements and the real protocol."""
    (folder / "base.yaml").write_text(space)
    exp = load_experiment(folder / "base.yaml")
    entries = []
    for i, a in enumerate(exp.space.enumerate()):
        g, c = 0.3 + 0.05 * i, 0.4 + 0.05 * i
        rows = [
            {"regime": regime, "epoch": k, "epoch_total": k + (2 if regime == "full" else 0), "step": 5 * k,
             "round_s": 0.5, "train_acc": acc, "train_loss": 1.2, "val_acc": acc - 0.05, "val_loss": 1.3}
            for regime, acc in (("generalization", g), ("full", c))
            for k in (1, 2)
        ]  # fmt: skip
        entries.append(
            {
                "id": a.id,
                "arch": a.to_dict(),
                "arch_str": str(a),
                "layout": a.layout_name,
                "status": "ok",
                "reason": "",
                "metrics": {
                    "params": 1000.0 + i,
                    "macs": 5000.0,
                    "gen_val_acc": g,
                    "gen_train_acc": g + 0.05,
                    "cap_train_acc": c,
                    "cap_train_loss": 1.2,
                    "wall_s": 2.0,
                },
                "history": rows,
                "seed": 0,
                "proxy": "default",
                "zero_cost": {"params": 1000.0 + i, "synflow": math.inf},
            }
        )
    proto = protocol_of(exp)
    return {
        "format": TABLE_FORMAT,
        "name": "tiny",
        "version": 1,
        "created": "2026-12-01T00:00:00+00:00",
        "study": {"dir": "tiny", "fingerprint": "0123456789abcdef", "proxy": "default"},
        "code": {"commit": None, "dirty": None},
        "hardware": {"cpu": "test", "cpus": 2, "cuda": None},
        "search_yaml": yaml.safe_load(space),
        "num_classes": 4,
        "seeds": {"proxy": [0], "reference": []},
        "protocol": proto,
        "objective": json.loads(json.dumps(dataclasses.asdict(exp.objective))),
        "reference_protocol": proto,
        "entries": entries,
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(folder, the table as a dict, its text as the writer writes it)."""
    d = tmp_path_factory.mktemp("good")
    data = _table(d)
    return d, data, dump_table(data)


@pytest.fixture
def case(tmp_path, good):
    """``case(table_bytes_or_dict, search=SEARCH, space=SPACE) -> (yaml path, table path)`` in a fresh folder."""

    def make(table: bytes | str | dict | None = None, search: str = SEARCH, space: str = SPACE):
        t = tmp_path / "t.json"
        if table is None:
            table = good[2]
        if isinstance(table, dict):
            table = json.dumps(table)  # NaN and Infinity written as Python's json writes them
        if isinstance(table, str):
            table = table.encode()
        t.write_bytes(table)
        y = tmp_path / "replay.yaml"
        y.write_text(space + search)
        return y, t

    return make


def _refused(yaml_path: Path, table: Path | None = None, key: str = "search.trainer") -> str:
    """The one paragraph ``load_experiment`` refuses ``yaml_path`` with (naming the YAML, the key and the table)."""
    with pytest.raises(UserError) as info:
        load_experiment(yaml_path)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert str(yaml_path) in msg and f"`{key}`" in msg, msg
    if table is not None:
        assert str(table) in msg, msg
    return msg


def _mutated(good, change) -> dict:
    data = copy.deepcopy(good[1])
    change(data)
    return data


# ------------------------------------------------------------------------------------------ controls
def test_the_good_table_replays_and_a_symlink_to_it_is_followed(case, good, tmp_path):
    from nas.search.replay import replay_search

    y, t = case()
    exp = load_experiment(y)
    assert exp.num_classes == 4 and exp.search.trainer == f"table:{t}"
    recs = replay_search(exp)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs)
    link = tmp_path / "link.json"
    link.symlink_to(t)
    y.write_text(SPACE + SEARCH.replace("t.json", "link.json"))
    assert load_experiment(y).num_classes == 4


def test_a_format_1_table_is_migrated(case, good):
    v1 = copy.deepcopy(good[1])
    v1["format"] = "coatnas-table/1"
    for e in v1["entries"]:
        del e["seed"], e["proxy"]
    for key in ("axes", "latency"):  # recorded before these existed
        del v1["objective"][key]
    y, t = case(v1)
    assert load_experiment(y).num_classes == 4
    table = load_table(t)
    assert table.migrated_from == "coatnas-table/1" and table.objective.axes == ("generalization", "capacity")
    assert {(e.seed, e.proxy) for e in table.entries.values()} == {(0, "default")}


# ------------------------------------------------------------------------------- missing, not a file
def test_a_missing_table_is_refused(case):
    y, _ = case(search=SEARCH.replace("t.json", "nope.json"))
    assert "neither a file" in _refused(y)


@pytest.mark.parametrize("trainer", ["table:", "table:   ", "table", "tables:t.json", "table t.json"])
def test_an_empty_or_misspelled_table_trainer_is_refused(case, trainer):
    y, _ = case(search=SEARCH.replace("table:t.json", trainer))
    _refused(y)


@pytest.mark.parametrize("value", ["5", "[table:t.json]", "{path: t.json}", "null", "true"])
def test_a_table_trainer_of_the_wrong_type_is_refused(case, value):
    y, _ = case(search=SEARCH.replace("'table:t.json'", value))
    _refused(y)


def test_a_folder_is_not_a_table(case, tmp_path):
    (tmp_path / "adir").mkdir()
    y, _ = case(search=SEARCH.replace("t.json", "adir"))
    assert "is a folder, not a table file" in _refused(y, tmp_path / "adir")


def test_a_device_is_not_a_table(case):
    y, _ = case(search=SEARCH.replace("t.json", "/dev/null"))
    assert "not a regular file" in _refused(y, Path("/dev/null"))


def test_a_fifo_is_refused_without_being_opened(case, tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    y, _ = case(search=SEARCH.replace("t.json", "fifo.json"))
    assert "not a regular file" in _refused(y, tmp_path / "fifo.json")


def test_a_dangling_link_is_a_missing_table(case, tmp_path):
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone.json")
    y, _ = case(search=SEARCH.replace("t.json", "dangling.json"))
    assert "neither a file" in _refused(y)


def test_a_link_loop_is_a_missing_table(case, tmp_path):
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    y, _ = case(search=SEARCH.replace("t.json", "loop.json"))
    assert "neither a file" in _refused(y)


# --------------------------------------------------------------------------------------- damaged bytes
BYTES = {
    "empty": b"",
    "blank": b" \n\t\n",
    "not UTF-8": b"\xff\xfe\x00junk\x80\x81",
    "a PNG": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "a gzip": b"\x1f\x8b\x08\x00" + bytes(40),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "a JSON array": b"[1, 2, 3]",
    "a JSON string": b'"coatnas-table/2"',
    "JSON null": b"null",
    "a number": b"42",
    "two JSON lines (a trials.jsonl)": b'{"id": "a", "number": 0}\n{"id": "b", "number": 1}\n',
    "a YAML file": SPACE.encode(),
}


@pytest.mark.parametrize("name", list(BYTES))
def test_damaged_or_foreign_bytes_are_refused(case, name):
    y, t = case(BYTES[name])
    assert "damaged or not one of ours" in _refused(y, t)


def test_trailing_garbage_and_a_torn_end_are_refused_a_byte_order_mark_is_not_damage(case, good):
    for text in (good[2] + "garbage", good[2] + "\n{}", good[2][: len(good[2]) // 2]):
        y, t = case(text)
        _refused(y, t)
    y, _ = case("\ufeff" + good[2])  # a whole table saved by an editor that marks UTF-8
    assert load_experiment(y).num_classes == 4


def test_a_key_written_twice_is_refused(case, good):
    """JSON keeps the last of two equal keys without a word (here: a second `num_classes`, which would change
    every capacity axis); no table of ours has one, so the file was edited or is foreign."""
    text = good[2].replace("{", '{"num_classes": 100, ', 1)
    y, t = case(text)
    assert "'num_classes' twice" in _refused(y, t)


def test_a_table_truncated_at_each_byte_is_refused(case, tmp_path):
    """Every prefix of a short table (2 candidates) is refused with one paragraph, except the whole
    document itself."""
    text = dump_table(_table(tmp_path, SHORT)).encode()
    y, t = case(text, space=SHORT)
    assert load_experiment(y).space.size() == 2
    whole = json.loads(text)
    for n in reversed(range(len(text))):  # cut the file shorter and shorter
        os.truncate(t, n)
        try:
            read_table("table:t.json", str(y))
        except ConfigError as err:
            msg = str(err)
            assert "\n" not in msg and str(t) in msg and "`search.trainer`" in msg, (n, msg)
        else:
            assert json.loads(text[:n]) == whole, n  # only the trailing newline was cut
    for n in range(0, len(text.rstrip()), max(1, len(text) // 5)):  # the whole check, at a few (each torn)
        t.write_bytes(text[:n])
        _refused(y, t)


# --------------------------------------------------------------------------------------------- NaN, inf
def _set(path: str, value):
    """A change that sets ``path`` (``entries/0/metrics/gen_val_acc``) of the decoded table."""

    def change(d):
        *head, last = path.split("/")
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return change


def _delete(path: str):
    def change(d):
        *head, last = path.split("/")
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        del d[int(last) if isinstance(d, list) else last]

    return change


NAN_INF = {
    "NaN metric": _set("entries/0/metrics/gen_val_acc", math.nan),
    "NaN loss in a round": _set("entries/1/history/0/train_loss", math.nan),
    "NaN zero-cost": _set("entries/2/zero_cost/params", math.nan),
    "NaN in the protocol": _set("protocol/train.lr", math.nan),
    "NaN num_classes": _set("num_classes", math.nan),
    "infinite accuracy": _set("entries/0/metrics/cap_train_acc", math.inf),
    "infinite loss": _set("entries/0/metrics/cap_train_loss", -math.inf),
    "infinite round accuracy": _set("entries/3/history/2/val_acc", math.inf),
    "infinite protocol value": _set("protocol/train.lr", math.inf),
    "infinite objective value": _set("objective/gap_penalty", math.inf),
}


@pytest.mark.parametrize("name", list(NAN_INF))
def test_nan_and_infinite_values_are_refused(case, good, name):
    y, t = case(_mutated(good, NAN_INF[name]))
    _refused(y, t)


def test_an_overflowing_number_is_refused(case, good):
    text = good[2].replace('"cap_train_loss":1.2', '"cap_train_loss":1e999', 1)
    assert text != good[2]
    y, t = case(text)
    assert "finite" in _refused(y, t)


# ------------------------------------------------------------------------------------------ wrong types
def _other_arch(**change):
    """entries[0] replaced by an architecture outside SPACE, consistently (its own id, string, layout)."""

    def apply(d):
        arch = dict(d["entries"][0]["arch"], **change)
        a = Architecture.from_dict(arch)
        d["entries"][0].update(arch=a.to_dict(), id=a.id, arch_str=str(a), layout=a.layout_name)

    return apply


SCHEMA = {
    # the header
    "num_classes as text": (_set("num_classes", "4"), "num_classes"),
    "num_classes 1": (_set("num_classes", 1), "num_classes"),
    "num_classes true": (_set("num_classes", True), "num_classes"),
    "num_classes 10**400": (_set("num_classes", 10**400), "num_classes"),
    "version 0": (_set("version", 0), "version"),
    "name empty": (_set("name", ""), "name"),
    "an unknown top-level key": (_set("extra", 1), "unknown key 'extra'"),
    "no protocol": (_delete("protocol"), "protocol"),
    "no format": (_delete("format"), "format"),
    "a future format": (_set("format", "coatnas-table/3"), "coatnas-table/3"),
    "a study's format": (_set("format", "coatnas-study/1"), "not a coatnas table"),
    "format as a number": (_set("format", 2), "not a coatnas table"),
    "format 1 entries with format 2 keys": (_set("format", "coatnas-table/1"), "format-1"),
    "hardware nested": (_set("hardware/cpu", {"a": 1}), "hardware.cpu"),
    "seeds.proxy empty": (_set("seeds/proxy", []), "seeds.proxy"),
    "a negative seed": (_set("seeds/proxy", [-1]), "seeds.proxy"),
    "seeds with a third key": (_set("seeds/extra", [1]), "seeds"),
    # the protocol and the objective
    "protocol a list": (_set("protocol", [1, 2]), "protocol"),
    "protocol value a mapping": (_set("protocol/train.lr", {"x": 1}), "train.lr"),
    "protocol foreign key": (_set("protocol/foo", 1), "'foo'"),
    "protocol trainer a table": (_set("protocol/search.trainer", "table:other.json"), "search.trainer"),
    "protocol without its trainer": (_delete("protocol/search.trainer"), "search.trainer"),
    "protocol disagrees with the objective": (_set("protocol/objective.mode", "single"), "objective.mode"),
    "objective lacks axes": (_delete("objective/axes"), "axes"),
    "objective mode unknown": (_set("objective/mode", "triple"), "objective.mode"),
    "objective weights both 0": (
        lambda d: d["objective"].update(weight_generalization=0.0, weight_capacity=0.0),
        "weight",
    ),
    "objective unknown key": (_set("objective/temperature", 1.0), "objective.temperature"),
    "reference_protocol a text": (_set("reference_protocol", "same"), "reference_protocol"),
    "search_yaml without its space": (_delete("search_yaml/space"), "search_yaml"),
    "search_yaml.space invalid": (_set("search_yaml/space/stages/S1/width", -1), "search_yaml.space"),
    # the entries
    "entries empty": (_set("entries", []), "entries"),
    "entries a mapping": (_set("entries", {"a": 1}), "entries"),
    "an entry a list": (_set("entries/0", [1, 2]), "entries[0]"),
    "an entry without metrics": (_delete("entries/0/metrics"), "metrics"),
    "an entry with an unknown key": (_set("entries/0/score", 0.5), "'score'"),
    "an unknown status": (_set("entries/0/status", "great"), "entries[0].status"),
    "an id that is not its architecture's": (_set("entries/0/id", "0" * 12), "entries[0]"),
    "an architecture of 4 stages": (_set("entries/0/arch/depths", [1, 1, 1, 1]), "entries[0].arch.depths"),
    "an arch_str that is another architecture": (_set("entries/1/arch_str", "C-C-C-C L=1,1,1,1,1"), "arch_str"),
    "a layout that is another": (_set("entries/1/layout", "C-C-C-C"), "layout"),
    "a repeated candidate": (lambda d: d["entries"].append(copy.deepcopy(d["entries"][0])), "repeats"),
    "a candidate missing": (lambda d: d["entries"].pop(), "6"),
    "a candidate of another space": (_other_arch(widths=[8, 8, 16, 16, 64]), "own space"),
    "an ok entry without gen_val_acc": (_delete("entries/0/metrics/gen_val_acc"), "gen_val_acc"),
    "a metric as text": (_set("entries/0/metrics/cap_train_acc", "0.5"), "cap_train_acc"),
    "a metric true": (_set("entries/0/metrics/gen_train_acc", True), "gen_train_acc"),
    "an accuracy above 1": (_set("entries/0/metrics/gen_val_acc", 1.5), "gen_val_acc"),
    "a negative loss": (_set("entries/0/metrics/cap_train_loss", -0.1), "cap_train_loss"),
    "a negative wall time": (_set("entries/0/metrics/wall_s", -5), "wall_s"),
    "history a mapping": (_set("entries/0/history", {"0": {}}), "history"),
    "a round of an unknown regime": (_set("entries/0/history/0/regime", "warmup"), "regime"),
    "a round without val_acc": (_delete("entries/0/history/1/val_acc"), "val_acc"),
    "a round accuracy of -1": (_set("entries/0/history/1/train_acc", -1), "train_acc"),
    "an unknown zero-cost proxy": (_set("entries/0/zero_cost/magic", 1.0), "magic"),
    "a reference keyed by a name": (_set("entries/0/reference", {"best": {"status": "ok"}}), "reference"),
    "a reference of an unknown status": (_set("entries/0/reference", {"0": {"status": "fine"}}), "reference"),
    "an entry seed outside seeds.proxy": (_set("entries/0/seed", 7), "seeds.proxy"),
    "an entry seed as text": (_set("entries/0/seed", "0"), "seed"),
    "an entry without its proxy": (_delete("entries/0/proxy"), "proxy"),
}


@pytest.mark.parametrize("name", list(SCHEMA))
def test_schema_wrong_tables_are_refused_naming_what_is_wrong(case, good, name):
    change, needle = SCHEMA[name]
    y, t = case(_mutated(good, change))
    msg = _refused(y, t)
    assert needle in msg, msg


# ---------------------------------------------------------------------------- other space, other protocol
def test_a_table_of_another_space_is_refused(case):
    y, _ = case(search=SEARCH.replace("table:t.json", "table:benchmarks/bench-cifar-v1.json"))
    assert "differs from the space of the table" in _refused(y, key="space")


@pytest.mark.parametrize(
    "change, needle",
    [
        (("width: 32}", "width: 64}"), "space.stages.S4.width"),
        (("depth: [1, 2]", "depth: 1"), "space.stages.S3.depth"),
        (("image_size: 32", "image_size: 64"), "space.input.image_size"),
    ],
)
def test_a_yaml_of_another_space_is_refused(case, change, needle):
    y, _ = case(space=SPACE.replace(*change))
    assert needle in _refused(y, key="space")


@pytest.mark.parametrize(
    "change, needle",
    [
        (("epochs: 2", "epochs: 3"), "train.epochs: table 2, YAML 3"),
        (("batch_size: 32", "batch_size: 16"), "train.batch_size"),
        (("synthetic_classes: 4", "synthetic_classes: 5"), "train.data.synthetic_classes"),
        (("mode: both", "mode: single"), "objective.mode"),
        (("subset_fraction: 0.5", "subset_fraction: 0.4"), "objective.subset_fraction"),
        (("epochs: 2", "epochs: 2\n  lr: 0.5"), "train.lr"),
    ],
)
def test_a_yaml_of_another_protocol_is_refused(case, change, needle):
    y, _ = case(space=SPACE.replace(*change))
    assert needle in _refused(y, key="train")


def test_a_table_of_another_protocol_is_refused(case, good):
    y, t = case(_mutated(good, _set("protocol/train.epochs", 5)))
    assert "train.epochs: table 5, YAML 2" in _refused(y, key="train")


# ---------------------------------------------------------------------------------- bad replay YAML keys
REPLAY_YAML = {
    "a pre-screen": ("prescreen: {proxy: snip}", "search.prescreen.proxy"),
    "a latency axis": (None, "objective.axes"),
    "a latency budget": (None, "objective.axes"),
    "an unknown scheduler": ("scheduler: {type: hyperband}", "search.scheduler.type"),
    "an unknown sampler": ("sampler: bayes", "search.sampler"),
    "a misspelled key": ("trainr: 'table:t.json'", "search.trainr"),
    "a trainer given twice": ("trainer: 'table:t.json'", "trainer"),
    "zero trials": ("trials: 0", "search.trials"),
}


@pytest.mark.parametrize("name", list(REPLAY_YAML))
def test_bad_keys_of_a_replay_yaml_are_refused(case, name):
    extra, key = REPLAY_YAML[name]
    space, search = SPACE, SEARCH
    if name == "a latency axis":
        space = SPACE.replace("subset_fraction: 0.5}", "subset_fraction: 0.5, axes: [generalization, latency]}")
    elif name == "a latency budget":
        space = SPACE.replace("subset_fraction: 0.5}", "subset_fraction: 0.5, latency: {max_ms: 5}}")
    elif name == "an unknown sampler":
        search = SEARCH.replace("sampler: random", extra)
    elif name == "a trainer given twice":  # YAML keeps the second silently; the reader refuses
        search = "search:\n  trainer: 'table:t.json'\n  trials: 3\n  trainer: 'table:t.json'\n"
    else:
        search = SEARCH.replace("trials: 3, ", "trials: 3, " + extra + ", ")
        if name == "zero trials":
            search = SEARCH.replace("trials: 3", extra)
    y, _ = case(search=search, space=space)
    _refused(y, key=key)


# ----------------------------------------------------------------------------------- the other entrances
CLI_ROWS = {
    "missing": (None, SEARCH.replace("t.json", "nope.json"), SPACE),
    "truncated": (b'{"format": "coatnas-table/2", "entr', SEARCH, SPACE),
    "NaN": ("nan", SEARCH, SPACE),
    "foreign": (b"[1, 2]", SEARCH, SPACE),
    "other space": (None, SEARCH, SPACE.replace("width: 32}", "width: 64}")),
    "other protocol": (None, SEARCH, SPACE.replace("epochs: 2", "epochs: 4")),
    "a pre-screen": (None, SEARCH.replace("trials: 3,", "trials: 3, prescreen: {proxy: snip},"), SPACE),
}


@pytest.mark.parametrize("name", list(CLI_ROWS))
def test_nas_search_dry_run_refuses_with_one_paragraph(case, good, capsys, name):
    from nas.cli.search import main

    table, search, space = CLI_ROWS[name]
    if table == "nan":
        table = _mutated(good, NAN_INF["NaN metric"])
    y, _ = case(table, search=search, space=space)
    assert main(["--space", str(y), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("nas-search: error: ") and str(y) in err.replace("\n", " ")
    assert "\n\n" not in err.strip() and "Traceback" not in err


def test_replay_search_refuses_a_table_damaged_after_the_check(case):
    """The in-process replay (and a worker) read the table again: a table damaged since is one paragraph."""
    from nas.search.replay import replay_search

    y, t = case()
    exp = load_experiment(y)
    t.write_text('{"format": "coatnas-table/2", "entries": [')
    with pytest.raises(UserError) as info:
        replay_search(exp)
    msg = str(info.value)
    assert "\n" not in msg and str(t) in msg and "damaged or not one of ours" in msg


def test_the_worker_reader_names_the_file_and_what_to_do(case, good):
    _, t = case(_mutated(good, _set("entries/0/metrics/gen_val_acc", 2.0)))
    with pytest.raises(UserError) as info:
        load_table(t)
    msg = str(info.value)
    assert "\n" not in msg and str(t) in msg and "entries[0].metrics.gen_val_acc" in msg
    assert "scripts/make_table.py" in msg


def test_the_writer_refuses_a_table_it_could_not_read_back(good):
    with pytest.raises(UserError, match="would not be readable.*gen_val_acc"):
        dump_table(_mutated(good, _set("entries/0/metrics/gen_val_acc", math.nan)))
    nan_proxy = json.loads(dump_table(_mutated(good, _set("entries/0/zero_cost/params", math.nan))))
    assert nan_proxy["entries"][0]["zero_cost"]["params"] is None  # JSON has no NaN: undefined is null


def test_resuming_over_a_damaged_table_is_refused_and_changes_nothing(case, ray_local, tmp_path, capsys):
    """A real replayed run (Ray), then its table is truncated: ``--resume`` refuses with one paragraph and
    leaves the run's records as they were."""
    from nas.cli.search import main
    from nas.search import run

    y, t = case()
    run(y, run_dir=tmp_path / "run", trials=2, progress=False)
    records = (tmp_path / "run" / "trials.jsonl").read_bytes()
    assert records.count(b"\n") == 2
    t.write_bytes(t.read_bytes()[:100])
    assert main(["--resume", str(tmp_path / "run"), "--trials", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-search: error: ") and "\n\n" not in err.strip() and "Traceback" not in err
    assert str(t) in err.replace("\n", " ") or t.name in err
    assert (tmp_path / "run" / "trials.jsonl").read_bytes() == records
