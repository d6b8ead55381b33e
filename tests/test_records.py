"""The records of a search run, each read by one typed reader: ``trials.jsonl`` (:class:`TrialRecord`) and
``experiment.json`` (:class:`RunMeta`).

A table of bad files (torn, truncated at each byte, schema-wrong, NaN, wrong types, foreign) runs in process,
without Ray, against every reader and command that reads the file: ``RunDir.read_records``/``read_meta``,
the leaderboard writer, ``nas-report``, ``nas-export`` and the start-up check of ``nas-search --resume``.
Each row either reads the (repaired) records or is refused with one paragraph naming the file (and the line),
and the file is left as it was. The migration of the files today's main writes (format 1) is tested on
their exact bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.cli import export as export_cli
from nas.cli import report as report_cli
from nas.errors import UserError
from nas.search import RunDir, load_experiment
from nas.search.config import protocol_of
from nas.search.leaderboard import build_rows, write_leaderboard
from nas.search.record import FORMAT, TrialRecord
from nas.search.rundir import META_FORMAT
from nas.search.startup import resolve_target

# Two records exactly as the main branch wrote them before the format was versioned (format 1: no "format",
# no "kind"; json.dumps(sort_keys=True) of TrialRecord.to_json(), one per line).
V1_OK = (
    '{"arch": {"depths": [1, 1, 1, 1, 1], "layout": "C-C-T-T", "options": {"downsample": "conv1x1", '
    '"ffn_expansion": 4.0, "head_dim": 32, "mbconv_expansion": 4.0, "rel_attn": "pre", "se_ratio": 0.25}, '
    '"widths": [8, 8, 16, 16, 32]}, "arch_str": "C-C-T-T L=1,1,1,1,1 D=8,8,16,16,32", "capacity": 0.42, '
    '"generalization": 0.61, "history": [{"epoch": 1, "regime": "capacity", "train_acc": 0.7, "train_loss": 1.1, '
    '"val_acc": 0.62}], "id": "58257758277f", "metrics": {"epochs": 1.0, "macs": 1500000.0, "params": 13936.0, '
    '"train_acc": 0.7, "val_acc": 0.62, "wall_s": 1.5}, "number": 0, "reason": "", "score": 0.515, '
    '"status": "ok", "tune_trial_id": "a1b2c3d4"}'
)
V1_ERROR = (
    '{"arch": {"depths": [1, 1, 1, 2, 1], "layout": "C-C-C-T", "options": {"downsample": "conv1x1", '
    '"ffn_expansion": 4.0, "head_dim": 32, "mbconv_expansion": 4.0, "rel_attn": "pre", "se_ratio": 0.25}, '
    '"widths": [8, 16, 16, 32, 32]}, "arch_str": "C-C-C-T L=1,1,1,2,1 D=8,16,16,32,32", "capacity": 0.0, '
    '"generalization": 0.0, "history": [], "id": "52d2c06e22dc", "metrics": {"macs": 2500000.0, '
    '"params": 20112.0}, "number": 1, "reason": "the worker failed: boom", "score": 0.0, "status": "error", '
    '"tune_trial_id": "e5f6"}'
)
V1_TRIALS = (V1_OK + "\n" + V1_ERROR + "\n").encode()

RESUME = dict(trials=None, max_concurrent=None, cpus_per_trial=None, gpus_per_trial=None, sampler=None, seed=None)


def _v1_meta(exp, source: Path) -> bytes:
    """experiment.json as the main branch wrote it (format 1) after one finished session."""
    meta = {
        "format": 1,
        "name": "run",
        "fingerprint": exp.space.fingerprint(),
        "source": str(source),
        "storage": None,
        "study": "nas",
        "uri": None,
        "sessions": [
            {
                "started": "2025-05-01 10:00:00",
                "trials": 2,
                "address": None,
                "ended": "2025-05-01 10:01:00",
                "completed": 2,
                "interrupted": False,
            }
        ],
        "protocol": protocol_of(exp),
    }
    return json.dumps(meta, indent=2, default=str).encode()


@pytest.fixture
def run_dir(write_space, tmp_path) -> Path:
    """A finished run of two trials, its files as the main branch wrote them (no journal: nothing here
    opens the study)."""
    space = write_space()
    exp = load_experiment(space)
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_experiment(exp, "run")
    rd.experiment_json.write_bytes(_v1_meta(exp, space))
    rd.trials_jsonl.write_bytes(V1_TRIALS)
    return rd.path


# --------------------------------------------------------------------------------------- the commands
def _cli(module, argv, capsys) -> str | None:
    """``None`` when the command succeeded, else its one-paragraph error (checked to be one)."""
    try:
        rc = module.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    _, err = capsys.readouterr()
    if rc == 0:
        return None
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith(f"{module.PROG}: error: "), err
    assert "\n\n" not in err.strip(), err
    return " ".join(err.split())


def _in_process(fn) -> str | None:
    try:
        fn()
    except UserError as err:
        msg = str(err)
        assert "\n\n" not in msg, msg
        return " ".join(msg.split())
    return None


def _commands(rd: Path, capsys, out: Path) -> dict[str, str | None]:
    """Every reader and command of a run's records: ``None`` where it read them, else its refusal."""
    return {
        "read_records": _in_process(lambda: RunDir(rd).read_records()),
        "read_meta": _in_process(lambda: RunDir(rd).read_meta()),
        "leaderboard": _in_process(lambda: write_leaderboard(RunDir(rd))),
        "resume start-up": _in_process(lambda: resolve_target(None, None, rd, True, None, False, RESUME)),
        "nas-report": _cli(report_cli, [str(rd), "--out", str(out / "report"), "--force"], capsys),
        "nas-export": _cli(export_cli, [str(rd), "--trial", "0", "--out", str(out / "m.yaml"), "--force"], capsys),
    }


def _files(rd: Path) -> dict[str, bytes]:
    names = ("trials.jsonl", "experiment.json")
    return {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name in names}


# ------------------------------------------------------------------------------------- trials.jsonl
def _line(**change) -> str:
    """The first format-1 record with keys changed (a value ``...`` deletes the key)."""
    rec = json.loads(V1_OK)
    for k, v in change.items():
        if v is ...:
            rec.pop(k, None)
        else:
            rec[k] = v
    return json.dumps(rec, sort_keys=True)


BAD_LINES = [
    # (case, the bad line, what the refusal says)
    ("missing arch", _line(arch=...), "'arch' is missing"),
    ("missing score", _line(score=...), "'score' is missing"),
    ("empty object", "{}", "is missing"),
    ("a list", "[1, 2, 3]", "JSON list"),
    ("a string", '"trial"', "JSON str"),
    ("null", "null", "JSON NoneType"),
    ("NaN score", V1_OK.replace('"score": 0.515', '"score": NaN'), "NaN"),
    ("NaN axis", V1_OK.replace('"generalization": 0.61', '"generalization": NaN'), "NaN"),
    ("NaN metric", V1_OK.replace('"wall_s": 1.5', '"wall_s": NaN'), "NaN"),
    ("infinite score", V1_OK.replace('"score": 0.515', '"score": Infinity'), "finite"),
    ("score a string", _line(score="0.9"), "`score` must be a number"),
    ("score a bool", _line(score=True), "`score` must be a number"),
    ("axis a string", _line(capacity="high"), "`capacity` must be a number"),
    ("number a string", _line(number="0"), "`number`"),
    ("number negative", _line(number=-1), "`number`"),
    ("number a float", _line(number=0.5), "`number`"),
    ("unknown status", _line(status="great"), "`status`"),
    ("id a number", _line(id=5), "`id`"),
    ("id empty", _line(id=""), "`id`"),
    ("arch not a mapping", _line(arch="C-C-T-T"), "architecture"),
    ("arch bad layout", _line(arch={"layout": 5, "depths": [1] * 5, "widths": [8] * 5}), "arch.layout"),
    ("arch depth 10^6", _line(arch={"layout": "C-C-T-T", "depths": [1, 1, 10**6, 1, 1], "widths": [8] * 5}), "depths"),
    ("arch unknown key", _line(arch={"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8] * 5, "x": 1}), "arch"),
    ("metrics a list", _line(metrics=[1]), "`metrics`"),
    ("params a string", _line(metrics={"params": "big"}), "metrics.params"),
    ("num_classes 0.5", _line(metrics={"num_classes": 0.5}), "num_classes"),
    ("num_classes huge", _line(metrics={"num_classes": 1e12}), "num_classes"),
    ("history a dict", _line(history={"epoch": 1}), "`history`"),
    ("history of numbers", _line(history=[1, 2]), "`history`"),
    ("reason a number", _line(reason=7), "`reason`"),
    ("tune id a list", _line(tune_trial_id=[1]), "`tune_trial_id`"),
    ("format from the future", _line(format=3, kind="search"), "newer coatnas"),
    ("format a string", _line(format="2", kind="search"), "format"),
    ("format 2 without kind", _line(format=2), "'kind' is missing"),
    ("unknown kind", _line(format=2, kind="verification"), "kind"),
    ("not JSON", '{"id": "58257758277f", "arch": ', "not JSON"),
    ("another program's JSON", '{"name": "left-pad", "version": "1.3.0", "main": "index.js"}', "is missing"),
    ("deeply nested", "[" * 100_000 + "]" * 100_000, "nested"),
]


@pytest.mark.parametrize("case,line,says", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_a_bad_record_inside_trials_jsonl_is_refused_by_every_reader(case, line, says, run_dir, tmp_path, capsys):
    """The bad line is line 2 of 3 (a whole line, not a torn tail): every reader and command refuses the
    file with one paragraph naming it, the line and what it found; nothing is changed."""
    (run_dir / "trials.jsonl").write_bytes((V1_OK + "\n" + line + "\n" + V1_ERROR + "\n").encode())
    before = _files(run_dir)
    results = _commands(run_dir, capsys, tmp_path)
    assert results.pop("read_meta") is None
    for command, msg in results.items():
        assert msg is not None, f"{command} accepted a trials.jsonl with {case}"
        assert str(run_dir / "trials.jsonl") in msg and "line 2" in msg, (command, msg)
        assert says in msg, (command, msg)
        assert "Delete that line" in msg, (command, msg)
    assert _files(run_dir) == before


@pytest.mark.parametrize("case,line,says", BAD_LINES[:10], ids=[c[0] for c in BAD_LINES[:10]])
def test_a_bad_last_line_without_newline_is_a_torn_write_and_skipped(case, line, says, run_dir, tmp_path, capsys):
    """The same lines as the file's last line, without a newline: a write torn by a killed driver. Readers
    skip it (a NaN score is never ranked nor exported); the resume start-up (the driver) cuts it off."""
    (run_dir / "trials.jsonl").write_bytes((V1_OK + "\n" + line).encode())
    results = _commands(run_dir, capsys, tmp_path)
    assert all(msg is None for msg in results.values()), results
    assert [r.number for r in RunDir(run_dir).read_records()] == [0]
    board = json.loads((tmp_path / "report" / "leaderboard.json").read_text())
    assert [row["trial"] for row in board] == [0] and all(math.isfinite(row["score"]) for row in board)
    assert RunDir(run_dir).repair_torn_tail() == line.encode()
    assert (run_dir / "trials.jsonl").read_bytes() == (V1_OK + "\n").encode()
    assert (run_dir / "trials.jsonl.torn").read_bytes() == line.encode() + b"\n"


def test_trials_jsonl_truncated_at_each_byte_reads_the_whole_lines(run_dir, tmp_path, capsys):
    """Truncated at every byte of a two-record file: the records read are exactly the whole lines before
    the cut (and the last one when only its newline is missing). Every command reads the file through
    ``RunDir.read_records``, checked at each byte; the commands themselves (each writes files and fsyncs)
    run at the boundaries of the three outcomes and at every 97th byte."""
    data = V1_TRIALS
    first_end = data.index(b"\n")
    for k in range(len(data) + 1):
        (run_dir / "trials.jsonl").write_bytes(data[:k])
        want = (k >= first_end) + (k >= len(data) - 1)
        got = RunDir(run_dir).read_records()
        assert [r.number for r in got] == list(range(want)), k
        assert len(build_rows(got)) == want
        if k % 97 == 0 or k in (first_end - 1, first_end, first_end + 1, len(data) - 2, len(data) - 1):
            results = _commands(run_dir, capsys, tmp_path)
            refusals = {c: m for c, m in results.items() if m is not None}
            if want == 0:  # nothing finished yet: export says so, naming the run
                assert list(refusals) == ["nas-export"] and "no finished trial" in refusals["nas-export"]
            else:
                assert not refusals, (k, refusals)
            assert len(write_leaderboard(RunDir(run_dir))) == want


FOREIGN_TRIALS = [
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) + b"\n", "line 1"),
    ("utf-16 text", '{"id": "x"}\n{"id": "y"}\n'.encode("utf-16"), "line 1"),
    ("zeros", b"\x00" * 64 + b"\n" + b"\x00" * 64 + b"\n", "line 1"),
    ("csv", b"rank,trial,id\n1,0,58257758277f\n", "line 1"),
    ("a JSON document", b'{\n  "name": "run",\n  "fingerprint": "abc"\n}\n', "line 1"),
]


@pytest.mark.parametrize("case,data,says", FOREIGN_TRIALS, ids=[c[0] for c in FOREIGN_TRIALS])
def test_a_foreign_trials_jsonl_is_refused(case, data, says, run_dir, tmp_path, capsys):
    (run_dir / "trials.jsonl").write_bytes(data)
    results = _commands(run_dir, capsys, tmp_path)
    assert results.pop("read_meta") is None
    for command, msg in results.items():
        assert msg is not None and str(run_dir / "trials.jsonl") in msg and says in msg, (command, msg)
    assert (run_dir / "trials.jsonl").read_bytes() == data


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \n"], ids=["empty", "blank lines", "spaces"])
def test_an_empty_trials_jsonl_has_no_records(data, run_dir, tmp_path, capsys):
    (run_dir / "trials.jsonl").write_bytes(data)
    results = _commands(run_dir, capsys, tmp_path)
    assert RunDir(run_dir).read_records() == []
    assert [c for c, m in results.items() if m is not None] == ["nas-export"]


def test_a_nan_score_is_never_ranked_nor_exported(run_dir, tmp_path, capsys):
    """The defect of issue 19: one NaN score broke the sort and was exported as the best. Now the line is
    refused by every command, naming it; once it is deleted, the real best is exported."""
    nan = _line(number=2, id="0123456789ab", score=0.0).replace('"score": 0.0', '"score": NaN')
    (run_dir / "trials.jsonl").write_bytes((V1_OK + "\n" + nan + "\n" + V1_ERROR + "\n").encode())
    msg = _cli(export_cli, [str(run_dir), "--out", str(tmp_path / "best.yaml")], capsys)
    assert msg is not None and "line 2" in msg and "NaN" in msg and not (tmp_path / "best.yaml").exists()
    (run_dir / "trials.jsonl").write_bytes(V1_TRIALS)
    assert _cli(export_cli, [str(run_dir), "--out", str(tmp_path / "best.yaml")], capsys) is None
    assert "trial: 0" in (tmp_path / "best.yaml").read_text()


# ---------------------------------------------------------------------------------- experiment.json
def _meta(**change) -> bytes:
    return json.dumps({"format": 1, "name": "run", "fingerprint": "abc", "sessions": [], **change}).encode()


BAD_META = [
    ("not JSON", b'{"name": "run", "finger', "not JSON"),
    ("empty", b"", "not JSON"),
    ("a list", b"[1, 2]", "JSON list"),
    ("no fingerprint", b'{"format": 1, "name": "run", "sessions": []}', "'fingerprint' is missing"),
    ("NaN", b'{"format": 1, "name": "run", "fingerprint": NaN, "sessions": []}', "NaN"),
    ("fingerprint a number", _meta(fingerprint=5), "`fingerprint`"),
    ("name a list", _meta(name=["run"]), "`name`"),
    ("sessions an object", _meta(sessions={"a": 1}), "`sessions`"),
    ("sessions of numbers", _meta(sessions=[1, 2]), "`sessions`"),
    ("protocol a list", _meta(protocol=[1]), "`protocol`"),
    ("storage a number", _meta(storage=5), "`storage`"),
    ("study a number", _meta(study=5), "`study`"),
    ("format from the future", _meta(format=META_FORMAT + 1), "newer coatnas"),
    ("format a string", _meta(format="1"), "format"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not UTF-8"),
    ("another program's JSON", b'{"name": "left-pad", "version": "1.3.0"}', "'fingerprint' is missing"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, "nested"),
]


@pytest.mark.parametrize("case,data,says", BAD_META, ids=[c[0] for c in BAD_META])
def test_a_bad_experiment_json_is_refused_by_every_reader(case, data, says, run_dir, tmp_path, capsys):
    (run_dir / "experiment.json").write_bytes(data)
    before = _files(run_dir)
    results = _commands(run_dir, capsys, tmp_path)
    for command in ("read_records", "leaderboard"):  # they do not read experiment.json
        assert results.pop(command) is None
    for command, msg in results.items():
        assert msg is not None, f"{command} accepted an experiment.json with {case}"
        assert str(run_dir / "experiment.json") in msg and says in msg, (command, msg)
        assert f"mv {run_dir / 'experiment.json'}" in msg, (command, msg)  # what to do
    assert _files(run_dir) == before


def test_experiment_json_truncated_at_each_byte_is_refused(run_dir, tmp_path, capsys):
    data = (run_dir / "experiment.json").read_bytes()
    for k in range(len(data)):
        (run_dir / "experiment.json").write_bytes(data[:k])
        with pytest.raises(UserError, match="experiment.json is damaged or not one of ours"):
            RunDir(run_dir).read_meta()
        if k % 53 == 0:
            with pytest.raises(UserError, match="experiment.json is damaged"):
                resolve_target(None, None, run_dir, True, None, False, RESUME)
        if k % 211 == 0:  # the CLIs: a sample
            results = _commands(run_dir, capsys, tmp_path)
            assert all(results[c] and "experiment.json" in results[c] for c in ("nas-report", "nas-export")), results


def test_experiment_json_that_is_a_folder_or_a_dangling_link(run_dir, tmp_path, capsys):
    (run_dir / "experiment.json").unlink()
    (run_dir / "experiment.json").mkdir()
    msg = _in_process(lambda: RunDir(run_dir).read_meta())
    assert msg and "is a folder" in msg and "experiment.json" in msg
    (run_dir / "experiment.json").rmdir()
    (run_dir / "experiment.json").symlink_to(tmp_path / "nowhere.json")
    msg = _in_process(lambda: RunDir(run_dir).read_meta())
    assert msg and "experiment.json" in msg


# ------------------------------------------------------------------------------------------ migration
def test_format_1_files_of_main_migrate_on_read_and_new_lines_are_format_2(run_dir, tmp_path, capsys):
    """trials.jsonl and experiment.json exactly as the main branch wrote them are read typed (format 1 is
    kind search); what is written from now carries the format; old lines are never rewritten."""
    rd = RunDir(run_dir)
    ok, err = rd.read_records()
    assert (ok.kind, ok.number, ok.status, ok.tune_trial_id) == ("search", 0, "ok", "a1b2c3d4")
    assert ok.values == {"generalization": 0.61, "capacity": 0.42} and ok.score == 0.515
    assert ok.metric("params") == 13936.0 and ok.history[0]["val_acc"] == 0.62 and ok.extra == {}
    assert ok.architecture().depths == (1, 1, 1, 1, 1) and ok.arch == json.loads(V1_OK)["arch"]
    assert (err.status, err.reason, err.axis_values(())) == ("error", "the worker failed: boom", [])
    # Written back: the same keys plus format and kind, and it reads back equal.
    again = ok.to_json()
    assert again == {**json.loads(V1_OK), "format": FORMAT, "kind": "search"}
    assert TrialRecord.from_json(again) == ok
    # Appending adds a format-2 line after the untouched format-1 lines.
    new = TrialRecord.from_json({**json.loads(V1_ERROR), "number": 2, "id": "feedfacecafe"})
    rd.append_record(new)
    lines = rd.trials_jsonl.read_bytes().splitlines(keepends=True)
    assert b"".join(lines[:2]) == V1_TRIALS and json.loads(lines[2])["format"] == FORMAT
    assert [r.number for r in rd.read_records()] == [0, 1, 2]
    # experiment.json: format 1 reads typed, is written as format 2 with every key kept.
    old = json.loads(rd.experiment_json.read_text())
    meta = rd.read_meta()
    assert (meta.name, meta.study, meta.storage, meta.fingerprint) == ("run", "nas", None, old["fingerprint"])
    assert meta.sessions == old["sessions"] and meta.protocol == old["protocol"]
    rd.write_meta(meta)
    assert json.loads(rd.experiment_json.read_text()) == {**old, "format": META_FORMAT}
    assert rd.read_meta() == meta
    # A format-1 experiment.json without a format key (the earliest runs) reads the same.
    rd.experiment_json.write_text(json.dumps({k: v for k, v in old.items() if k != "format"}))
    assert rd.read_meta() == meta
    # And the commands accept the migrated run.
    results = _commands(run_dir, capsys, tmp_path)
    assert all(m is None for m in results.values()), results


def test_a_record_never_writes_what_its_reader_refuses():
    """NaN from a custom trainer's metrics or history is written as null; an infinite axis value (the
    worst possible) is kept; the record reads back."""
    from nas.model.arch import Architecture

    arch = Architecture(layout=("C", "C", "T", "T"), depths=(1, 1, 1, 1, 1), widths=(8, 8, 16, 16, 32))
    rec = TrialRecord.of_trial(
        arch,
        4,
        "t4",
        "ok",
        score=0.5,
        values={"generalization": 0.5, "capacity": 0.5, "latency": math.inf},
        metrics={"params": 1.0, "val_loss": math.nan},
        history=[{"epoch": 1, "train_loss": math.nan}],
    )
    from nas.fsio import loads

    text = json.dumps(rec.to_json(), default=float)
    back = TrialRecord.from_json(loads(text))
    assert back.metrics["val_loss"] is None and back.history[0]["train_loss"] is None
    assert back.values["latency"] == math.inf and back.score == 0.5


@pytest.mark.parametrize(
    "name",
    ["trials.jsonl.torn", "optuna.journal.torn", "optuna.journal.replaced-1", "trials.jsonl.before-renumbering-2"],
)
def test_what_a_repair_keeps_aside_is_never_an_output(tmp_path, name):
    """The files a repair keeps beside a run's own are run files too: no --out, even with --force, replaces them."""
    from nas.fsio import check_output_file

    run = tmp_path / "run"
    run.mkdir()
    (run / "experiment.json").write_text("{}")
    (run / name).write_text("kept aside\n")
    with pytest.raises(UserError, match="search run directory"):
        check_output_file(run / name, force=True)
    assert (run / name).read_text() == "kept aside\n"
    check_output_file(run / "model.yaml", force=True)  # another name in the folder is not a run file
