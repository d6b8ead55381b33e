"""nas-search / nas-export / nas-report command lines: user mistakes give one paragraph and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import export as export_cli
from nas.cli import report as report_cli
from nas.cli import search as search_cli
from nas.search import RunDir, load_experiment
from nas.search.rundir import RunMeta

BIN = Path(sys.executable).parent


def _recorded_run(space: Path, run_dir: Path) -> RunDir:
    """A run directory as a search leaves it before its first trial (no Ray needed)."""
    exp = load_experiment(space)
    rd = RunDir(run_dir)
    rd.path.mkdir(parents=True)
    rd.write_experiment(exp, "r")
    rd.write_meta(
        RunMeta.from_json(
            {"format": 1, "name": "r", "fingerprint": exp.space.fingerprint(), "source": str(space), "sessions": []}
        )
    )
    return rd


def _one_paragraph_error(err: str, prog: str = "nas-search") -> str:
    assert "Traceback" not in err
    assert err.startswith(f"{prog}: error: ")
    assert "\n\n" not in err.strip()
    return " ".join(err.split())


def _main(module, argv, capsys) -> tuple[int, str, str]:
    try:
        rc = module.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


BAD_SPACES = [
    ("unknown key", "space:\n  input: {image_size: 32}\n  stagez: {}\n", "space.stagez", "Did you mean `stages`"),
    ("bad sampler", None, "search.sampler", "'tpe'"),
    ("bad trials", "trials", "search.trials", "an integer >= 1"),
    ("not yaml", "space: [unclosed\n", "not valid YAML", "line"),
]


@pytest.mark.parametrize("case,text,key,hint", BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_bad_space_file(case, text, key, hint, write_space, tmp_path, capsys):
    path = write_space()
    if text is None:
        path.write_text(path.read_text().replace("sampler: random", "sampler: bayes"))
    elif text == "trials":
        path.write_text(path.read_text().replace("trials: 4", "trials: 0"))
    else:
        path.write_text(text)
    rc, _, err = _main(search_cli, ["--space", str(path), "--run-dir", str(tmp_path / "r")], capsys)
    assert rc == 2
    msg = _one_paragraph_error(err)
    assert str(path) in msg and key in msg and hint in msg
    assert not (tmp_path / "r").exists()


def test_missing_space_names_the_bundled_ones(capsys):
    rc, _, err = _main(search_cli, ["--space", "no-such-space.yaml", "--dry-run"], capsys)
    assert rc == 2 and "coatnet.yaml" in _one_paragraph_error(err)


def test_bad_run_dirs(write_space, tmp_path, capsys):
    rc, _, err = _main(search_cli, ["--resume", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "experiment.json" in _one_paragraph_error(err)
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = _main(search_cli, ["--space", str(write_space()), "--run-dir", str(afile)], capsys)
    assert rc == 2 and "not a folder" in _one_paragraph_error(err)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    rc, _, err = _main(search_cli, ["--space", str(write_space()), "--run-dir", str(busy)], capsys)
    assert rc == 2 and "holds other files" in _one_paragraph_error(err)
    rc, _, err = _main(search_cli, [], capsys)
    assert rc == 2 and "--space" in _one_paragraph_error(err)
    rc, _, err = _main(search_cli, ["--space", "coatnet.yaml", "--trials", "0"], capsys)
    assert rc == 2 and "--trials" in _one_paragraph_error(err)
    rc, _, err = _main(search_cli, ["--space", "coatnet.yaml", "--sampler", "bayes"], capsys)
    assert rc == 2 and "--sampler" in _one_paragraph_error(err)


def test_resume_with_changed_space_is_refused_with_the_diff(write_space, tmp_path, capsys):
    path = write_space()
    _recorded_run(path, tmp_path / "r")
    path.write_text(path.read_text().replace("width: [8, 16]", "width: [8, 24]").replace("epochs: 1", "epochs: 2"))
    rc, _, err = _main(search_cli, ["--space", str(path), "--resume", str(tmp_path / "r")], capsys)
    msg = _one_paragraph_error(err)
    assert rc == 2
    assert "space.stages.S1.width: [8, 16] -> [8, 24]" in msg and "train.epochs: 1 -> 2" in msg
    assert "--name" in msg  # says how to start a new run instead


def test_corrupted_trials_file_is_named(write_space, tmp_path, capsys):
    rd = _recorded_run(write_space(), tmp_path / "r")
    rd.trials_jsonl.write_text('{"broken\n{"id": "x", "arch": {}}\n')
    rc, _, err = _main(report_cli, [str(rd.path)], capsys)
    msg = _one_paragraph_error(err, "nas-report")
    assert rc == 2 and "trials.jsonl" in msg and "line 1" in msg


def test_dry_run_prints_size_and_candidates_without_ray(write_space, capsys):
    rc, out, _ = _main(
        search_cli, ["--space", str(write_space(max_params=18000)), "--dry-run", "--samples", "12"], capsys
    )
    assert rc == 0
    assert "24 candidates" in out and "max_params 18000" in out
    lines = [l for l in out.splitlines() if "params" in l and "MACs" in l and "id " in l]
    assert len(lines) == 12
    assert any("OVER BUDGET" in l for l in lines) and any("OVER BUDGET" not in l for l in lines)
    code = (
        "import sys; from nas.cli.search import main; rc = main(['--space', 'coatnet.yaml', '--dry-run']); "
        "print('ray imported' if 'ray' in sys.modules else 'no ray', rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().endswith("no ray 0"), proc.stdout + proc.stderr


def test_export_cli_errors(write_space, tmp_path, capsys):
    rc, _, err = _main(export_cli, [str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.yaml")], capsys)
    assert rc == 2 and "no such run directory" in _one_paragraph_error(err, "nas-export")
    rd = _recorded_run(write_space(), tmp_path / "r")
    rc, _, err = _main(export_cli, [str(rd.path), "--out", str(tmp_path / "m.yaml")], capsys)
    assert rc == 2 and "no successful trial" in _one_paragraph_error(err, "nas-export")
    rc, _, err = _main(export_cli, [str(rd.path), "--rank", "1", "--trial", "3"], capsys)
    assert rc == 2 and "not allowed with" in _one_paragraph_error(err, "nas-export")


def test_real_process_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  stages: {S5: {}}\n")
    proc = subprocess.run([str(BIN / "nas-search"), "--space", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    _one_paragraph_error(proc.stderr)
    assert proc.stdout == ""
