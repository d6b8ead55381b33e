"""nas-fidelity as a hostile user meets it (issue 19): bad study YAMLs, seeds and flags; damaged, torn,
truncated, schema-wrong, NaN-holding and foreign study.json, architectures.json and jobs.jsonl; folders that
are not studies; links where the report goes. Each row asserts one paragraph on stderr (exit status 2, no
traceback, nothing destroyed) or a correct repair.

Everything runs in process through ``nas.cli.fidelity.main`` or the Python API, without Ray: a study's
directory is planned with the API (``prepare``, which samples without training) and its jobs are written by
hand. One row resumes a study written in today's format 1 on real Ray (``ray_local``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from nas.cli.fidelity import build_parser, main
from nas.errors import UserError
from nas.fidelity.config import load_study
from nas.fidelity.plan import plan_jobs
from nas.fidelity.studydir import JobRecord, StudyDir, prepare

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_SPACE  # noqa: E402

SPACE = TINY_SPACE.replace("MAX_PARAMS", "null").replace("SAMPLER", "random").replace("EPOCHS", "1")
NOWHERE = "127.0.0.1:1"  # a Ray address nobody answers: a YAML wrongly accepted fails fast, never trains


def study_text(
    extra: str = "",
    *,
    archs: str = "4",
    proxies: str = "{p1: {train: {steps: 2}}}",
    ref: str = "",
    zc: str = "[params, synflow, jacov]",
    boot: str = "50",
) -> str:
    study = f"space: space.yaml, architectures: {archs}, bootstrap: {boot}, zero_cost: {zc}"
    return (
        f"study: {{{study}{', ' + extra if extra else ''}}}\n"
        f"proxies: {proxies}\n"
        f"reference: {ref or '{seeds: [0, 1], train: {steps: 40}}'}\n"
    )


def one_paragraph(text: str) -> str:
    """The error's text with its line wrapping undone, after checking it is one paragraph and no traceback."""
    assert "Traceback" not in text
    assert "\n\n" not in text.strip(), text
    return " ".join(text.split())


def refused(capsys, argv: list[str], *needles: str) -> str:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's own refusals (one paragraph too: nas.cli.ArgumentParser)
        rc = stop.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.startswith("nas-fidelity: error: ") and err.count("nas-fidelity: error:") == 1, err
    flat = one_paragraph(err + out)
    for needle in needles:
        assert needle in flat, (needle, flat)
    return flat


def fake_result(job: dict, rng: random.Random) -> dict:
    """What a worker returns for ``job``, with made-up but well-formed numbers."""
    a = job["arch"]
    base = {
        "key": job["key"],
        "arch_id": a.id,
        "arch": str(a),
        "layout": a.layout_name,
        "protocol": job["protocol"],
        "seed": job["seed"],
    }
    if job["kind"] == "zero_cost":
        scores = {"params": rng.random(), "synflow": rng.random(), "jacov": math.nan}
        return {**base, "status": "ok", "reason": "", "zero_cost": scores, "metrics": {"wall_s": 0.1}}
    g, c = rng.random(), rng.random()
    metrics = {"gen_val_acc": g, "cap_train_acc": c, "cap_train_loss": 1.0, "cap_val_acc": g, "val_acc": g}
    return {
        **base,
        "status": "ok",
        "reason": "",
        "generalization": g,
        "capacity": c,
        "score": (g + c) / 2,
        "metrics": {**metrics, "wall_s": 1.0},
        "history": [{"epoch": 1, "val_acc": g}],
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A planned study (4 architectures: 4 zero-cost jobs, 4 proxy and 8 reference trainings) with every job
    recorded by hand, and the same study as today's main writes it (format 1)."""
    root = tmp_path_factory.mktemp("fid")
    (root / "space.yaml").write_text(SPACE)
    (root / "study.yaml").write_text(study_text())
    study = load_study(root / "study.yaml")
    sdir = StudyDir(root / "v2")
    _, archs = prepare(sdir, study)
    rng = random.Random(0)
    results = [fake_result(j, rng) for j in plan_jobs(study, archs)]
    for r in results:
        sdir.append(r)
    old = root / "v1"  # today's format: study.json format 1, a bare list, lines without format/kind, NaN
    old.mkdir()
    saved = json.loads(sdir.study_json.read_text())
    (old / "study.json").write_text(json.dumps({**saved, "format": 1}, indent=1))
    (old / "architectures.json").write_text(json.dumps([a.to_dict() for a in archs], indent=1))
    (old / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    assert "NaN" in (old / "jobs.jsonl").read_text()
    return root


@pytest.fixture
def study_dir(template, tmp_path) -> Path:
    d = tmp_path / "study"
    shutil.copytree(template / "v2", d)
    return d


@pytest.fixture
def old_dir(template, tmp_path) -> Path:
    d = tmp_path / "old"
    shutil.copytree(template / "v1", d)
    return d


def report(capsys, d: Path) -> str:
    rc = main(["--report-only", "--resume", str(d)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


# ------------------------------------------------------------------------------------------ study YAML
YAML_ROWS = [
    ("duplicate-top-key", study_text() + "proxies: {p2: {}}\n", ["`proxies`", "appears twice"]),
    ("duplicate-study-key", study_text("seed: 1, seed: 2"), ["`seed`", "appears twice"]),
    ("duplicate-proxy", study_text(proxies="{p1: {}, p1: {train: {steps: 3}}}"), ["`p1`", "appears twice"]),
    ("seed-negative", study_text("seed: -1"), ["`study.seed`", "from 0 to"]),
    ("seed-overflow", study_text("seed: 4294967296"), ["`study.seed`", "4294967296"]),
    ("seed-huge", study_text("seed: 100000000000000000000000000"), ["`study.seed`"]),
    ("seed-octal", study_text("seed: 010"), ["`study.seed`", "`010`", "octal number 8"]),
    ("seed-sexagesimal", study_text("seed: 1:30"), ["`study.seed`", "base-60 number 90"]),
    ("seed-float", study_text("seed: 0.5"), ["`study.seed`", "wrong type"]),
    ("seed-text", study_text("seed: zero"), ["`study.seed`"]),
    ("seed-bool", study_text("seed: yes"), ["`study.seed`"]),
    ("ref-seed-negative", study_text(ref="{seeds: [0, -1]}"), ["`reference.seeds[1]`", "from 0 to"]),
    ("ref-seed-overflow", study_text(ref="{seeds: [18446744073709551616]}"), ["`reference.seeds[0]`"]),
    ("ref-seed-float", study_text(ref="{seeds: [1.5]}"), ["`reference.seeds[0]`", "integer seed"]),
    ("ref-seed-bool", study_text(ref="{seeds: [true]}"), ["`reference.seeds[0]`"]),
    ("ref-seed-octal", study_text(ref="{seeds: [0, 07]}"), ["`reference.seeds[1]`", "octal"]),
    ("ref-seed-sexagesimal", study_text(ref="{seeds: [1:30]}"), ["`reference.seeds[0]`", "base-60"]),
    ("ref-seeds-text", study_text(ref="{seeds: '0'}"), ["`reference.seeds`", "non-empty list"]),
    ("ref-seeds-empty", study_text(ref="{seeds: []}"), ["`reference.seeds`"]),
    ("ref-seeds-too-many", study_text(ref="{seeds: [" + ", ".join(map(str, range(101))) + "]}"), ["101 seeds"]),
    ("proxy-seed-negative", study_text(proxies="{p1: {seeds: [-3]}}"), ["`proxies.p1.seeds[0]`"]),
    ("proxy-seed-null", study_text(proxies="{p1: {seeds: [null]}}"), ["`proxies.p1.seeds[0]`"]),
    ("proxy-zero_cost", study_text(proxies="{zero_cost: {}}"), ["`proxies.zero_cost`", "zero-cost proxies"]),
    ("proxy-Zero-Cost", study_text(proxies="{Zero-Cost: {}}"), ["`proxies.Zero-Cost`", "would not be trained"]),
    ("proxy-reference", study_text(proxies="{reference: {}}"), ["`proxies.reference`", "reference protocol"]),
    ("proxy-REFERENCE", study_text(proxies="{REFERENCE: {}}"), ["`proxies.REFERENCE`"]),
    ("proxy-synflow", study_text(proxies="{synflow: {}}"), ["`proxies.synflow`", "name of a zero-cost proxy"]),
    ("proxy-name-space", study_text(proxies="{'a b': {}}"), ["`proxies.a b`", "usable proxy name"]),
    ("proxy-name-slash", study_text(proxies="{'../x': {}}"), ["usable proxy name"]),
    ("proxy-name-number", study_text(proxies="{1: {}}"), ["`proxies.1`"]),
    ("proxy-name-long", study_text(proxies="{" + "a" * 65 + ": {}}"), ["usable proxy name"]),
    ("proxies-empty", study_text(proxies="{}"), ["`proxies`", "mapping of proxy names"]),
    ("proxies-list", study_text(proxies="[p1, p2]"), ["`proxies`"]),
    ("proxy-not-mapping", study_text(proxies="{p1: [1]}"), ["`proxies.p1`"]),
    ("proxy-unknown-key", study_text(proxies="{p1: {trian: {}}}"), ["`proxies.p1.trian`", "Did you mean `train`"]),
    ("proxy-train-key", study_text(proxies="{p1: {train: {stepz: 3}}}"), ["`proxies.p1.train.stepz`"]),
    ("proxy-epochs-huge", study_text(proxies="{p1: {train: {epochs: 1000000000}}}"), ["`proxies.p1.train.epochs`"]),
    ("proxy-lr-nan", study_text(proxies="{p1: {train: {lr: .nan}}}"), ["`proxies.p1.train.lr`", "finite"]),
    ("proxy-batch-1", study_text(proxies="{p1: {train: {batch_size: 1}}}"), ["`proxies.p1.train.batch_size`"]),
    ("proxy-objective", study_text(proxies="{p1: {objective: {bogus: 1}}}"), ["`proxies.p1.objective.bogus`"]),
    ("ref-train-seed", study_text(ref="{train: {seed: -1}}"), ["`reference.train.seed`"]),
    ("ref-not-mapping", study_text(ref="5"), ["`reference`"]),
    ("archs-1", study_text(archs="1"), ["`study.architectures`", "from 2 to 10_000"]),
    ("archs-huge", study_text(archs="10001"), ["`study.architectures`"]),
    ("archs-text", study_text(archs="many"), ["`study.architectures`", "all (every candidate of a small space)"]),
    ("archs-float", study_text(archs="2.5"), ["`study.architectures`"]),
    ("archs-bool", study_text(archs="true"), ["`study.architectures`"]),
    ("zero-cost-unknown", study_text(zc="[flops]"), ["`study.zero_cost`", "flops"]),
    ("zero-cost-text", study_text(zc="synflow"), ["`study.zero_cost`", "list of zero-cost proxy names"]),
    ("bootstrap-5", study_text(boot="5"), ["`study.bootstrap`", "from 10 to"]),
    ("bootstrap-huge", study_text(boot="1000001"), ["`study.bootstrap`"]),
    ("max-concurrent-0", study_text("max_concurrent: 0"), ["`study.max_concurrent`", "from 1 to"]),
    ("max-concurrent-huge", study_text("max_concurrent: 100000"), ["`study.max_concurrent`"]),
    ("cpus-0", study_text("cpus_per_trial: 0"), ["`study.cpus_per_trial`", "> 0"]),
    ("cpus-nan", study_text("cpus_per_trial: .nan"), ["`study.cpus_per_trial`", "finite"]),
    ("cpus-huge", study_text("cpus_per_trial: 5000"), ["`study.cpus_per_trial`"]),
    ("gpus-negative", study_text("gpus_per_trial: -1"), ["`study.gpus_per_trial`"]),
    ("retries-huge", study_text("max_retries: 1000"), ["`study.max_retries`"]),
    ("ceiling-2", study_text("ceiling_architectures: 2"), ["`study.ceiling_architectures`"]),
    ("zero-cost-batch-1", study_text("zero_cost_batch: 1"), ["`study.zero_cost_batch`"]),
    ("study-unknown-key", study_text("seeds: [0]"), ["`study.seeds`", "unknown key"]),
    ("top-level-typo", "studdy: {}\n", ["`studdy`", "Did you mean `study`"]),
    ("top-level-list", "- study\n- proxies\n", ["<top level>", "mapping"]),
    ("top-level-text", "just words\n", ["<top level>"]),
    ("bad-syntax", "study: [\n", ["not valid YAML", "line"]),
    ("tab-indent", "study:\n\tseed: 1\n", ["not valid YAML", "tab"]),
    ("deep-nesting", "study: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    ("space-missing", study_text().replace("space.yaml", "no-such.yaml"), ["no-such.yaml"]),
    ("space-inline-bad", study_text().replace("space: space.yaml", "space: {file: x.yaml}"), ["`study.space`"]),
    ("space-number", study_text().replace("space: space.yaml", "space: 5"), ["`study.space`"]),
    # a proxy's own data: the refusal names the study file and the proxy's key, not the search YAML's
    (
        "proxy-data-missing",
        study_text(proxies="{p1: {train: {data: {name: npz, path: /nonexistent/x.npz}}}}"),
        ["`proxies.p1.train.data.path`", "no such file"],
    ),
]


@pytest.mark.parametrize("name, text, needles", YAML_ROWS, ids=[r[0] for r in YAML_ROWS])
def test_bad_study_yaml_is_one_paragraph_naming_the_key(capsys, tmp_path, name, text, needles):
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    flat = refused(capsys, [path, "--study-dir", tmp_path / "run", "--address", NOWHERE], *needles)
    if name not in ("space-missing",):
        assert str(path) in flat  # the file is named
    assert not (tmp_path / "run").exists()  # a refused start leaves nothing behind


def test_binary_study_file_is_refused(capsys, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_bytes(b"study: \x00\xff\xfe\n")
    refused(capsys, [path, "--study-dir", tmp_path / "run"], "not UTF-8")


def test_a_yaml_bomb_is_refused_before_it_expands(capsys, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    path = tmp_path / "study.yaml"
    path.write_text(study_text() + "\n".join(lines) + "\n")
    refused(capsys, [path, "--study-dir", tmp_path / "run"], "`a0`", "unknown key")


# ------------------------------------------------------------------------------------------ flags
FLAG_ROWS = [
    ("no-arguments", [], ["give a study YAML"]),
    ("yaml-and-resume", ["s.yaml", "--resume", "d"], ["not both"]),
    ("resume-and-name", ["--resume", "d", "--name", "x"], ["drop --name"]),
    ("resume-and-study-dir", ["--resume", "d", "--study-dir", "x"], ["drop --study-dir"]),
    ("name-and-study-dir", ["s.yaml", "--name", "a", "--study-dir", "b"], ["not both"]),
    ("max-jobs-0", ["s.yaml", "--max-jobs", "0"], ["`--max-jobs`", "from 1 to"]),
    ("max-jobs-negative", ["s.yaml", "--max-jobs", "-5"], ["`--max-jobs`"]),
    ("max-jobs-huge", ["s.yaml", "--max-jobs", "1000000000"], ["`--max-jobs`"]),
    ("max-jobs-text", ["s.yaml", "--max-jobs", "many"], ["--max-jobs", "invalid int value"]),
    ("name-space", ["s.yaml", "--name", "a b"], ["--name 'a b'", "letters, digits"]),
    ("name-parent", ["s.yaml", "--name", "../x"], ["--name '../x'"]),
    ("name-empty", ["s.yaml", "--name", ""], ["--name ''"]),
    ("name-dot", ["s.yaml", "--name", "."], ["--name '.'"]),
    ("study-dir-empty", ["s.yaml", "--study-dir", ""], ["--study-dir ''"]),
    ("resume-empty", ["--resume", ""], ["--resume ''"]),
    ("report-only-max-jobs", ["--resume", "d", "--report-only", "--max-jobs", "3"], ["--max-jobs", "--report-only"]),
    ("report-only-address", ["--resume", "d", "--report-only", "--address", "auto"], ["--address"]),
    ("unknown-flag", ["s.yaml", "--run-dir", "x"], ["unrecognized arguments", "nas-fidelity --help"]),
    ("stem-unusable", ["my study.yaml"], ["'my study'", "pass --name NAME"]),
    ("study-missing", ["no-such-study.yaml", "--study-dir", "run"], ["no-such-study.yaml", "fidelity-cifar.yaml"]),
    # --address is checked before anything is read (a non-ASCII digit once crashed int())
    ("address-superscript-port", ["s.yaml", "--address", "host:\u00b2"], ["Bad cluster address 'host:\u00b2'"]),
    ("address-arabic-digit", ["s.yaml", "--address", "host:\u0663"], ["Bad cluster address"]),
    ("address-empty", ["s.yaml", "--address", ""], ["Bad cluster address ''"]),
    ("address-ipv6-unclosed", ["s.yaml", "--address", "[::1"], ["Bad cluster address '[::1'"]),
    ("address-space", ["s.yaml", "--address", "my host:6379"], ["Bad cluster address"]),
]


@pytest.mark.parametrize("name, argv, needles", FLAG_ROWS, ids=[r[0] for r in FLAG_ROWS])
def test_bad_flags_are_one_paragraph(capsys, tmp_path, monkeypatch, name, argv, needles):
    monkeypatch.chdir(tmp_path)
    flat = refused(capsys, argv, *needles)
    assert "nas-search" not in flat
    assert not any(tmp_path.iterdir())  # nothing created


def test_every_flag_has_help_text():
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert len(actions) == 7
    for a in actions:
        assert a.help and len(a.help) > 20, a.dest


def test_a_study_folder_that_is_a_directory_is_refused(capsys, tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    refused(capsys, [tmp_path / "dir.yaml", "--study-dir", tmp_path / "run"], "a folder, not a YAML file")


# ------------------------------------------------------------------------------------------ folders
@pytest.mark.parametrize("mine", ["fidelity.md", "fidelity.json", "scatter.png", "notes.txt", "architectures.jsonx"])
def test_a_folder_that_is_not_a_study_is_never_adopted(capsys, template, tmp_path, mine):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / mine).write_text("the user's own file")
    for argv in (
        [template / "study.yaml", "--study-dir", folder, "--address", NOWHERE],
        ["--resume", folder],
        ["--report-only", "--resume", folder],
    ):
        refused(capsys, argv, str(folder), "not a study directory")
    assert [p.name for p in folder.iterdir()] == [mine]  # no driver.lock, nothing replaced
    assert (folder / mine).read_text() == "the user's own file"


def test_a_search_run_directory_is_not_a_study(capsys, template, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "experiment.json").write_text("{}")
    refused(capsys, [template / "study.yaml", "--study-dir", run], "run directory of a search")
    assert [p.name for p in run.iterdir()] == ["experiment.json"]


def test_a_study_folder_that_is_a_file_or_a_dangling_link(capsys, template, tmp_path):
    (tmp_path / "file").write_text("x")
    refused(capsys, [template / "study.yaml", "--study-dir", tmp_path / "file"], "is a file, not a folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused(capsys, [template / "study.yaml", "--study-dir", tmp_path / "dangling"], "dangling symbolic link")
    assert (tmp_path / "file").read_text() == "x" and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", ["scatter.png", "fidelity.md", "fidelity.json"])
def test_a_link_where_the_report_goes_is_never_followed(capsys, study_dir, tmp_path, name):
    target = tmp_path / "precious"
    target.write_text("keep me")
    (study_dir / name).symlink_to(target)
    refused(capsys, ["--report-only", "--resume", study_dir], name, "symbolic link", "nothing was written")
    assert target.read_text() == "keep me" and (study_dir / name).is_symlink()
    assert not any((study_dir / n).exists() for n in ("fidelity.md", "fidelity.json", "scatter.png") if n != name)


def test_a_folder_where_the_report_goes_is_refused(capsys, study_dir):
    (study_dir / "scatter.png").mkdir()
    refused(capsys, ["--report-only", "--resume", study_dir], "scatter.png", "a folder")


@pytest.mark.parametrize("name", ["study.json", "architectures.json", "jobs.jsonl"])
def test_a_study_file_that_is_a_link_is_refused(capsys, study_dir, tmp_path, name):
    moved = tmp_path / f"elsewhere-{name}"
    (study_dir / name).rename(moved)
    (study_dir / name).symlink_to(moved)
    before = moved.read_bytes()
    refused(capsys, ["--report-only", "--resume", study_dir], name, "symbolic link")
    assert moved.read_bytes() == before


def test_the_report_replaces_its_own_earlier_report(capsys, study_dir):
    (study_dir / "fidelity.md").write_text("an earlier report")
    out = report(capsys, study_dir)
    assert "Kendall tau" in out and "Kendall tau" in (study_dir / "fidelity.md").read_text()
    png = (study_dir / "scatter.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert not [p for p in study_dir.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


# ------------------------------------------------------------------------------------------ study.json
STUDY_JSON_ROWS = [
    ("empty", lambda d: b"", ["not JSON"]),
    ("not-json", lambda d: b"study: yes\n", ["not JSON"]),
    ("binary", lambda d: b"\x00\xff\xfe\x00", ["damaged or not one of ours"]),
    ("list", lambda d: b"[1, 2]", ["not a JSON object"]),
    ("nan-fingerprint", lambda d: _json(d, fingerprint="NAN_TOKEN"), ["NaN"]),
    ("fingerprint-number", lambda d: _json(d, fingerprint=5), ["`fingerprint`"]),
    ("fingerprint-foreign", lambda d: _json(d, fingerprint="not-ours"), ["fingerprint"]),
    ("missing-source", lambda d: _json(d, source=None), ["`source`"]),
    ("source-list", lambda d: _json(d, source=[1]), ["`source`"]),
    ("source-no-space", lambda d: _json(d, source={"study": {}}), ["source.study.space"]),
    ("file-number", lambda d: _json(d, file=3), ["`file`"]),
    ("format-newer", lambda d: _json(d, format=3), ["format 3", "newer coatnas"]),
    ("format-text", lambda d: _json(d, format="2"), ["format"]),
    ("format-zero", lambda d: _json(d, format=0), ["format 0"]),
    ("unknown-key", lambda d: _json(d, extra=1), ["'extra'"]),
    ("trials-line", lambda d: b'{"id": "abc", "number": 0, "status": "ok", "score": 0.5}', ["'id'"]),
    ("source-invalid", lambda d: _json(d, source=_source_with(d, {"study": {"seed": -1}})), ["cannot be loaded"]),
    ("fingerprint-other", lambda d: _json(d, fingerprint="0123456789abcdef"), ["does not resolve to the study"]),
    ("duplicate-key", lambda d: _json(d).replace(b"{", b'{"file": null, ', 1), ["'file' twice"]),
]


def _json(d: Path, **changes) -> bytes:
    saved = json.loads((d / "study.json").read_text())
    for k, v in changes.items():
        if v is None:
            saved.pop(k, None)
        else:
            saved[k] = v
    return json.dumps(saved).replace('"NAN_TOKEN"', "NaN").encode()


def _source_with(d: Path, over: dict) -> dict:
    source = json.loads((d / "study.json").read_text())["source"]
    source["study"] = {**source["study"], **over["study"]}
    return source


@pytest.mark.parametrize("name, make, needles", STUDY_JSON_ROWS, ids=[r[0] for r in STUDY_JSON_ROWS])
def test_damaged_study_json_is_one_paragraph(capsys, study_dir, name, make, needles):
    data = make(study_dir)
    (study_dir / "study.json").write_bytes(data)
    jobs = (study_dir / "jobs.jsonl").read_bytes()
    flat = refused(capsys, ["--report-only", "--resume", study_dir], "study.json", *needles)
    assert "nas-search" not in flat
    assert (study_dir / "study.json").read_bytes() == data and (study_dir / "jobs.jsonl").read_bytes() == jobs
    assert not (study_dir / "fidelity.md").exists()


def test_study_json_truncated_at_every_byte_is_refused(study_dir):
    full = (study_dir / "study.json").read_bytes()
    sdir = StudyDir(study_dir)
    for n in range(0, len(full), 7):  # every 7th byte of ~5 KB (every byte of the short files below)
        (study_dir / "study.json").write_bytes(full[:n])
        with pytest.raises(UserError) as err:
            sdir.read_record()
        assert "study.json" in one_paragraph(str(err.value))
    (study_dir / "study.json").write_bytes(full)
    assert sdir.read_record().fingerprint


# ------------------------------------------------------------------------------------------ architectures.json
def _archs(d: Path) -> list[dict]:
    return json.loads((d / "architectures.json").read_text())["architectures"]


ARCH_ROWS = [
    ("empty", lambda d: b"", ["not JSON"]),
    ("not-json", lambda d: b"{[", ["not JSON"]),
    ("number", lambda d: b"5", ["not a list of architectures"]),
    ("one", lambda d: json.dumps(_archs(d)[:1]).encode(), ["1 architecture(s)"]),
    ("twice", lambda d: json.dumps(_archs(d)[:1] * 2).encode(), ["are the same"]),
    ("nan", lambda d: json.dumps(_archs(d)).replace("2.0", "NaN", 1).encode(), ["NaN"]),
    ("layout-number", lambda d: json.dumps([{**_archs(d)[0], "layout": 5}, *_archs(d)[1:]]).encode(), ["layout"]),
    ("depths-text", lambda d: json.dumps([{**_archs(d)[0], "depths": "2"}, *_archs(d)[1:]]).encode(), ["depths"]),
    ("unknown-key", lambda d: json.dumps([{**_archs(d)[0], "colour": 1}, *_archs(d)[1:]]).encode(), ["colour"]),
    ("mapping-no-format", lambda d: json.dumps({"architectures": _archs(d)}).encode(), ["without `format`"]),
    ("format-newer", lambda d: json.dumps({"format": 9, "architectures": _archs(d)}).encode(), ["newer coatnas"]),
    (
        "other-space",
        lambda d: json.dumps([{**_archs(d)[0], "widths": [8, 16, 16, 999, 32]}, *_archs(d)[1:]]).encode(),
        ["not a candidate"],
    ),
]


@pytest.mark.parametrize("name, make, needles", ARCH_ROWS, ids=[r[0] for r in ARCH_ROWS])
def test_damaged_architectures_json_is_one_paragraph(capsys, study_dir, name, make, needles):
    data = make(study_dir)
    (study_dir / "architectures.json").write_bytes(data)
    refused(capsys, ["--report-only", "--resume", study_dir], "architectures.json", *needles)
    assert (study_dir / "architectures.json").read_bytes() == data


def test_a_missing_architecture_list_is_one_paragraph(capsys, study_dir):
    (study_dir / "architectures.json").unlink()
    refused(capsys, ["--report-only", "--resume", study_dir], "has no architectures.json")


def test_architectures_json_truncated_at_every_byte_is_refused(study_dir):
    short = json.dumps(_archs(study_dir)[:2], separators=(",", ":")).encode()  # a short format-1 list
    path = study_dir / "architectures.json"
    sdir = StudyDir(study_dir)
    for n in range(len(short)):
        path.write_bytes(short[:n])
        with pytest.raises(UserError) as err:
            sdir.read_architectures()
        assert "architectures.json" in one_paragraph(str(err.value))
    path.write_bytes(short)
    assert len(sdir.read_architectures()) == 2


# ------------------------------------------------------------------------------------------ jobs.jsonl
def _lines(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "jobs.jsonl").read_text().splitlines()]


def _with_line(d: Path, i: int, **changes) -> bytes:
    """jobs.jsonl with line ``i`` changed (a value ``...`` deletes the key)."""
    lines = _lines(d)
    for k, v in changes.items():
        if v is ...:
            lines[i].pop(k, None)
        else:
            lines[i][k] = v
    return "".join(json.dumps(x).replace('"NAN_TOKEN"', "NaN") + "\n" for x in lines).encode()


# line 0 is a zero-cost job, line 4 a proxy training, line 8 a reference training
JOBS_ROWS = [
    ("not-json", lambda d: _replace_line(d, 1, b"{oops"), ["line 2", "not JSON"]),
    ("binary", lambda d: _replace_line(d, 1, b"\x00\xff"), ["line 2"]),
    ("list", lambda d: _replace_line(d, 1, b"[1, 2]"), ["line 2", "not a JSON object"]),
    ("nan-score", lambda d: _with_line(d, 4, score="NAN_TOKEN"), ["line 5", "NaN"]),
    ("nan-zero-cost", lambda d: _with_line(d, 0, zero_cost={"params": "NAN_TOKEN"}), ["line 1", "NaN"]),
    ("infinite-score", lambda d: _with_line(d, 4, score=1e999), ["line 5", "finite"]),
    ("score-text", lambda d: _with_line(d, 4, score="0.5"), ["line 5", "`score`"]),
    ("score-missing", lambda d: _with_line(d, 4, score=...), ["line 5", "without its `score`"]),
    ("seed-text", lambda d: _with_line(d, 4, seed="0"), ["line 5", "`seed`"]),
    ("seed-negative", lambda d: _with_line(d, 4, seed=-1), ["line 5", "`seed`"]),
    ("seed-bool", lambda d: _with_line(d, 4, seed=False), ["line 5", "`seed`"]),
    ("status-unknown", lambda d: _with_line(d, 4, status="great"), ["line 5", "status 'great'"]),
    ("kind-unknown", lambda d: _with_line(d, 4, kind="verify"), ["line 5", "kind 'verify'"]),
    ("kind-missing", lambda d: _with_line(d, 4, kind=...), ["line 5", "'kind' is missing"]),
    ("kind-protocol-mismatch", lambda d: _with_line(d, 4, kind="zero_cost"), ["line 5", "does not go with"]),
    ("key-mismatch", lambda d: _with_line(d, 4, key="abc/p1/0"), ["line 5", "its key"]),
    ("arch-id-missing", lambda d: _with_line(d, 4, arch_id=...), ["line 5", "'arch_id' is missing"]),
    ("unknown-key", lambda d: _with_line(d, 4, colour="red"), ["line 5", "'colour'"]),
    ("metrics-list", lambda d: _with_line(d, 4, metrics=[1]), ["line 5", "`metrics`"]),
    ("history-mapping", lambda d: _with_line(d, 4, history={"a": 1}), ["line 5", "`history`"]),
    ("zero-cost-list", lambda d: _with_line(d, 0, zero_cost=[1]), ["line 1", "`zero_cost`"]),
    ("zero-cost-missing", lambda d: _with_line(d, 0, zero_cost=...), ["line 1", "without its `zero_cost`"]),
    ("format-newer", lambda d: _with_line(d, 4, format=3), ["line 5", "newer coatnas"]),
    ("format-text", lambda d: _with_line(d, 4, format="two"), ["line 5", "format"]),
    ("duplicate-key", lambda d: _replace_line(d, 4, _raw_line(d, 4)[:-1] + b', "score": 0.99}'), ["line 5", "twice"]),
    (
        "trials-line",
        lambda d: _replace_line(d, 1, b'{"id": "a", "number": 0, "status": "ok", "score": 0.5}'),
        ["line 2"],
    ),
    ("foreign-arch", lambda d: _with_line(d, 4, arch_id="0123456789ab", key="0123456789ab/p1/0"), ["another study's"]),
    ("foreign-protocol", lambda d: _rekey(d, 4, protocol="p9"), ["no protocol 'p9'", "another study's"]),
    ("foreign-seed", lambda d: _rekey(d, 4, seed=7), ["no seed 7"]),
    (
        "duplicate",
        lambda d: (d / "jobs.jsonl").read_bytes() + (d / "jobs.jsonl").read_bytes().split(b"\n")[4] + b"\n",
        ["more than once"],
    ),
    ("ref-metric-missing", lambda d: _with_line(d, 8, metrics={"wall_s": 1.0}), ["cap_train_loss", "reference axes"]),
    (
        "ref-metric-null",
        lambda d: _with_line(d, 8, metrics={**_lines(d)[8]["metrics"], "gen_val_acc": None}),
        ["gen_val_acc"],
    ),
]


def _raw_line(d: Path, i: int) -> bytes:
    return (d / "jobs.jsonl").read_bytes().split(b"\n")[i]


def _replace_line(d: Path, i: int, raw: bytes) -> bytes:
    lines = (d / "jobs.jsonl").read_bytes().split(b"\n")
    lines[i] = raw
    return b"\n".join(lines)


def _rekey(d: Path, i: int, **changes) -> bytes:
    line = {**_lines(d)[i], **changes}
    line["key"] = f"{line['arch_id']}/{line['protocol']}/{line['seed']}"
    return _with_line(d, i, **{k: line[k] for k in (*changes, "key")})


@pytest.mark.parametrize("name, make, needles", JOBS_ROWS, ids=[r[0] for r in JOBS_ROWS])
def test_damaged_jobs_jsonl_is_one_paragraph(capsys, study_dir, name, make, needles):
    data = make(study_dir)
    (study_dir / "jobs.jsonl").write_bytes(data)
    flat = refused(capsys, ["--report-only", "--resume", study_dir], "jobs.jsonl", *needles)
    assert "nas-search" not in flat
    assert (study_dir / "jobs.jsonl").read_bytes() == data  # refused, never rewritten
    assert not (study_dir / "fidelity.md").exists()


def test_metric_of_any_json_shape_is_kept(capsys, study_dir):
    """A custom trainer may report a text or a nested metric: kept as it is, not refused."""
    (study_dir / "jobs.jsonl").write_bytes(_with_line(study_dir, 4, metrics={"wall_s": 1.0, "device": "cpu", "m": [1]}))
    report(capsys, study_dir)
    assert StudyDir(study_dir).read_records()[4].metrics == {"wall_s": 1.0, "device": "cpu", "m": [1]}


def test_jobs_jsonl_truncated_at_every_byte_keeps_the_whole_lines_and_repairs_the_tail(study_dir):
    """A short jobs.jsonl cut at every byte: the whole lines are read; the torn last line is skipped, and
    before the next append it is cut off into jobs.jsonl.torn; a whole last line that lacks its newline gets
    one. The new record always lands on its own line and nothing whole is lost."""
    lines = (study_dir / "jobs.jsonl").read_bytes().split(b"\n")[:2]
    short = lines[0] + b"\n" + lines[1] + b"\n"
    path = study_dir / "jobs.jsonl"
    torn = study_dir / "jobs.jsonl.torn"
    sdir = StudyDir(study_dir)
    new = JobRecord.from_json(json.loads(lines[1]))
    for n in range(len(short) + 1):
        path.write_bytes(short[:n])
        torn.unlink(missing_ok=True)
        whole = short[:n].count(b"\n") + (1 if n in (len(lines[0]), len(short) - 1) else 0)
        recs = sdir.read_records()
        assert len(recs) == whole, n
        sdir.append(new)
        after = sdir.read_records()
        assert len(after) == whole + 1 and after[-1] == new, n
        assert path.read_bytes().endswith(b"\n") and all(json.loads(x) for x in path.read_bytes().splitlines() if x)
        fragment = short[:n].rsplit(b"\n", 1)[-1] if n not in (len(lines[0]), len(short) - 1) else b""
        assert (torn.read_bytes() == fragment + b"\n") if fragment else not torn.exists(), n


def test_blank_lines_are_skipped(capsys, study_dir):
    path = study_dir / "jobs.jsonl"
    path.write_bytes(b"\n" + path.read_bytes().replace(b"\n", b"\n\n", 3))
    report(capsys, study_dir)
    assert len(StudyDir(study_dir).read_records()) == 16


def test_a_failed_job_without_scores_is_counted_not_refused(capsys, study_dir):
    lines = _lines(study_dir)
    lines[4] = {k: lines[4][k] for k in ("format", "kind", "key", "arch_id", "arch", "layout", "protocol", "seed")}
    lines[4].update(status="error", reason="worker lost: killed", metrics={})
    (study_dir / "jobs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report(capsys, study_dir)
    res = json.loads((study_dir / "fidelity.json").read_text())
    assert res["failed"] == {"p1": 1} and res["proxies"]["p1"]["score"]["n"] == 3


def test_worker_result_that_cannot_be_recorded_becomes_an_error_record(study_dir):
    """A custom trainer returning a NaN score: recorded as an error (with why), never as a NaN line."""
    rec = {**_lines(study_dir)[4], "score": math.nan}
    del rec["format"], rec["kind"]
    out = StudyDir(study_dir).append(rec)
    assert out.status == "error" and "score" in out.reason
    assert "NaN" not in (study_dir / "jobs.jsonl").read_text()
    assert StudyDir(study_dir).read_records()[-1] == out


# ------------------------------------------------------------------------------------------ today's format
def test_todays_study_directory_is_read_as_the_current_format(capsys, old_dir, study_dir):
    """study.json format 1, a bare architecture list, job lines without format or kind and with NaN (a
    zero-cost proxy without a value): read as format 2, the same records and the same report."""
    old, new = StudyDir(old_dir), StudyDir(study_dir)
    assert old.read_record() == new.read_record()
    assert old.read_architectures() == new.read_architectures()
    assert old.read_records() == new.read_records()
    zc = old.read_records()[0]
    assert zc.kind == "zero_cost" and math.isnan(zc.zero_cost["jacov"])
    assert {r.kind for r in old.read_records()[4:]} == {"train"}
    report(capsys, old_dir)
    report(capsys, study_dir)
    a, b = (json.loads((d / "fidelity.json").read_text()) for d in (old_dir, study_dir))
    assert a == b and a["zero_cost"]["jacov"]["score"]["n"] == 0
    # a record appended to today's file is format 2; the mixed file reads whole
    rec = old.read_records()[5]
    text = (old_dir / "jobs.jsonl").read_text()
    (old_dir / "jobs.jsonl").write_text(text.replace(text.splitlines()[5] + "\n", ""))
    old.append(rec)
    assert old.read_records()[-1] == rec and json.loads(text.splitlines()[0]).get("format") is None
    assert json.loads((old_dir / "jobs.jsonl").read_text().splitlines()[-1])["format"] == 2


def test_a_nan_in_a_format_2_line_is_refused_but_not_in_a_format_1_line(study_dir):
    d = _lines(study_dir)[0]
    assert JobRecord.from_json({k: v for k, v in d.items() if k not in ("format", "kind")}).kind == "zero_cost"
    from nas.fidelity.studydir import OLD_NAN
    from nas.fsio import Invalid

    old = {k: v for k, v in d.items() if k not in ("format", "kind")}
    assert math.isnan(JobRecord.from_json({**old, "zero_cost": {"params": OLD_NAN}}).zero_cost["params"])
    with pytest.raises(Invalid, match="NaN"):
        JobRecord.from_json({**d, "zero_cost": {"params": OLD_NAN}})


def test_a_format_1_study_json_without_format_key_is_read(capsys, old_dir):
    saved = json.loads((old_dir / "study.json").read_text())
    del saved["format"]
    (old_dir / "study.json").write_text(json.dumps(saved))
    assert report(capsys, old_dir)


def test_today_study_with_a_proxy_named_zero_cost_is_refused_with_its_fix(capsys, old_dir):
    """A study started before the names were checked, with a proxy named zero_cost (never trained then)."""
    saved = json.loads((old_dir / "study.json").read_text())
    saved["source"]["proxies"] = {"zero_cost": {"train": {"steps": 2}}}
    (old_dir / "study.json").write_text(json.dumps(saved))
    refused(capsys, ["--report-only", "--resume", old_dir], "cannot be loaded", "`proxies.zero_cost`", "rename it")


# ------------------------------------------------------------------------------------------ real Ray
def test_resuming_todays_study_on_ray_appends_format_2_and_keeps_every_record(capsys, template, tmp_path, ray_local):
    """Today's study directory, two jobs missing and a torn last line: resumed on Ray, the torn line is cut
    into jobs.jsonl.torn, the two jobs run, every earlier record is kept and the new ones are format 2."""
    d = tmp_path / "old"
    shutil.copytree(template / "v1", d)
    jobs = d / "jobs.jsonl"
    lines = jobs.read_text().splitlines()
    kept = [lines[0], *lines[2:-1]]  # a zero-cost job and the last reference training are missing
    jobs.write_text("\n".join(kept) + "\n" + lines[-1][:30])
    rc = main(["--resume", str(d)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    recs = StudyDir(d).read_records()
    assert len(recs) == 16 and len({r.key for r in recs}) == 16
    after = jobs.read_text().splitlines()
    assert after[: len(kept)] == kept  # nothing recorded was rewritten
    assert all(json.loads(x)["format"] == 2 for x in after[len(kept) :])
    assert (d / "jobs.jsonl.torn").read_text() == lines[-1][:30] + "\n"
    assert (d / "fidelity.md").is_file() and "Kendall tau" in out
    assert not os.path.exists(d / "jobs.jsonl.tmp")


# ------------------------------------------------------------------------------------------ reruns without Ray
def test_rerunning_a_finished_study_trains_nothing_and_reports(capsys, template, study_dir):
    before = (study_dir / "jobs.jsonl").read_bytes()
    rc = main([str(template / "study.yaml"), "--study-dir", str(study_dir), "--address", NOWHERE])
    out, err = capsys.readouterr()
    assert rc == 0, err  # every job recorded: no Ray is started (the address would refuse)
    assert "Kendall tau" in out and (study_dir / "jobs.jsonl").read_bytes() == before


def test_another_study_in_a_study_directory_is_refused(capsys, template, study_dir, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    other = tmp_path / "other.yaml"
    other.write_text(study_text().replace("steps: 40", "steps: 41"))

    def files():  # the study's files (driver.lock: the lock a driver takes, ours)
        return sorted((p.name, p.read_bytes()) for p in study_dir.iterdir() if p.name != "driver.lock")

    before = files()
    refused(capsys, [other, "--study-dir", study_dir], "other settings", f"nas-fidelity --resume {study_dir}")
    refused(capsys, [other, "--study-dir", study_dir, "--report-only"], "other settings")
    assert files() == before


def test_a_study_without_jobs_reports_nothing_yet(capsys, study_dir):
    (study_dir / "jobs.jsonl").unlink()
    out = report(capsys, study_dir)
    assert "0 architectures with a reference result" in out


def test_a_damaged_report_json_is_recomputed_not_trusted(capsys, study_dir):
    from nas.fidelity import format_tables_of

    report(capsys, study_dir)
    good = format_tables_of(study_dir)
    for junk in (b"", b"{", b"[1]", b'{"rows": 5}', b"\xff"):
        (study_dir / "fidelity.json").write_bytes(junk)
        assert format_tables_of(study_dir) == good


# ------------------------------------------------------------------------------------------ special files
@pytest.mark.parametrize("kind", ["fifo", "device", "dangling-link"])
def test_a_study_or_space_file_that_is_not_a_regular_file_is_never_read(capsys, tmp_path, kind):
    """A FIFO (which would block the read), a device (/dev/zero: endless) or a dangling link, as the study
    YAML or as the search YAML it names: one paragraph saying what it is, nothing created."""
    special = tmp_path / "special.yaml"
    if kind == "fifo":
        os.mkfifo(special)
    elif kind == "device":
        special = Path("/dev/zero")
    else:
        special.symlink_to(tmp_path / "nowhere.yaml")
    what = "a dangling symbolic link" if kind == "dangling-link" else "not a regular file"
    flat = refused(capsys, [special, "--study-dir", tmp_path / "run"], f"Study file '{special}' is {what}")
    assert "neither an existing file" not in flat
    (tmp_path / "study.yaml").write_text(study_text().replace("space.yaml", str(special)))
    refused(capsys, [tmp_path / "study.yaml", "--study-dir", tmp_path / "run"], f"'{special}' is {what}")
    assert not (tmp_path / "run").exists()


def test_a_moved_trainer_module_names_its_new_place(capsys, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE.replace("search: {", "search: {trainer: 'trainers.proxy:nope', "))
    (tmp_path / "study.yaml").write_text(study_text())
    refused(
        capsys,
        [tmp_path / "study.yaml", "--study-dir", tmp_path / "run"],
        "`search.trainer`",
        "now trainers.training.proxy",
        "trainers.proxy:train_candidate, which recorded runs hold, stays valid",
    )


# ------------------------------------------------------------------------------------------ appends
@pytest.mark.parametrize("place", ["link", "fifo"])
def test_a_torn_tail_that_cannot_be_cut_off_is_refused_before_anything_trains(capsys, study_dir, tmp_path, place):
    """jobs.jsonl ends with a torn line and jobs.jsonl.torn (where it is kept) is a link or a FIFO: refused
    before any job runs (Ray is never reached: the address would refuse), nothing changed, the link's target
    untouched. Before, the refusal came after the first job had trained, and that job was lost."""
    jobs = study_dir / "jobs.jsonl"
    lines = jobs.read_bytes().split(b"\n")
    data = b"\n".join(lines[:10]) + b"\n" + lines[10][:25]  # jobs to run, and a torn last line
    jobs.write_bytes(data)
    torn = study_dir / "jobs.jsonl.torn"
    target = tmp_path / "precious"
    target.write_text("keep me")
    if place == "link":
        torn.symlink_to(target)
    else:
        os.mkfifo(torn)
    refused(
        capsys,
        ["--resume", study_dir, "--address", NOWHERE],
        "torn line",
        "jobs.jsonl.torn",
        "symbolic link" if place == "link" else "FIFO",
        "nothing was trained or changed",
    )
    assert jobs.read_bytes() == data and target.read_text() == "keep me"


def test_a_whole_format_1_last_line_with_nan_is_kept_when_appending(study_dir):
    """A format-1 line (NaN where a zero-cost proxy had no value) that only lacks its newline is a whole
    record: an append gives it its newline, never cuts it off as torn (its finished job would be lost)."""
    lines = _lines(study_dir)
    old = {k: v for k, v in lines[0].items() if k not in ("format", "kind")}
    old["zero_cost"] = {**old["zero_cost"], "params": "NAN_TOKEN"}
    body = "".join(json.dumps(x) + "\n" for x in lines[1:]) + json.dumps(old).replace('"NAN_TOKEN"', "NaN")
    (study_dir / "jobs.jsonl").write_text(body)
    sdir = StudyDir(study_dir)
    before = sdir.read_records()
    assert len(before) == 16 and math.isnan(before[-1].zero_cost["params"])
    sdir.append(before[3])
    after = sdir.read_records()
    assert len(after) == 17 and after[15].key == before[15].key and after[16] == before[3]
    assert not (study_dir / "jobs.jsonl.torn").exists()


def test_an_append_never_blocks_on_a_fifo_nor_writes_into_one(tmp_path):
    """ray.log (or any log) that is a FIFO: with no reader the open would block forever; with one, the lines
    would go to whoever reads. Both are an OSError at once, which the Ray start-up log sink swallows."""
    from nas.fsio import append_line
    from nas.runtime.raylog import _give

    fifo = tmp_path / "ray.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        append_line(fifo, "no reader\n")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError, match="FIFO"):
            append_line(fifo, "a reader\n")
        assert os.read(reader, 100) == b""
        _give(["notice"], lambda line: append_line(fifo, line + "\n"))  # the sink of nas.runtime.raylog
    finally:
        os.close(reader)
