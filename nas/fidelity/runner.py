"""Run a fidelity study: train each job of the study under its protocol on Ray, record it, resume.

A job is one (architecture, protocol, seed) training, or the zero-cost proxies of one architecture
(:mod:`nas.fidelity.plan`); its record is appended to the study directory's ``jobs.jsonl``
(:mod:`nas.fidelity.studydir`, which describes the directory's files).
Running the same study again skips every recorded job: a crashed, interrupted (Ctrl-C, SIGTERM, SIGHUP)
or budget-limited study resumes where it stopped. A failed training (error, NaN, out of memory) is a
record with its reason; the study goes on.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from nas.errors import UserError
from nas.fidelity.config import ZERO_COST_JOB, Study
from nas.fidelity.studydir import StudyDir, check_folder, pending, prepare
from nas.fsio import append_line
from nas.model.arch import Architecture
from nas.runtime.command import Command
from nas.runtime.signals import StopFlag, StopSignals
from nas.search.trainable import WorkerSetup, ZeroCostSetup

FIDELITY = Command(
    name="nas-fidelity",
    folder="study directory",
    new_folder="another `--name`/`--study-dir` for a new study",
    gpus="`study.gpus_per_trial: {value}`",
    gpus_off="`study.gpus_per_trial: 0` in the study YAML (a started study keeps its settings: start it again "
    "under another `--name`)",
    cpus="`study.cpus_per_trial`",
)
"""``nas-fidelity`` as the shared runtime names it (its lock, its Ray set-up)."""


def run_job(job: dict[str, Any], setup: WorkerSetup) -> dict[str, Any]:
    """One job inside a worker: a training under its protocol (through the search's trainer wrapper, so
    failures become results) or the zero-cost proxies. Returns the record to append."""
    from trainers.training.result import classify_failure

    threads = setup.enter()
    arch: Architecture = job["arch"]
    base = {
        "key": job["key"],
        "arch_id": arch.id,
        "arch": str(arch),
        "layout": arch.layout_name,
        "protocol": job["protocol"],
        "seed": job["seed"],
        "kind": job["kind"],
    }
    t0 = time.perf_counter()
    if job["kind"] == ZERO_COST_JOB:  # the job's kind, never its protocol's name, says what it does
        from trainers.objectives.zerocost import zero_cost_scores

        zc = setup.zero_cost or ZeroCostSetup((), 64, 0)
        try:
            dataset = setup.dataset(setup.train.data)
            scores = zero_cost_scores(
                arch, dataset, list(zc.proxies), batch_size=zc.batch, seed=zc.seed, image_size=setup.image_size
            )
        except Exception as err:  # noqa: BLE001 - a failed measurement is a record, the study goes on
            failure = classify_failure(err)
            return {
                **base,
                "status": failure.status,
                "reason": failure.reason,
                "zero_cost": {},
                "metrics": {"wall_s": time.perf_counter() - t0},
            }
        return {
            **base,
            "status": "ok",
            "reason": "",
            "zero_cost": scores,
            "metrics": {"wall_s": time.perf_counter() - t0},
        }
    from nas.search.trainable import run_trainer

    train, objective = setup.protocol(job["protocol"])
    train = dataclasses.replace(train, seed=job["seed"])
    dataset = setup.dataset(train.data)
    res = run_trainer(setup.trainer, arch, dataset, train, objective, threads, None, setup.image_size)
    rec = res.to_dict()  # with its per-round history (a tabulated benchmark replays it to a scheduler)
    rec["metrics"] = {**rec["metrics"], "job_s": time.perf_counter() - t0}
    return {**base, **rec}


def worker_setup(study: Study) -> WorkerSetup:
    """What every job's worker is given: the base protocol, every protocol of the study by name and the
    zero-cost settings (the data sets are shared by :meth:`WorkerSetup.sharing` once Ray runs)."""
    exp, s = study.experiment, study.settings
    return WorkerSetup(
        trainer=exp.search.trainer,
        train=exp.train,
        objective=exp.objective,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        cpus_per_trial=s.cpus_per_trial,
        protocols=tuple((p.name, p.train, p.objective) for p in study.protocols),
        zero_cost=ZeroCostSetup(tuple(s.zero_cost), s.zero_cost_batch, s.seed),
    )


def run_study(
    study: Study | str | os.PathLike | None = None,
    *,
    study_dir: str | os.PathLike,
    address: str | None = None,
    max_jobs: int | None = None,
    out: TextIO | bool | None = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study in ``study_dir`` on Ray; return ``{"done", "ran", "remaining", "stopped"}``
    (and ``"signal"``, the signal's name, when one stopped it).

    ``study`` is a :class:`Study` or a study YAML path (``None``: resume the one saved in ``study_dir``).
    ``out``: where progress is printed (``True``: stdout, ``False``/``None``: nowhere). ``max_jobs`` stops after
    that many new jobs (the rest stays for the next run). SIGINT, SIGTERM and
    SIGHUP (``nas.runtime.signals``) stop the running jobs and keep every finished one; the return value
    says ``stopped``. A refused start (a bad study, an impossible resource request) in a folder this call
    created leaves no folder behind.
    """
    from nas.fidelity.config import load_study
    from nas.runtime.lock import RunLock

    if study is not None and not isinstance(study, Study):
        study = load_study(study)
    sdir = StudyDir(study_dir)
    check_folder(sdir)  # before anything is created in it: a folder that is not a study is refused
    if study is None and not sdir.exists():
        prepare(sdir, None)
    created = not sdir.path.exists()
    with StopSignals() as signals, RunLock(_mk(sdir.path), FIDELITY):
        try:
            study, archs = prepare(sdir, study)
        except (UserError, KeyboardInterrupt):
            if created:  # a refused start leaves nothing behind
                shutil.rmtree(sdir.path, ignore_errors=True)
            raise
        out = sys.stdout if out is True else (out or None)  # stdout as it is at the call (a notebook, capsys)
        say = (lambda text: print(text, file=out, flush=True)) if out is not None else (lambda text: None)
        done, todo, left_after = set(), [], 0  # known once pending() returns
        try:
            done, todo, left_after = pending(sdir, study, archs, max_jobs)
            say(
                f"nas-fidelity: {len(archs)} architectures, {len(done)} jobs recorded, {len(todo)} to run -> "
                f"{sdir.path}"
            )
            if not todo:
                return {"done": len(done), "ran": 0, "remaining": 0, "stopped": False}
            sdir.repair_tail()  # before any job runs: a failure to repair costs no training
        except KeyboardInterrupt as err:  # a stop signal before the session: the study is saved, nothing ran
            why = getattr(err, "name", None) or signals.name or "SIGINT"
            say(
                f"nas-fidelity: stopped by {why} before any job ran; {len(done)} jobs are recorded. Resume with: "
                f"nas-fidelity --resume {sdir.path}"
            )
            return {"done": len(done), "ran": 0, "remaining": len(todo) + left_after, "stopped": True, "signal": why}
        return _session(study, sdir, done, todo, left_after, address, say, on_record, signals, created)


def _session(
    study: Study,
    sdir: StudyDir,
    done: list,
    todo: list[dict[str, Any]],
    left_after: int,
    address: str | None,
    say: Callable[[str], None],
    on_record: Callable[[dict[str, Any]], None] | None,
    signals: StopSignals,
    created: bool,
) -> dict[str, Any]:
    """Start Ray (the shared set-up: ``nas.runtime.cluster.start_ray``), run the jobs, stop on a signal."""
    s = study.settings
    started = False
    flag = StopFlag()
    inflight: dict[Any, dict[str, Any]] = {}
    progress = _Progress(sdir, len(done), len(todo), say, on_record)

    def on_stop(signum: int) -> None:  # the first signal while the jobs run: stop at the next check
        flag.request(signal.Signals(signum).name)

    try:
        import ray  # inside the try: a signal while Ray is imported (a second or two) is a pause too

        from nas.runtime.cluster import start_ray

        try:
            started = start_ray(  # inside the try: a signal while Ray starts is a pause too
                FIDELITY,
                address,
                cpus_per_trial=s.cpus_per_trial,
                gpus_per_trial=s.gpus_per_trial,
                log=lambda line: append_line(sdir.path / "ray.log", line + "\n"),  # not the terminal
                signals=signals,
                gpus_from=f"`study.gpus_per_trial: {s.gpus_per_trial:g}`"
                + (f" (in {study.file})" if study.file else ""),
                cpus_from=f"`study.cpus_per_trial: {s.cpus_per_trial:g}`"
                + (f" (in {study.file})" if study.file else ""),
            )
            setup = worker_setup(study).sharing(p.train.data for p in study.protocols)  # a data error: here
        except UserError:
            if created:  # nothing ran: a refused start leaves nothing behind
                if started:
                    ray.shutdown()
                    started = False
                shutil.rmtree(sdir.path, ignore_errors=True)
            raise
        signals.on_stop = on_stop
        _run_jobs(study, todo, inflight, progress, setup, flag)
    except KeyboardInterrupt as err:  # a signal before the jobs ran, or a second one: stop at once
        flag.request(getattr(err, "name", None) or signals.name or "SIGINT")
    finally:
        signals.on_stop = None
        dropped = len(inflight)
        for ref in inflight:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    why = signals.name or flag.why
    if not flag.set:
        return {"done": len(done) + progress.ran, "ran": progress.ran, "remaining": left_after, "stopped": False}
    ran = progress.ran
    say(
        f"nas-fidelity: stopped by {why}; {len(done) + ran} jobs are recorded, {dropped} running "
        f"job(s) dropped. Resume with: nas-fidelity --resume {sdir.path}"
    )
    return {
        "done": len(done) + ran,
        "ran": ran,
        "remaining": len(todo) - ran + left_after,
        "stopped": True,
        "signal": why,
    }


class _Progress:
    """Records each finished job and prints its progress line (with the elapsed time and an ETA)."""

    def __init__(
        self,
        sdir: StudyDir,
        done: int,
        todo: int,
        say: Callable[[str], None],
        on_record: Callable[[dict[str, Any]], None] | None,
    ):
        self.sdir, self.done, self.todo, self.say, self.on_record = sdir, done, todo, say, on_record
        self.ran = 0
        self.t0 = time.perf_counter()

    def record(self, rec: dict[str, Any]) -> None:
        self.sdir.append(rec)
        self.ran += 1
        if self.on_record is not None:
            self.on_record(rec)
        el = time.perf_counter() - self.t0
        eta = el / self.ran * (self.todo - self.ran)
        what = (
            f"score {rec['score']:.3f}"
            if rec.get("status") == "ok" and "score" in rec
            else rec.get("status")
            if rec.get("status") != "ok"
            else "ok"
        )
        self.say(
            f"[{self.done + self.ran:>4}/{self.done + self.todo}] {rec['protocol']:<14} seed {rec['seed']} "
            f"{rec['arch']} -> {what} ({rec.get('metrics', {}).get('wall_s', 0):.1f}s) | "
            f"{el / 60:.1f} min elapsed, ETA {eta / 60:.1f} min"
        )


def _run_jobs(
    study: Study,
    todo: list[dict[str, Any]],
    inflight: dict[Any, dict[str, Any]],
    progress: _Progress,
    setup: WorkerSetup,
    flag: StopFlag,
) -> None:
    """Run the jobs as Ray tasks, at most the concurrency limit at once, recording each as it finishes,
    until all are done or ``flag`` is set (a signal); ``inflight`` holds the running ones (the caller
    cancels them). The jobs finished when the flag is set are recorded before this returns."""
    import ray

    s = study.settings
    cpus = ray.cluster_resources().get("CPU", 1)
    limit = s.max_concurrent or max(1, int(cpus // s.cpus_per_trial))
    remote = ray.remote(run_job).options(
        num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=s.max_retries
    )
    setup_ref = ray.put(setup)
    queue = list(todo)
    while (queue or inflight) and not flag.set:
        while queue and len(inflight) < limit:
            job = queue.pop(0)
            inflight[remote.remote(job, setup_ref)] = job
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        _record(ready, inflight, progress)
    if inflight:  # stopped: keep what finished meanwhile
        ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
        _record(ready, inflight, progress)


def _record(ready: list, inflight: dict[Any, dict[str, Any]], progress: _Progress) -> None:
    """Record the finished jobs ``ready`` (a worker lost beyond its retries is an error record)."""
    import ray

    for ref in ready:
        job = inflight[ref]
        try:
            rec = ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker died beyond its retries, or the task raised
            rec = _lost_record(job, err)
        progress.record(rec)
        del inflight[ref]


def _lost_record(job: dict[str, Any], err: BaseException) -> dict[str, Any]:
    """The failed record of a job whose task did not return (``classify_failure``: a lost worker is an
    ``error``, one Ray killed for memory ``oom``)."""
    from trainers.training.result import classify_failure

    a = job["arch"]
    failure = classify_failure(err)
    return {
        "key": job["key"],
        "arch_id": a.id,
        "arch": str(a),
        "layout": a.layout_name,
        "protocol": job["protocol"],
        "seed": job["seed"],
        "status": failure.status,
        "reason": failure.reason,
        "metrics": {},
    }


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
