"""The runtime shared by nas-search and nas-fidelity: one failure classifier (on real exceptions), one signal
handler (in real subprocesses), one lock (held by another process, refused with the holder's command), one
Ray set-up that names the running command's own settings, and the typed setup every worker is given."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray.exceptions
import torch

from nas.errors import UserError
from nas.fidelity import load_study, run_study
from nas.fidelity.runner import FIDELITY, run_job, worker_setup
from nas.runtime.lock import RunLock
from nas.search import run
from nas.search.trainable import WorkerSetup, run_trainer
from nas.search.tuning import SEARCH
from trainers.training.fit import Diverged
from trainers.training.result import NonFiniteResult, TrialResult, classify_failure, is_oom

ROOT = Path(__file__).resolve().parents[1]


def _cpu_allocation_failure() -> RuntimeError:
    try:
        torch.empty(2**50, dtype=torch.uint8)  # the CPU allocator gives up: a real RuntimeError of torch
    except RuntimeError as err:
        return err
    pytest.skip("this machine allocated 1 PiB")


def _non_finite_result() -> NonFiniteResult:
    try:
        TrialResult(status="ok", generalization=float("nan"), capacity=0.5, score=0.5)
    except NonFiniteResult as err:
        return err
    raise AssertionError("TrialResult accepted NaN")


def _task_error(cause: BaseException) -> BaseException:
    """What ``ray.get`` raises for a task that raised ``cause``: Ray's error that is also the cause's class."""
    return ray.exceptions.RayTaskError("run_job", "Traceback (most recent call last): ...", cause).as_instanceof_cause()


RAY_OOM_TEXT = (
    "Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.1) where the task "
    "was running was 30.5GB / 32GB (0.95), which exceeds the memory usage threshold of 0.95."
)

# (what, the exception, status, words of the reason)
FAILURES = [
    ("cuda-oom", lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom", "CUDA out"),
    ("cuda-oom-alias", lambda: torch.cuda.OutOfMemoryError("CUDA out of memory."), "oom", "out of memory"),
    ("cpu-allocator", _cpu_allocation_failure, "oom", "can't allocate memory"),
    ("python-memoryerror", MemoryError, "oom", "out of memory: MemoryError"),
    ("cuda-error-text", lambda: RuntimeError("CUDA error: out of memory\nCUDA kernel errors"), "oom", "CUDA error"),
    ("cudnn", lambda: RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_MEMORY"), "oom", "CUDNN_STATUS"),
    ("mps", lambda: RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), "oom", "MPS backend"),
    ("ray-oom", lambda: ray.exceptions.OutOfMemoryError(RAY_OOM_TEXT), "oom", "Ray killed the worker"),
    ("task-raised-oom", lambda: _task_error(torch.OutOfMemoryError("CUDA out of memory.")), "oom", "CUDA out"),
    ("worker-crashed", ray.exceptions.WorkerCrashedError, "error", "worker lost: The worker died"),
    ("diverged", lambda: Diverged("the training loss is nan at step 3"), "diverged", "training loss is nan"),
    ("nan-result", _non_finite_result, "diverged", "non-finite result (generalization must be finite"),
    (
        "shape",
        lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x2)"),
        "error",
        "RuntimeError",
    ),
    ("value-says-memory", lambda: ValueError("out of memory"), "error", "ValueError: out of memory"),
    ("task-raised-value", lambda: _task_error(ValueError("bad width 7")), "error", "ValueError: bad width 7"),
    ("empty-message", KeyError, "error", "KeyError"),
]


@pytest.mark.parametrize("make, status, words", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_the_classifier_on_real_exceptions(make, status, words):
    err = make()
    failure = classify_failure(err)
    assert failure.status == status, failure
    assert words in failure.reason, failure
    assert "\n" not in failure.reason and len(failure.reason) <= 500
    assert is_oom(err) == (status == "oom")
    res = TrialResult.of_error(err, wall_s=1.0)
    assert (res.status, res.reason, res.metrics) == (status, failure.reason, {"wall_s": 1.0})


def test_an_oom_reason_names_the_device_and_a_long_message_is_cut():
    failure = classify_failure(torch.OutOfMemoryError("CUDA out of memory. " + "x" * 2000), device="cuda:0")
    assert failure.reason.startswith("out of memory on cuda:0: CUDA out of memory.") and len(failure.reason) == 500


def test_the_classifier_imports_neither_torch_nor_ray():
    code = (
        "import sys, trainers.training.result; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _trainer_oom(arch, dataset, train, objective, **kwargs):
    torch.empty(2**50, dtype=torch.uint8)


def _trainer_nan(arch, dataset, train, objective, **kwargs):
    return TrialResult(status="ok", generalization=math.nan, capacity=0.5, score=0.5)


def _trainer_wrong_type(arch, dataset, train, objective, **kwargs):
    return {"score": 1.0}


@pytest.mark.parametrize(
    "trainer, status, words",
    [
        ("_trainer_oom", "oom", "can't allocate memory"),
        ("_trainer_nan", "diverged", "non-finite"),
        ("_trainer_wrong_type", "error", "returned dict, not a TrialResult"),
    ],
)
def test_the_worker_turns_a_trainer_failure_into_a_classified_result(trainer, status, words):
    res = run_trainer(f"{__name__}:{trainer}", None, None, None, None, 1, None, 32)
    assert res.status == status and words in res.reason, res


def test_a_stop_passed_by_tune_is_not_a_failure():
    stop = RuntimeError("out of memory")  # even one that reads like a failure

    def on_epoch(epoch, metrics):
        raise stop

    with pytest.raises(RuntimeError) as info:
        run_trainer(f"{__name__}:_trainer_reporting", None, None, None, None, 1, on_epoch, 32, [stop])
    assert info.value is stop


def _trainer_reporting(arch, dataset, train, objective, *, on_epoch, **kwargs):
    on_epoch(1, {})


# ------------------------------------------------------------------------------------------------ signals
SIGNAL_CHILD = textwrap.dedent(
    """
    import sys, time
    from nas.cli import run_cli
    from nas.runtime.signals import StopSignals

    def body():
        with StopSignals() as signals:
            if sys.argv[1] == "loop":  # the work loop runs: the first signal is a pause
                signals.on_stop = lambda signum: print(f"pause {signals.name}", flush=True)
            print("ready", flush=True)
            while True:
                time.sleep(0.01)

    sys.exit(run_cli("nas-child", body))
    """
)


def _child(mode: str, sighup=signal.SIG_DFL) -> subprocess.Popen:
    """The child starts with SIGHUP as a terminal leaves it (``SIG_DFL``), also when the tests run under nohup,
    or as ``sighup`` says (``SIG_IGN``: started under nohup)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, sighup),
    )
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_in_the_loop_is_a_pause_and_a_second_one_stops(sig):
    proc = _child("loop")
    try:
        proc.send_signal(sig)
        assert proc.stdout.readline() == f"pause {sig.name}\n"  # the handler remembered the signal's name
        assert proc.poll() is None  # a pause: the process goes on
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"nas-child: interrupted ({sig.name})" in err and "Traceback" not in err


def test_a_command_started_under_nohup_ignores_sighup_and_still_pauses_on_sigterm():
    proc = _child("loop", sighup=signal.SIG_IGN)
    try:
        proc.send_signal(signal.SIGHUP)  # the terminal closed: nohup asked for nothing to happen
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "pause SIGTERM\n"  # the first signal it heard is SIGTERM, not SIGHUP
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_outside_the_loop_stops_at_once_with_its_name(sig):
    proc = _child("outside")
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig and f"interrupted ({sig.name})" in err and "Traceback" not in err


def test_the_handlers_are_put_back():
    from nas.runtime.signals import StopSignals

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals() as signals:
        assert signal.getsignal(signal.SIGTERM) == signals._handle
        signals.install()  # again, as after ray.init: the first previous handler is the one kept
    assert {s: signal.getsignal(s) for s in before} == before


# ------------------------------------------------------------------------------------------------ the lock
LOCK_CHILD = textwrap.dedent(
    """
    import sys
    from nas.runtime.lock import RunLock
    from nas.search.tuning import SEARCH
    from nas.fidelity.runner import FIDELITY

    with RunLock(sys.argv[1], {"nas-search": SEARCH, "nas-fidelity": FIDELITY}[sys.argv[2]]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes it
    """
)


@pytest.fixture
def held(tmp_path):
    """``held(command) -> (folder, pid)``: ``folder``'s lock held by another process running ``command``."""
    procs = []

    def hold(command: str):
        folder = tmp_path / f"held-by-{command}"
        folder.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_CHILD, str(folder), command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        procs.append(proc)
        assert proc.stdout.readline() == "held\n", proc.stderr.read()
        return folder, proc.pid

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "holder, asker, says, never",
    [
        (
            "nas-search",
            SEARCH,
            ["Run directory", "in use by another nas-search driver", "nas-search --resume"],
            "fidelity",
        ),
        (
            "nas-fidelity",
            FIDELITY,
            ["Study directory", "in use by another nas-fidelity driver", "nas-fidelity --resume", "--study-dir"],
            "nas-search",
        ),
        ("nas-fidelity", SEARCH, ["in use by a running nas-fidelity driver", "--run-dir"], "--resume"),
        ("nas-search", FIDELITY, ["in use by a running nas-search driver", "--study-dir"], "--resume"),
    ],
    ids=["search-search", "fidelity-fidelity", "fidelity-holds-search-asks", "search-holds-fidelity-asks"],
)
def test_a_lock_held_by_another_process_names_its_command(held, holder, asker, says, never):
    folder, pid = held(holder)
    with pytest.raises(UserError) as info:
        RunLock(folder, asker).acquire()
    msg = str(info.value)
    for words in [*says, str(folder), f"pid {pid}"]:
        assert words in msg, msg
    assert never not in msg and "\n" not in msg


def test_the_lock_dies_with_its_holder(held):
    folder, pid = held("nas-fidelity")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with RunLock(folder, SEARCH):
        assert '"command": "nas-search"' in (folder / "driver.lock").read_text()


def test_both_commands_refuse_a_held_folder_before_changing_it(held, write_space, tmp_path):
    space = write_space()
    search_dir, pid = held("nas-search")
    with pytest.raises(UserError, match=f"in use by another nas-search driver \\(pid {pid}"):
        run(space, run_dir=search_dir, progress=False)
    study_dir, pid = held("nas-fidelity")
    study = tmp_path / "study.yaml"
    study.write_text(f"study: {{space: {space.name}, architectures: 2, zero_cost: []}}\n")
    with pytest.raises(UserError, match=f"in use by another nas-fidelity driver \\(pid {pid}"):
        run_study(study, study_dir=study_dir, out=None)
    for folder in (search_dir, study_dir):
        assert [p.name for p in folder.iterdir()] == ["driver.lock"]


# ------------------------------------------------------------------------------------------------ Ray set-up
def test_a_study_asking_for_gpus_names_its_own_setting_and_leaves_no_folder(ray_local, write_space, tmp_path):
    space = write_space()
    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray has GPUs")
    study = tmp_path / "study.yaml"
    study.write_text(f"study: {{space: {space.name}, architectures: 2, zero_cost: [], gpus_per_trial: 1}}\n")
    with pytest.raises(UserError) as info:
        run_study(study, study_dir=tmp_path / "run", out=None)
    msg = str(info.value)
    assert f"`study.gpus_per_trial: 1` (in {study})" in msg and "the Ray cluster has none" in msg, msg
    assert "`study.gpus_per_trial: 0` in the study YAML" in msg
    assert "--gpus-per-trial" not in msg and "search.gpus_per_trial" not in msg
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ WorkerSetup
def _study(tmp_path, write_space):
    space = write_space()
    study = tmp_path / "study.yaml"
    study.write_text(
        f"study: {{space: {space.name}, architectures: 2, zero_cost: [params, synflow], zero_cost_batch: 8,"
        " cpus_per_trial: 2.7, seed: 5}\nproxies: {p1: {train: {steps: 2}}}\n"
        "reference: {seeds: [0], train: {steps: 3}}\n"
    )
    return load_study(study)


def test_the_study_setup_is_typed_frozen_and_travels(tmp_path, write_space):
    study = _study(tmp_path, write_space)
    setup = worker_setup(study)
    assert setup.threads == 2 and setup.shared is None
    assert [name for name, _, _ in setup.protocols] == ["p1", "reference"]
    assert setup.protocol("p1") == (study.protocol("p1").train, study.protocol("p1").objective)
    assert setup.zero_cost.proxies == ("params", "synflow") and setup.zero_cost.batch == 8 and setup.zero_cost.seed == 5
    with pytest.raises(KeyError, match="no protocol 'p2'"):
        setup.protocol("p2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setup.trainer = "other:fn"
    copy = pickle.loads(pickle.dumps(setup))  # what ray.put / tune.with_parameters do
    assert copy.protocols == setup.protocols and copy.train == setup.train and copy.zero_cost == setup.zero_cost


@pytest.mark.parametrize(
    "field, value", [("image_size", "32"), ("in_chans", 1.0), ("cpus_per_trial", True), ("cpus_per_trial", 0)]
)
def test_a_setup_of_the_wrong_type_is_refused(tmp_path, write_space, field, value):
    setup = worker_setup(_study(tmp_path, write_space))
    with pytest.raises((TypeError, ValueError), match=field):
        dataclasses.replace(setup, **{field: value})


def test_a_job_runs_from_the_typed_setup_in_process(tmp_path, write_space):
    from nas.fidelity.plan import plan_jobs, sample_architectures

    study = _study(tmp_path, write_space)
    setup = dataclasses.replace(worker_setup(study), cpus_per_trial=1.0)
    jobs = plan_jobs(study, sample_architectures(study))
    zero = next(j for j in jobs if j["protocol"] == "zero_cost")
    trained = next(j for j in jobs if j["protocol"] == "p1")
    threads = torch.get_num_threads()
    try:
        rec = run_job(zero, setup)
        assert rec["status"] == "ok" and set(rec["zero_cost"]) == {"params", "synflow"}, rec
        rec = run_job(trained, setup)
        assert rec["status"] == "ok" and rec["protocol"] == "p1" and rec["metrics"]["steps"] == 2, rec
        assert torch.get_num_threads() == 1  # the worker used exactly its trial's CPUs
    finally:
        torch.set_num_threads(threads)


def test_a_search_setup_reads_by_attribute(write_space):
    from nas.search import load_experiment

    exp = load_experiment(write_space())
    setup = WorkerSetup(
        trainer=exp.search.trainer,
        train=exp.train,
        objective=exp.objective,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        cpus_per_trial=0.5,
    )
    assert setup.threads == 1 and not setup.replays and setup.protocols == () and setup.zero_cost is None
    assert dataclasses.replace(setup, trainer="table:cifar.json").replays


@pytest.mark.parametrize(
    "log, status",
    [
        ("the worker failed: ray.exceptions.OutOfMemoryError: Task was killed due to the node running low", "oom"),
        ("the worker failed: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        ("the worker failed: MemoryError", "oom"),
        ("the worker failed: RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried 1 PB", "oom"),
        ("the worker failed: ray.exceptions.WorkerCrashedError: The worker died unexpectedly", "error"),
        ("the worker failed: ValueError: chaos", "error"),
        ("the worker failed (its Ray Tune error log is under tune/)", "error"),
    ],
)
def test_a_lost_workers_log_is_classified_like_its_exception(log, status):
    """A trial Tune lost is known only by its error.txt: an out-of-memory kill there is recorded as oom."""
    from trainers.training.result import status_of_log

    assert status_of_log(log) == status


def test_a_stop_whose_exception_was_swallowed_is_not_lost():
    """A signal's exception can land where Python ignores it ("Exception ignored in ...", seen during Ray's
    start-up): the next handler the command sets (the job loop's) is called with that signal at once."""
    from nas.runtime.signals import StopSignals

    got = []
    sigs = StopSignals()
    sigs.on_stop = got.append  # no signal yet: nothing happens
    assert got == []
    sigs.on_stop = None
    sigs.received = signal.SIGTERM  # what _handle records before raising the exception that was swallowed
    sigs.on_stop = got.append
    assert got == [signal.SIGTERM] and sigs.name == "SIGTERM"


def test_a_sighup_ignored_by_nohup_stays_ignored():
    """Under ``nohup`` SIGHUP is ignored when the command starts: the command keeps it so (closing the terminal
    must not pause a search started with nohup), across a re-install (after ray.init), while SIGINT and SIGTERM
    still stop it; restore puts every handler back as it was."""
    from nas.runtime.signals import StopSignals

    was = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopSignals() as sigs:
            sigs.install()  # again, as after ray.init
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == sigs._handle
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: no Interrupted, nothing received
            assert sigs.received is None
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) != sigs._handle
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with StopSignals() as sigs:  # not ignored: a closed terminal is a pause, as before
            assert signal.getsignal(signal.SIGHUP) == sigs._handle
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, was)


def test_throttle_bounds_the_share_of_time_an_action_takes():
    from nas.runtime.throttle import Throttle

    now = [0.0]
    cost = [0.5]

    def action():
        now[0] += cost[0]
        return "done"

    th = Throttle(share=0.05, min_interval_s=1.0, clock=lambda: now[0])
    assert th(action) == "done"  # the first call always runs
    ran = 1
    for _ in range(400):  # a call every 0.1 s: the action (0.5 s) may run once per 10 s
        now[0] += 0.1
        ran += th(action) is not None
    assert th.runs == ran and th.skipped == 401 - ran
    assert 3 <= ran <= 5 and th.total_s / now[0] <= 0.05 + 1e-9
    assert th.pending
    assert th(action, force=True) == "done" and not th.pending
    cost[0] = 0.001  # a cheap action runs at most once per min_interval_s
    th2 = Throttle(share=0.05, min_interval_s=1.0, clock=lambda: now[0])
    runs = sum(th2(action) is not None for _ in range(50) if not now.__setitem__(0, now[0] + 0.1))
    assert runs == 5


def test_throttle_catches_up_a_skipped_action_once_it_is_due():
    """A rewrite skipped because the last one was recent is made when due by catch_up (the driver calls it at
    every step of Tune's loop), not only when the next trial finishes, however long that takes."""
    from nas.runtime.throttle import Throttle

    now = [0.0]
    written = []
    th = Throttle(share=0.05, min_interval_s=1.0, clock=lambda: now[0])
    th(lambda: written.append("first"))
    now[0] += 0.2
    assert th(lambda: written.append("second")) is None and th.pending  # too soon: skipped
    th.catch_up()
    assert written == ["first"]  # still not due
    now[0] += 1.0
    th.catch_up()
    assert written == ["first", "second"] and not th.pending
    th.catch_up()
    assert written == ["first", "second"]  # nothing owed any more: no second write
