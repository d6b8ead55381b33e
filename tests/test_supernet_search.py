"""The weight-sharing proxy on real Ray: a search trains its supernets once (resumable, deterministic across a
pause), its trials inherit from them through the object store, its finalists train from scratch; a fidelity
study trains one supernet per protocol and seed; damaged checkpoints are refused in one paragraph."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.search import RunDir, run

BIN = Path(sys.executable).parent
SUPERNET = "  supernet: {steps: STEPS, checkpoint_every: 10}\n"


def _space(write_space, name="sn.yaml", steps=30, extra=""):
    path = write_space(name, extra=extra)
    text = path.read_text().replace("objective: {mode: single}", "objective: {mode: both, subset_fraction: 0.5}")
    text = text.replace("  batch_size: 32\n", "  batch_size: 32\n" + SUPERNET.replace("STEPS", str(steps)))
    path.write_text(text)
    return path


def _collector(lines: list[str]):
    """A file-like progress output that keeps what is written in ``lines``."""

    class Out:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    return Out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_a_search_trains_its_supernets_once_and_its_trials_inherit(ray_local, write_space, tmp_path):
    space = _space(write_space, extra="finalists: {top_k: 1, pareto: false, seeds: 1, train: {epochs: 1}}\n")
    rd = tmp_path / "run"
    lines: list[str] = []

    Out = _collector(lines)

    first = run(space, trials=3, run_dir=rd, progress=Out())
    text = "".join(lines)
    assert first.completed == 3 and "training 2 supernet(s)" in text and "step 30/30" in text
    files = sorted(p.name for p in (rd / "supernet").iterdir())
    assert [f.rsplit("-", 1)[0] for f in files] == ["search-full", "search-generalization"]  # -FINGERPRINT.safetensors
    records = RunDir(rd).read_records()
    assert all(r.ok for r in records), [r.reason for r in records]
    # inherited, not trained: no optimizer step in the trial; the two regimes measured
    assert all(r.metrics["steps"] == 0 and r.metrics["gen_train_size"] == 64 for r in records)  # 160 x 0.8 x 0.5
    # the finalist's verification trains from scratch (one epoch per regime)
    from nas.search.config import load_experiment

    assert load_experiment(space).finalists.train.supernet is None
    finalists = RunDir(rd).read_finalists()
    assert finalists and all(f.status == "ok" for f in finalists)
    from nas.search.report import write_report

    write_report(rd)
    assert "- proxy: weight sharing (docs/supernet.md): supernets of 30 steps" in (rd / "report.md").read_text()
    before = {f: (rd / "supernet" / f).read_bytes() for f in files}
    lines.clear()
    again = run(space, resume=True, trials=5, run_dir=rd, progress=Out())
    assert again.completed == 5 and "training" not in "".join(l for l in lines if "supernet" in l)
    assert {f: (rd / "supernet" / f).read_bytes() for f in files} == before  # read, not trained again
    # a new protocol with other supernet settings trains supernets of its own beside the old ones, which stay
    space.write_text(space.read_text().replace("{steps: 30,", "{steps: 20,"))
    assert run(space, resume=True, trials=6, run_dir=rd, progress=False, new_protocol=True).completed == 6
    now = sorted(p.name for p in (rd / "supernet").iterdir())
    assert len(now) == 4 and set(files) < set(now)
    assert {f: (rd / "supernet" / f).read_bytes() for f in files} == before


def test_a_damaged_or_foreign_checkpoint_is_refused_in_one_paragraph(ray_local, write_space, tmp_path):
    space = _space(write_space, steps=10)
    rd = tmp_path / "run"
    run(space, trials=1, run_dir=rd, progress=False)
    ckpt = _file(rd, "full")
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"search-full-\w+\.safetensors: not a safetensors weights file.*move it aside"):
        run(space, resume=True, trials=2, run_dir=rd, progress=False)
    # a checkpoint of another space (the generalization regime's, renamed) is refused by its fingerprint
    ckpt.write_bytes(_file(rd, "generalization").read_bytes())
    with pytest.raises(UserError, match="trained for another space, protocol or regime"):
        run(space, resume=True, trials=2, run_dir=rd, progress=False)
    # a finished checkpoint that lost a tensor is refused before any trial runs (none is recorded as failed)
    from safetensors.numpy import save

    from nas.fsio import read_safetensors

    ckpt.write_bytes(good)
    arrays, header = read_safetensors(ckpt, what="", fix="", numpy=True)
    arrays.pop("w/head.fc.weight")
    ckpt.write_bytes(save(arrays, metadata=header))
    with pytest.raises(
        UserError,
        match=r"search-full-\w+\.safetensors: not the supernet checkpoint of full: it lacks the tensor head\.fc\.",
    ):
        run(space, resume=True, trials=2, run_dir=rd, progress=False)
    assert len(RunDir(rd).read_records()) == 1
    ckpt.write_bytes(good)
    assert run(space, resume=True, trials=2, run_dir=rd, progress=False).completed == 2
    assert len(RunDir(rd).read_records()) == 2


def test_sigterm_pauses_the_supernets_and_the_resumed_training_equals_an_uninterrupted_one(
    ray_local, write_space, tmp_path
):
    space = _space(write_space, steps=120)
    whole = tmp_path / "whole"
    run(space, trials=1, run_dir=whole, progress=False)
    paused = tmp_path / "paused"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [str(BIN / "nas-search"), "--space", str(space), "--run-dir", str(paused), "--trials", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline and not list((paused / "supernet").glob("search-full-*.safetensors")):
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in out and "the supernet's training pauses" in out, out
    assert f"nas-search --resume {paused}" in out
    step = int(float(_meta(_file(paused, "full"))["step"]))
    assert 10 <= step < 120 and not RunDir(paused).read_records()
    res = run(None, resume=True, run_dir=paused, progress=False)
    assert res.completed == 1
    for regime in ("full", "generalization"):
        name = _file(whole, regime).name
        a, b = _arrays(whole / "supernet" / name), _arrays(paused / "supernet" / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name


def _file(run_dir: Path, regime: str) -> Path:
    (path,) = (run_dir / "supernet").glob(f"search-{regime}-*.safetensors")
    return path


def _meta(path: Path) -> dict[str, str]:
    from nas.fsio import read_safetensors

    return read_safetensors(path, what="x", fix="", numpy=True)[1]


def test_a_study_trains_one_supernet_per_weight_sharing_protocol_and_seed(tmp_path, write_space, ray_local):
    from nas.fidelity import StudyDir, run_study

    write_space("space.yaml")
    study = tmp_path / "study.yaml"
    study.write_text(
        """\
study: {space: space.yaml, architectures: 4, max_concurrent: 2, bootstrap: 50, zero_cost: []}
proxies:
  scratch: {train: {steps: 2}}
  shared: {train: {supernet: {steps: 20, checkpoint_every: 10}}, seeds: [0, 1]}
  tuned: {train: {supernet: {steps: 20, checkpoint_every: 10, finetune_steps: 2}}}
reference: {seeds: [0], train: {steps: 10}}
"""
    )
    sdir = tmp_path / "st"
    out = run_study(study, study_dir=sdir, out=None)
    assert out["stopped"] is False and out["ran"] == 4 * (1 + 2 + 1 + 1)
    names = sorted(p.name.rsplit("-", 1)[0] for p in (sdir / "supernet").iterdir())
    # mode single: one regime; `tuned` differs from `shared` only in its trials, so it inherits from shared-0's
    assert names == ["shared-0-full", "shared-1-full"]
    tuned = [r for r in StudyDir(sdir).read_records() if r.protocol == "tuned"]
    assert len(tuned) == 4 and all(r.status == "ok" and r.metrics["steps"] == 2 for r in tuned)
    recs = [r for r in StudyDir(sdir).read_records() if r.protocol == "shared"]
    assert len(recs) == 8 and all(r.status == "ok" for r in recs), [r.reason for r in recs]
    by_seed = {s: sorted(r.score for r in recs if r.seed == s) for s in (0, 1)}
    assert by_seed[0] != by_seed[1]  # two supernets, not one read twice
    # only `tuned` left to run (its lines deleted, as a user re-runs jobs): it reads shared-0's supernet, no training
    jobs = sdir / "jobs.jsonl"
    jobs.write_text("".join(line for line in jobs.read_text().splitlines(True) if '"protocol": "tuned"' not in line))
    files = sorted(p.name for p in (sdir / "supernet").iterdir())
    lines: list[str] = []

    Out = _collector(lines)

    assert run_study(None, study_dir=sdir, out=Out())["ran"] == 4
    assert "training" not in "".join(lines) and sorted(p.name for p in (sdir / "supernet").iterdir()) == files
    from nas.fidelity import write_report

    report = write_report(sdir)["md"].read_text()
    assert "| shared | score |" in report and "Weight-sharing proxies (shared, tuned): their cost counts" in report


def test_a_diverging_supernet_stops_the_search_with_a_paragraph(ray_local, write_space, tmp_path):
    space = _space(write_space, steps=20)
    space.write_text(
        space.read_text()
        .replace("{steps: 20,", "{steps: 20, lr: 1.0e+6,")
        .replace("batch_size: 32", "batch_size: 32\n  grad_clip: 0")
    )
    rd = tmp_path / "run"
    with pytest.raises(UserError, match=r"supernet \w+ failed to train \(diverged\).*lower `train\.supernet\.lr`"):
        run(space, trials=2, run_dir=rd, progress=False)
    assert not rd.exists()  # nothing was computed (the first chunk diverged): a refused start leaves nothing
