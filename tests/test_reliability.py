"""Issue 10: repairs leave files the next command accepts, signals stop a real Ray run cleanly without
orphaned Ray processes, writes never destroy anything (also when the disk is full), and the YAML loader
lets nothing but a UserError escape (a hypothesis property test).

Every damage docs/search.md lists ("Damaged run directories") has a test here that applies it to a copy of
one finished run, runs the command the docs name (or the recovery step the message names) and then a
second command that must succeed."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nas.cli.export import main as export_cli
from nas.cli.report import main as report_cli
from nas.cli.search import main as search_cli
from nas.errors import UserError
from nas.search import RunDir, run

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_SPACE  # noqa: E402

BIN = Path(sys.executable).parent
SPACE = TINY_SPACE.replace("MAX_PARAMS", "null").replace("SAMPLER", "random").replace("EPOCHS", "1")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, request):
    """A finished 3-trial run (space file next to it), built once with the session's Ray."""
    request.getfixturevalue("ray_local")
    root = tmp_path_factory.mktemp("rel")
    (root / "space.yaml").write_text(SPACE)
    res = run(str(root / "space.yaml"), run_dir=str(root / "run"), trials=3, progress=False)
    assert res.completed == 3
    return root


@pytest.fixture
def rd(finished, tmp_path):
    """A private copy of the finished run (and its space file)."""
    shutil.copy(finished / "space.yaml", tmp_path / "space.yaml")
    shutil.copytree(finished / "run", tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "experiment.json").read_text())
    meta["source"] = str(tmp_path / "space.yaml")
    (tmp_path / "run" / "experiment.json").write_text(json.dumps(meta))
    return tmp_path / "run"


def _cli(main, argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, " ".join(err.split())


def _resume_ok(rd: Path, capsys, trials: int = 3) -> str:
    """The next commands must accept the run: a resume (nothing left to train), an export and a report."""
    rc, out, err = _cli(search_cli, ["--resume", str(rd), "--trials", str(trials), "--quiet"], capsys)
    assert rc == 0, err
    rc, _, err = _cli(export_cli, [str(rd), "--out", str(rd.parent / f"m{uuid.uuid4().hex[:6]}.yaml")], capsys)
    assert rc == 0, err
    rc, _, err = _cli(report_cli, [str(rd)], capsys)
    assert rc == 0, err
    assert len(RunDir(rd).read_records()) >= trials
    assert not list(rd.glob(".*.tmp")), "a temporary file was left behind"
    return out


# ------------------------------------------------------------------------------ damaged run files
def test_torn_last_line_is_cut_and_every_later_command_accepts_the_run(rd, capsys):
    data = (rd / "trials.jsonl").read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    (rd / "trials.jsonl").write_bytes(data[: len(data) - len(last) - 1] + last[: len(last) // 2])  # torn
    _resume_ok(rd, capsys)  # the torn trial is recovered from the study, nothing retrained
    assert not (rd / "trials.jsonl").read_bytes().endswith(last[: len(last) // 2])
    assert (rd / "trials.jsonl.torn").read_bytes() == last[: len(last) // 2] + b"\n"
    assert "torn last line" in (rd / "search.log").read_text()
    _resume_ok(rd, capsys)  # and again: the repair holds
    assert len(RunDir(rd).read_records()) == 3


def test_derived_files_damaged_are_rebuilt(rd, capsys):
    (rd / "leaderboard.json").write_text('[{"rank": 1, "tri')
    (rd / "leaderboard.csv").write_text("")
    (rd / "best.yaml").unlink()
    rc, _, err = _cli(report_cli, [str(rd)], capsys)
    assert rc == 0, err
    assert len(json.loads((rd / "leaderboard.json").read_text())) == 3
    _resume_ok(rd, capsys)
    assert (rd / "best.yaml").is_file()


def test_experiment_json_damaged_the_named_step_recovers(rd, capsys):
    (rd / "experiment.json").write_text('{"name": "run", "finger')
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)
    assert rc == 2 and "experiment.json is damaged" in err and f"mv {rd}/experiment.json" in err
    (rd / "experiment.json").rename(rd / "experiment.json.bad")  # the step the message names
    _resume_ok(rd, capsys)
    assert "rebuilt" in json.loads((rd / "experiment.json").read_text())


def test_space_yaml_damaged_the_named_step_recovers(rd, capsys):
    (rd / "space.yaml").write_text("space: [unclosed\n")
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)
    source = rd.parent / "space.yaml"
    assert (
        rc == 2 and "space.yaml is corrupted" in err and f"copy the search YAML the run started from ({source})" in err
    ), err
    shutil.copy(source, rd / "space.yaml")  # the step the message names
    _resume_ok(rd, capsys)


def test_trials_line_damaged_inside_the_named_step_recovers(rd, capsys):
    lines = (rd / "trials.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    (rd / "trials.jsonl").write_text("".join(lines))
    rc, _, err = _cli(export_cli, [str(rd), "--out", str(rd.parent / "x.yaml")], capsys)
    assert rc == 2 and "line 2 is damaged" in err and "Delete that line" in err
    del lines[1]  # the step the message names: the trial comes back from the study
    (rd / "trials.jsonl").write_text("".join(lines))
    _resume_ok(rd, capsys)
    assert len(RunDir(rd).read_records()) == 3


def test_trials_file_lost_is_recovered_from_the_study(rd, capsys):
    (rd / "trials.jsonl").unlink()
    _resume_ok(rd, capsys)
    assert "recovered" in (rd / "search.log").read_text()
    assert len(RunDir(rd).read_records()) == 3
    _resume_ok(rd, capsys)


def test_stale_driver_lock_of_a_killed_driver_does_not_block(rd, capsys):
    (rd / "driver.lock").write_text(json.dumps({"host": "elsewhere", "pid": 999999, "since": "yesterday"}))
    _resume_ok(rd, capsys)


# ------------------------------------------------------------------------------------- full disk
def _limited(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """Run a console script with a file-size limit (writes beyond it fail with EFBIG, as on a full disk)."""

    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=pre,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )


def test_full_disk_leaves_no_tmp_and_the_run_resumable(rd, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != "driver.lock"}
    proc = _limited([str(BIN / "nas-search"), "--resume", str(rd), "--quiet"], 600)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Cannot write" in err and "too large" in err and f"nas-search --resume {rd}" in err, err
    assert not [p for p in rd.iterdir() if p.name.endswith(".tmp")]
    after = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.name != "driver.lock"}
    assert after == before, "a failed write changed the run"
    proc = _limited([str(BIN / "nas-report"), str(rd), "--out", str(tmp_path / "rep")], 2000)
    assert proc.returncode == 2 and "Cannot write" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.endswith(".tmp")]
    _resume_ok(rd, capsys)  # with space again, the same command works


def test_outputs_are_never_written_through_links_or_over_files(rd, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's\n")
    (tmp_path / "m.yaml").symlink_to(victim)
    rc, _, err = _cli(export_cli, [str(rd), "--out", str(tmp_path / "m.yaml"), "--force"], capsys)
    assert rc == 2 and "symbolic link" in err and victim.read_text() == "someone else's\n"
    # An existing file: refused, then replaced with --force, through a fresh temp file in the same folder.
    (tmp_path / "n.yaml").write_text("mine\n")
    rc, _, err = _cli(export_cli, [str(rd), "--out", str(tmp_path / "n.yaml")], capsys)
    assert rc == 2 and "--force" in err and (tmp_path / "n.yaml").read_text() == "mine\n"
    # the old predictable temporary name is a link an attacker planted: it is neither followed nor used
    (tmp_path / "n.yaml.tmp").symlink_to(victim)
    rc, _, err = _cli(export_cli, [str(rd), "--out", str(tmp_path / "n.yaml"), "--force"], capsys)
    assert rc == 0, err
    assert "architecture" in (tmp_path / "n.yaml").read_text() and victim.read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == ["n.yaml.tmp"]


# ------------------------------------------------------------------------------ protocol change
def test_new_protocol_flag_continues_and_records_the_change(rd, capsys):
    space = rd.parent / "space.yaml"
    space.write_text(SPACE.replace("batch_size: 32", "batch_size: 16"))
    rc, _, err = _cli(search_cli, ["--space", str(space), "--resume", str(rd), "--quiet"], capsys)
    assert rc == 2 and "train.batch_size: 32 -> 16" in err and "--new-protocol" in err
    rc, _, err = _cli(search_cli, ["--space", str(space), "--resume", str(rd), "--new-protocol", "--quiet"], capsys)
    assert rc == 0, err
    meta = json.loads((rd / "experiment.json").read_text())
    assert meta["sessions"][-1]["new_protocol"] == ["train.batch_size: 32 -> 16"]
    assert meta["protocol"]["train.batch_size"] == 16
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)  # the new protocol is the run's now
    assert rc == 0, err


# ------------------------------------------------------------------------ signals on a real Ray run
def _marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (the driver and every Ray process it started)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if mark.encode() in fh.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


def _wait_gone(mark: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_sighup_stops_like_ctrl_c(tmp_path, ray_local, capsys):
    """SIGHUP (a closed terminal) to the driver, in process on the shared Ray: exit 129, everything saved."""
    import threading

    (tmp_path / "s.yaml").write_text(SPACE.replace("epochs: 1", "epochs: 3"))
    rd = tmp_path / "run"
    sent = threading.Event()

    def hang_up():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jsonl = rd / "trials.jsonl"
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
                os.kill(os.getpid(), signal.SIGHUP)  # the search's handler is installed while trials run
                sent.set()
                return
            time.sleep(0.1)

    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, also when the tests run under nohup
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        rc, out, err = _cli(
            search_cli,
            ["--space", str(tmp_path / "s.yaml"), "--run-dir", str(rd), "--trials", "4", "--quiet"],
            capsys,
        )
        restored = signal.getsignal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, before)
    t.join(5)
    assert sent.is_set() and rc == 129, (rc, out, err)
    log = (rd / "search.log").read_text()
    assert "stopped by SIGHUP" in log and f"nas-search --resume {rd}" in log and "Traceback" not in out + err
    assert 1 <= len(RunDir(rd).read_records()) < 4
    assert json.loads((rd / "experiment.json").read_text())["sessions"][-1]["stopped_by"] == "SIGHUP"
    assert restored == signal.SIG_DFL  # restored after the search


def test_sigterm_stops_like_ctrl_c_without_orphans(tmp_path, ray_local):
    """The driver alone gets SIGTERM (``kill PID``, Kubernetes, SLURM): exit 143, resume hint, every
    finished trial saved, no Ray process of the run alive 10 s later; the resume finishes the search."""
    sig = signal.SIGTERM
    (tmp_path / "s.yaml").write_text(SPACE.replace("epochs: 1", "epochs: 3"))
    rd = tmp_path / "run"
    mark = f"coatnas-test-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["COATNAS_TEST_MARK"] = mark
    proc = subprocess.Popen(
        [str(BIN / "nas-search"), "--space", str(tmp_path / "s.yaml"), "--run-dir", str(rd), "--trials", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    jsonl = rd / "trials.jsonl"
    try:
        deadline = time.monotonic() + 180
        while not (jsonl.is_file() and jsonl.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        exited = time.monotonic()
        left = _wait_gone(mark, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, out
    assert "Traceback" not in out and "Stack trace" not in out and "*** " not in out, out
    assert f"stopped by {signal.Signals(sig).name}" in out and f"nas-search --resume {rd}" in out, out
    assert not left, f"Ray processes of the run alive {time.monotonic() - exited:.0f} s after the driver exited: {left}"
    records = RunDir(rd).read_records()
    assert 1 <= len(records) < 4 and all(r.ok for r in records)
    meta = json.loads((rd / "experiment.json").read_text())
    assert meta["sessions"][-1]["stopped_by"] == signal.Signals(sig).name
    # the resume finishes the search
    import io

    # the progress line's "best" must remember the first session's trials: make one of them unbeatable
    lines = (rd / "trials.jsonl").read_text().splitlines()
    top = json.loads(lines[0])
    top["score"] = 0.999
    (rd / "trials.jsonl").write_text("\n".join([json.dumps(top), *lines[1:]]) + "\n")
    buf = io.StringIO()
    res = run(None, resume=True, run_dir=rd, progress=buf)
    assert res.completed == 4 and len({r.id for r in RunDir(rd).read_records()}) == 4
    first = next(line for line in buf.getvalue().splitlines() if line.startswith("["))
    assert f"best 0.999 (trial {top['number']})" in first, first


def test_dry_run_uses_the_yaml_seed(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(SPACE.replace("seed: 0}", "seed: 7}"))
    (tmp_path / "b.yaml").write_text(SPACE)
    outs = {}
    for name, argv in (
        ("yaml7", ["--space", str(tmp_path / "a.yaml")]),
        ("yaml0", ["--space", str(tmp_path / "b.yaml")]),
        ("flag7", ["--space", str(tmp_path / "b.yaml"), "--seed", "7"]),
    ):
        rc, out, err = _cli(search_cli, [*argv, "--dry-run", "--samples", "8"], capsys)
        assert rc == 0, err
        outs[name] = [line for line in out.splitlines() if " id " in line]
    assert outs["yaml7"] == outs["flag7"] != outs["yaml0"]
    assert "(seed 7)" in _cli(search_cli, ["--space", str(tmp_path / "a.yaml"), "--dry-run"], capsys)[1]


# --------------------------------------------------------------------- the loader: property test
def _hypothesis():
    return pytest.importorskip("hypothesis")


def test_generated_yaml_loads_or_raises_a_user_error(tmp_path):
    """Random structures, types, unicode, huge and special numbers, spliced into a valid search YAML or on
    their own: ``load_experiment`` either returns an Experiment or raises UserError; nothing else escapes."""
    _hypothesis()
    import yaml
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nas.search.config import load_experiment

    base = yaml.safe_load(SPACE)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 1, -1, 2**63, 1e308, 1e-308, 0.5]),
        st.text(max_size=12),
        st.sampled_from(
            [
                "C",
                "T",
                "grid",
                "tpe",
                "synthetic",
                "digits",
                "ViT_REL",
                "C-C-T-T",
                "npz",
                "cifar10",
                "imagefolder",
                "1e9",
                ".nan",
                "~",
                "é",
                "\u202e",
            ]
        ),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(
                st.one_of(
                    st.text(max_size=8),
                    scalars.filter(lambda v: v is None or isinstance(v, (bool, int, str))),
                    st.sampled_from(
                        ["space", "train", "search", "stages", "S1", "depth", "width", "min", "max", "step", "block"]
                    ),
                ),
                inner,
                max_size=5,
            ),
        ),
        max_leaves=20,
    )

    def paths(d, prefix=()):
        yield prefix
        if isinstance(d, dict):
            for k, v in d.items():
                yield from paths(v, prefix + (k,))

    all_paths = [p for p in paths(base) if p]
    counter = iter(range(10**9))

    def check(text_or_bytes):
        f = tmp_path / f"g{next(counter)}.yaml"
        f.write_bytes(text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode("utf-8", "replace"))
        try:
            load_experiment(str(f))
        except UserError:
            pass

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.tuples(st.sampled_from(all_paths), values), min_size=1, max_size=3))
    def spliced(edits):
        import copy

        data = copy.deepcopy(base)
        for path, value in edits:
            node = data
            for k in path[:-1]:
                if not isinstance(node, dict):
                    break
                node = node.setdefault(k, {}) if isinstance(node.get(k), dict) else node
            if isinstance(node, dict):
                node[path[-1]] = value
        try:
            text = yaml.safe_dump(data, allow_unicode=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            return
        check(text)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        st.one_of(
            values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text(max_size=200), st.binary(max_size=200)
        )
    )
    def raw(doc):
        check(doc)

    spliced()
    raw()


def test_replaced_data_files_change_the_protocol(rd, capsys):
    """The data's identity (count and size of its files, not its path) is part of the protocol."""
    import numpy as np
    import yaml

    from nas.search.config import protocol_of

    data = rd.parent / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 255, (40, 32, 32), dtype=np.uint8), y=np.arange(40) % 4)
    stored = yaml.safe_load((rd / "space.yaml").read_text())
    stored["train"]["data"].update(name="npz", path=str(data))
    (rd / "space.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    meta = json.loads((rd / "experiment.json").read_text())
    meta["protocol"] = protocol_of(RunDir(rd).read_experiment())  # as if the run had started on this file
    assert meta["protocol"]["train.data.files"].startswith("1 file, ")
    (rd / "experiment.json").write_text(json.dumps(meta))
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)
    assert rc == 0, err
    np.savez(data, x=rng.integers(0, 255, (44, 32, 32), dtype=np.uint8), y=np.arange(44) % 4)  # new content
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)
    assert rc == 2 and "training protocol changed" in err and "train.data.files: '1 file, " in err, err
    # a run from before the protocol was recorded takes its space.yaml as the protocol on the next resume
    meta = json.loads((rd / "experiment.json").read_text())
    del meta["protocol"]
    (rd / "experiment.json").write_text(json.dumps(meta))
    rc, _, err = _cli(search_cli, ["--resume", str(rd), "--quiet"], capsys)
    assert rc == 0, err
    assert "train.data.files" in json.loads((rd / "experiment.json").read_text())["protocol"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_unpickler_reads_the_format_and_refuses_code(protocol, tmp_path):
    import io
    import pickle

    import numpy as np

    from trainers.data.safe_pickle import load_cifar_pickle

    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [3, 1, 4],
        b"data": np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }
    got = load_cifar_pickle(io.BytesIO(pickle.dumps(batch, protocol=protocol)))
    assert got[b"labels"] == [3, 1, 4] and np.array_equal(got[b"data"], batch[b"data"])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refused to load the global .*system"):
        load_cifar_pickle(io.BytesIO(pickle.dumps({b"data": Evil()}, protocol=protocol)))
    assert not (tmp_path / "pwned").exists()
