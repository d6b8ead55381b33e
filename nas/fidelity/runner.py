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
from nas.fidelity.config import Study
from nas.fidelity.plan import ZERO_COST_JOB, plan_jobs, sample_architectures
from nas.fidelity.studydir import StudyDir, pending, prepare
from nas.fsio import append_line
from nas.model.arch import Architecture

__all__ = ["StudyDir", "sample_architectures", "plan_jobs", "run_study", "ZERO_COST_JOB"]


def run_job(job: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """One job inside a worker: a training under its protocol (through the search's trainer wrapper, so
    failures become results) or the zero-cost proxies. Returns the record to append."""
    import torch

    from trainers.data.shared import worker_dataset

    threads = max(1, int(setup["cpus_per_trial"]))
    torch.set_num_threads(threads)
    arch: Architecture = job["arch"]
    base = {
        "key": job["key"],
        "arch_id": arch.id,
        "arch": str(arch),
        "layout": arch.layout_name,
        "protocol": job["protocol"],
        "seed": job["seed"],
    }
    t0 = time.perf_counter()
    if job["protocol"] == ZERO_COST_JOB:
        from trainers.objectives.zerocost import zero_cost_scores

        train = setup["base_train"]
        dataset = worker_dataset(train.data, setup["image_size"], setup["in_chans"], setup.get("shared"))
        try:
            scores = zero_cost_scores(
                arch,
                dataset,
                list(setup["zero_cost"]),
                batch_size=setup["zero_cost_batch"],
                seed=setup["seed"],
                image_size=setup["image_size"],
            )
            return {
                **base,
                "status": "ok",
                "reason": "",
                "zero_cost": scores,
                "metrics": {"wall_s": time.perf_counter() - t0},
            }
        except Exception as err:  # noqa: BLE001 - a failed measurement is a record, the study goes on
            return {
                **base,
                "status": "error",
                "reason": f"{type(err).__name__}: {err}"[:500],
                "zero_cost": {},
                "metrics": {"wall_s": time.perf_counter() - t0},
            }
    from nas.search.trainable import run_trainer

    train, objective = setup["protocols"][job["protocol"]]
    train = dataclasses.replace(train, seed=job["seed"])
    dataset = worker_dataset(train.data, setup["image_size"], setup["in_chans"], setup.get("shared"))
    res = run_trainer(setup["trainer"], arch, dataset, train, objective, threads, None, setup["image_size"])
    rec = res.to_dict()  # with its per-round history (a tabulated benchmark replays it to a scheduler)
    rec["metrics"] = {**rec["metrics"], "job_s": time.perf_counter() - t0}
    return {**base, **rec}


def _setup(study: Study, shared: bool = False) -> dict[str, Any]:
    """What every job needs; ``shared``: also load the file-backed sources once into Ray's object store
    (``trainers.data.shared``; Ray must be initialised), read by every worker of a node without a copy."""
    exp = study.experiment
    setup = {
        "cpus_per_trial": study.settings.cpus_per_trial,
        "image_size": exp.space.image_size,
        "in_chans": exp.space.in_chans,
        "trainer": exp.search.trainer,
        "base_train": exp.train,
        "protocols": {p.name: (p.train, p.objective) for p in study.protocols},
        "zero_cost": study.settings.zero_cost,
        "zero_cost_batch": study.settings.zero_cost_batch,
        "seed": study.settings.seed,
    }
    if shared:
        from trainers.data.shared import share_datasets

        configs = [exp.train.data, *(p.train.data for p in study.protocols)]
        setup["shared"] = share_datasets(configs, exp.space.image_size, exp.space.in_chans)
    return setup


def run_study(
    study: Study | str | os.PathLike | None = None,
    *,
    study_dir: str | os.PathLike,
    address: str | None = None,
    max_jobs: int | None = None,
    out: TextIO | None = sys.stdout,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study in ``study_dir`` on Ray; return ``{"done", "ran", "remaining", "stopped"}``.

    ``study`` is a :class:`Study` or a study YAML path (``None``: resume the one saved in ``study_dir``).
    ``max_jobs`` stops after that many new jobs (the rest stays for the next run). SIGINT, SIGTERM and
    SIGHUP stop the running jobs and keep every finished one; the return value says ``stopped``.
    """
    import ray

    from nas.fidelity.config import load_study
    from nas.runtime.cluster import connect
    from nas.runtime.lock import RunLock

    if study is not None and not isinstance(study, Study):
        study = load_study(study)
    sdir = StudyDir(study_dir)
    if study is None and not sdir.exists():
        prepare(sdir, None)
    created = not sdir.path.exists()
    with RunLock(_mk(sdir.path)):
        try:
            study, archs = prepare(sdir, study)
        except UserError:
            if created:  # a refused start leaves nothing behind
                shutil.rmtree(sdir.path, ignore_errors=True)
            raise
        done, todo, left_after = pending(sdir, study, archs, max_jobs)
        say = (lambda text: print(text, file=out, flush=True)) if out is not None else (lambda text: None)
        say(f"nas-fidelity: {len(archs)} architectures, {len(done)} jobs recorded, {len(todo)} to run -> {sdir.path}")
        if not todo:
            return {"done": len(done), "ran": 0, "remaining": 0, "stopped": False}
        stop = _SignalStop()
        started = False
        stop.install()
        inflight: dict[Any, dict[str, Any]] = {}
        progress = _Progress(sdir, len(done), len(todo), say, on_record)
        try:
            from nas.runtime.raylog import ray_notices

            with ray_notices(lambda line: append_line(sdir.path / "ray.log", line + "\n")):  # not the terminal
                started = connect(address, num_cpus=None)  # inside: a signal while Ray starts is a pause too
            stop.install()  # ray.init puts its own SIGTERM handler (a C++ stack dump) in place of ours
            _run_jobs(study, todo, inflight, progress)
        except KeyboardInterrupt:
            for ref in inflight:
                ray.cancel(ref, force=True)
            why = stop.signal or "SIGINT"
            ran = progress.ran
            say(
                f"nas-fidelity: stopped by {why}; {len(done) + ran} jobs are recorded, {len(inflight)} running "
                f"job(s) dropped. Resume with: nas-fidelity --resume {sdir.path}"
            )
            return {
                "done": len(done) + ran,
                "ran": ran,
                "remaining": len(todo) - ran + left_after,
                "stopped": True,
                "signal": why,
            }
        finally:
            stop.restore()
            if started:
                ray.shutdown()
        return {"done": len(done) + progress.ran, "ran": progress.ran, "remaining": left_after, "stopped": False}


class _SignalStop:
    """SIGINT, SIGTERM and SIGHUP as a KeyboardInterrupt that remembers the signal's name."""

    def __init__(self):
        self.signal: str | None = None
        self.handlers: dict[Any, Any] = {}

    def _on_signal(self, signum, frame):
        self.signal = signal.Signals(signum).name
        raise KeyboardInterrupt

    def install(self) -> None:
        """Put the handlers in place (again); the first previous handler of each signal is kept."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (a notebook's worker thread): no handlers
                return
            self.handlers.setdefault(sig, previous)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, h in self.handlers.items():
            signal.signal(sig, h)


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
    study: Study, todo: list[dict[str, Any]], inflight: dict[Any, dict[str, Any]], progress: _Progress
) -> None:
    """Run the jobs as Ray tasks, at most the concurrency limit at once, recording each as it finishes;
    ``inflight`` holds the running ones (the caller cancels them on a stop)."""
    import ray

    from nas.runtime.cluster import check_resources

    s = study.settings
    check_resources(s.cpus_per_trial, s.gpus_per_trial)
    cpus = ray.cluster_resources().get("CPU", 1)
    limit = s.max_concurrent or max(1, int(cpus // s.cpus_per_trial))
    remote = ray.remote(run_job).options(
        num_cpus=s.cpus_per_trial, num_gpus=s.gpus_per_trial, max_retries=s.max_retries
    )
    setup_ref = ray.put(_setup(study, shared=True))
    queue = list(todo)
    while queue or inflight:
        while queue and len(inflight) < limit:
            job = queue.pop(0)
            inflight[remote.remote(job, setup_ref)] = job
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
        for ref in ready:
            job = inflight.pop(ref)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died beyond its retries
                rec = _lost_record(job, err)
            progress.record(rec)


def _lost_record(job: dict[str, Any], err: Exception) -> dict[str, Any]:
    """The error record of a job whose worker died beyond its retries."""
    a = job["arch"]
    return {
        "key": job["key"],
        "arch_id": a.id,
        "arch": str(a),
        "layout": a.layout_name,
        "protocol": job["protocol"],
        "seed": job["seed"],
        "status": "error",
        "reason": f"worker lost: {str(err).strip().splitlines()[0][:300]}",
        "metrics": {},
    }


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
