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
import math
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from nas.errors import UserError
from nas.fidelity.config import ZERO_COST_JOB, Study
from nas.fidelity.plan import TRAIN_JOB
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
    supernet = setup.supernet_weights(f"{job['protocol']}-{job['seed']}") if train.supernet is not None else None
    res = run_trainer(
        setup.trainer, arch, dataset, train, objective, threads, None, setup.image_size, supernet=supernet
    )
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


def _with_supernets(
    study: Study, sdir: StudyDir, setup: WorkerSetup, todo: list[dict[str, Any]], say, flag: StopFlag
) -> WorkerSetup | None:
    """``setup`` with the trained supernets of the weight-sharing protocols (``train.supernet``) that ``todo``
    still trains, one per protocol and seed (``STUDY/supernet/PROTOCOL-SEED-REGIME-FINGERPRINT.safetensors``;
    protocols that differ only in their trials' settings share the first one's), trained or finished here first;
    ``None`` when ``flag`` was set while they trained."""
    from nas.search.supernet import FOLDER, jobs_of, train_supernets

    every, needed = [], set()
    for p in study.protocols:  # every weight-sharing protocol and seed, in the study's order: a supernet that
        if p.train.supernet is None:  # several share is always found under the first one's name
            continue
        for seed in p.seeds:
            train = dataclasses.replace(p.train, seed=seed)
            jobs = jobs_of(f"{p.name}-{seed}", study.experiment.space, train, p.objective)
            every += jobs
            if any(j["protocol"] == p.name and j["seed"] == seed and j["kind"] == TRAIN_JOB for j in todo):
                needed |= {j.fingerprint for j in jobs}
    jobs = [j for j in every if j.fingerprint in needed]
    if not jobs:
        return setup
    s = study.settings
    refs = train_supernets(
        sdir.path / FOLDER,
        jobs,
        study.experiment.space,
        num_classes=study.experiment.num_classes,
        image_size=setup.image_size,
        in_chans=setup.in_chans,
        shared=setup.shared,
        cpus=s.cpus_per_trial,
        gpus=s.gpus_per_trial,
        say=say,
        stopping=lambda: flag.set,
        prog="nas-fidelity",
    )
    return None if refs is None else dataclasses.replace(setup, supernets={**(setup.supernets or {}), **refs})


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
    progress = _Progress(sdir, len(done), todo, say, on_record)

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
            t_data = time.perf_counter()
            setup = worker_setup(study).sharing(p.train.data for p in study.protocols)  # a data error: here
            _say_data(setup, time.perf_counter() - t_data, say)
        except UserError:
            if created:  # nothing ran: a refused start leaves nothing behind
                if started:
                    ray.shutdown()
                    started = False
                shutil.rmtree(sdir.path, ignore_errors=True)
            raise
        signals.on_stop = on_stop
        setup = _with_supernets(study, sdir, setup, todo, say, flag)
        if setup is not None:  # None: a signal paused the supernets' training (its checkpoints resume it)
            progress.prior = kind_work(study, setup)
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


def eta_by_kind(
    seconds: Mapping[str, Sequence[float]],
    left: Mapping[str, int],
    parallel: int,
    work: Mapping[str, float] | None = None,
    running: Sequence[tuple[str, float]] = (),
) -> float | None:
    """Seconds left of a study whose jobs differ in kind (the zero-cost proxies, each proxy protocol, the
    reference): each kind's mean seconds per job times its jobs left, summed and divided by the jobs that run
    at once.

    Args:
        seconds: the seconds of each finished job, by kind.
        left: the jobs not finished, by kind (the running ones included).
        parallel: jobs at once (fewer when fewer are left).
        work: the relative cost of each training kind (``kind_work``): a kind not timed yet is estimated from
            the timed ones through it. Without it (or for a zero-cost kind) an untimed kind with jobs left
            makes the ETA unknown (``None``) rather than wrong.
        running: ``(kind, seconds so far)`` of each running job: what it has done is not left.
    """
    mean = {k: math.fsum(v) / len(v) for k, v in seconds.items() if v}
    work = work or {}
    timed = [(mean[k], work[k]) for k in mean if work.get(k)]
    per_work = math.fsum(m / w for m, w in timed) / len(timed) if timed else None  # seconds per unit of work
    per_job: dict[str, float] = {}
    for k, n in left.items():
        if n <= 0:
            continue
        if k in mean:
            per_job[k] = mean[k]
        elif per_work is not None and work.get(k):
            per_job[k] = per_work * work[k]
        else:
            return None
    total = math.fsum(per_job[k] * n for k, n in left.items() if n > 0)
    total -= math.fsum(min(s, per_job[k]) for k, s in running if k in per_job)
    jobs = sum(n for n in left.values() if n > 0)
    return max(0.0, total) / max(1, min(parallel, jobs))


def kind_work(study: Study, setup: WorkerSetup | None = None) -> dict[str, float]:
    """The relative cost of one training of each protocol of ``study``: images seen in training (steps per
    regime x batch size x regimes). An epoch is the training split, from the shared data set when ``setup``
    holds it, else estimated from the source's size (``limit``, ``val_fraction``)."""
    out = {}
    for p in study.protocols:
        t = p.train
        steps = t.steps
        if steps is None:
            n = _train_images(t.data, setup)
            if n is None:
                continue
            steps = t.epochs * max(1, n // min(t.batch_size, n))
        out[p.name] = float(steps * t.batch_size * (2 if p.objective.mode == "both" else 1))
    return out


def _train_images(data, setup: WorkerSetup | None) -> int | None:
    """Images in the training split of ``data``: counted in the shared data set, else estimated."""
    from nas.search.config import images_hint

    ref = (setup.shared or {}).get(data) if setup is not None else None
    if ref is not None:
        import ray

        return int(len(ray.get(ref)["y_train"]))
    n = images_hint(data)
    if n is None:
        return None
    if data.limit is not None:
        n = min(n, data.limit)
    return max(1, round(n * (1 - data.val_fraction)))


def _say_data(setup: WorkerSetup, seconds: float, say: Callable[[str], None]) -> None:
    """One line per data set the study's workers share: what, how many images, how long it took."""
    import ray

    for data, ref in (setup.shared or {}).items():
        packed = ray.get(ref)
        n_train, n_val = len(packed["y_train"]), len(packed["y_val"])
        where = f" {data.path}" if data.path else ""
        say(
            f"nas-fidelity: data {data.name}{where}: {n_train:,} training and {n_val:,} validation images, "
            f"{packed['num_classes']} classes, loaded into Ray's object store in {seconds:.1f} s"
        )


class _Progress:
    """Records each finished job and prints its progress line (with the elapsed time and an ETA by kind of
    job: :func:`eta_by_kind`)."""

    def __init__(
        self,
        sdir: StudyDir,
        done: int,
        todo: list[dict[str, Any]],
        say: Callable[[str], None],
        on_record: Callable[[dict[str, Any]], None] | None,
    ):
        self.sdir, self.done, self.todo, self.say, self.on_record = sdir, done, len(todo), say, on_record
        self.ran = 0
        self.t0 = time.perf_counter()
        self.left = Counter(job["protocol"] for job in todo)  # by kind: the protocol (or zero_cost)
        self.seconds: dict[str, list[float]] = {}
        self.prior: dict[str, float] = {}  # kind_work, once the data is loaded
        self.parallel = 1
        self.running: dict[Any, tuple[str, float]] = {}  # in-flight job -> (kind, perf_counter at submission)

    def eta_s(self) -> float | None:
        now = time.perf_counter()
        running = [(kind, now - t) for kind, t in self.running.values()]
        return eta_by_kind(self.seconds, self.left, self.parallel, self.prior, running)

    def record(self, rec: dict[str, Any], seconds: float | None = None) -> None:
        self.sdir.append(rec)
        self.ran += 1
        kind = rec.get("protocol")
        self.left[kind] -= 1
        if seconds is not None and rec.get("status") == "ok":
            self.seconds.setdefault(kind, []).append(seconds)
        if self.on_record is not None:
            self.on_record(rec)
        el = time.perf_counter() - self.t0
        eta = self.eta_s()
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
            f"{el / 60:.1f} min elapsed, ETA {'--' if eta is None else f'{eta / 60:.1f} min'}"
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
    progress.parallel = limit
    while (queue or inflight) and not flag.set:
        while queue and len(inflight) < limit:
            job = queue.pop(0)
            ref = remote.remote(job, setup_ref)
            inflight[ref] = job
            progress.running[ref] = (job["protocol"], time.perf_counter())
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
        _, submitted = progress.running.pop(ref, (None, None))
        progress.record(rec, None if submitted is None else time.perf_counter() - submitted)
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
