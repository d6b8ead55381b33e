"""Run a fidelity study: sample architectures, train each under every protocol on Ray, record, resume.

The study directory holds all state::

    STUDY_DIR/
      study.json          the resolved study (settings, search YAML, every protocol) and its fingerprint
      architectures.json  the sampled architectures, fixed at the first start
      jobs.jsonl          one line per finished job (training or zero-cost), appended and fsync'd
      driver.lock         held by the running driver
      fidelity.md/.json, scatter.png   derived by nas.fidelity.report

A job is one (architecture, protocol, seed) training, or the zero-cost proxies of one architecture.
Running the same study again skips every recorded job: a crashed, interrupted (Ctrl-C, SIGTERM, SIGHUP)
or budget-limited study resumes where it stopped. A failed training (error, NaN, out of memory) is a
record with its reason; the study goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..arch import Architecture
from ..errors import UserError
from ..fsio import append_line, atomic_write
from .config import REFERENCE, Study, study_from_dict

__all__ = ["StudyDir", "sample_architectures", "plan_jobs", "run_study", "ZERO_COST_JOB"]

ZERO_COST_JOB = "zero_cost"
FORMAT = 1


class StudyDir:
    """The files of one study directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.study_json = self.path / "study.json"
        self.archs_json = self.path / "architectures.json"
        self.jobs = self.path / "jobs.jsonl"

    def exists(self) -> bool:
        return self.study_json.is_file()

    def read_study(self) -> Study:
        """The study as saved at the first start (no source file needed)."""
        try:
            saved = json.loads(self.study_json.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(
                f"{self.study_json} cannot be read ({err}); it is the study's own record. Restore "
                "it, or start the study again from its YAML under a new --name."
            ) from None
        study = study_from_dict(saved["source"], saved.get("file"))
        if study.fingerprint() != saved.get("fingerprint"):
            raise UserError(
                f"The search YAML {study.experiment.file} of the study in {self.path} changed since "
                "the study started, so new jobs would train under another protocol than the "
                "recorded ones. Restore that file, or start a new study under another --name."
            )
        return study

    def read_architectures(self) -> list[Architecture]:
        return [Architecture.from_dict(a, str(self.archs_json)) for a in json.loads(self.archs_json.read_text())]

    def read_records(self) -> list[dict[str, Any]]:
        """Recorded jobs; a torn last line (a crash mid-write) is dropped and the file repaired."""
        if not self.jobs.is_file():
            return []
        lines = self.jobs.read_text().splitlines()
        out, bad = [], 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise UserError(
                        f"{self.jobs} line {i + 1} is damaged (not JSON). Remove that line to re-run "
                        "its job; every other recorded job is kept."
                    ) from None
                bad += 1
        if bad:  # rewrite without the fragment so the next append starts on a clean line
            atomic_write(self.jobs, "".join(json.dumps(r) + "\n" for r in out))
        return out

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.jobs, json.dumps(record) + "\n", sync=True)


def sample_architectures(study: Study) -> list[Architecture]:
    """``study.architectures`` distinct candidates within the budgets, the layouts taken in turn (so every
    layout is equally represented), or every candidate for ``all``."""
    from ..cost import count_cost

    exp = study.experiment
    space = exp.space
    k = exp.num_classes

    def fits(a: Architecture) -> bool:
        return space.budgets.unlimited or space.budgets.allows(
            count_cost(a, image_size=space.image_size, num_classes=k, in_chans=space.in_chans)
        )

    n = study.settings.architectures
    if n == "all":
        if space.size() > 10_000:
            raise UserError(
                f"`study.architectures: all` asks for every candidate, but the space has "
                f"{space.size():,}. Give a number (e.g. 30) to sample that many."
            )
        return _interleave_layouts([a for a in space.enumerate() if fits(a)], study.settings.seed)
    rng = random.Random(study.settings.seed)
    layouts = list(space.layouts)
    out: list[Architecture] = []
    seen: set[str] = set()
    misses = {lay: 0 for lay in layouts}
    i = 0
    while len(out) < n and layouts:
        want = layouts[i % len(layouts)]
        for _ in range(20_000):
            a = space.sample(rng)
            if a.layout_name == want and a.id not in seen and fits(a):
                out.append(a)
                seen.add(a.id)
                break
        else:  # this layout has no more distinct candidates within budget
            misses[want] += 1
            layouts.remove(want)
            continue
        i += 1
    return out


def _interleave_layouts(archs: list[Architecture], seed: int) -> list[Architecture]:
    """``archs`` shuffled within each layout (``seed``) and the layouts taken in turn, so that every prefix
    is a random sample stratified over layouts (the reference and the noise ceiling train prefixes)."""
    rng = random.Random(seed)
    groups: dict[str, list[Architecture]] = {}
    for a in archs:
        groups.setdefault(a.layout_name, []).append(a)
    for g in groups.values():
        rng.shuffle(g)
    out: list[Architecture] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def plan_jobs(study: Study, archs: list[Architecture]) -> list[dict[str, Any]]:
    """Every job of the study, cheapest first: zero-cost, proxies, reference seeds one after the other (so
    a study stopped early has complete architectures for the first reference seed). Seeds after the first
    train the first ``study.ceiling_architectures`` architectures, the first seed the first
    ``study.reference_architectures`` (the sample is in layout order, so each prefix is stratified)."""
    jobs = []
    if study.settings.zero_cost:
        jobs += [{"key": f"{a.id}/{ZERO_COST_JOB}", "arch": a, "protocol": ZERO_COST_JOB, "seed": 0} for a in archs]
    for p in study.proxies:
        for s in p.seeds:
            jobs += [{"key": f"{a.id}/{p.name}/{s}", "arch": a, "protocol": p.name, "seed": s} for a in archs]
    first, ceiling = study.settings.reference_architectures, study.settings.ceiling_architectures
    for i, s in enumerate(study.reference.seeds):
        n = first if i == 0 else ceiling if ceiling is not None else first
        some = archs if n is None else archs[:n]
        jobs += [{"key": f"{a.id}/{REFERENCE}/{s}", "arch": a, "protocol": REFERENCE, "seed": s} for a in some]
    return jobs


def run_job(job: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """One job inside a worker: a training under its protocol (through the search's trainer wrapper, so
    failures become results) or the zero-cost proxies. Returns the record to append."""
    import torch

    from trainers.shared import worker_dataset

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
        from trainers.zerocost import zero_cost_scores

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
    from ..search.trainable import run_trainer

    train, objective = setup["protocols"][job["protocol"]]
    train = dataclasses.replace(train, seed=job["seed"])
    dataset = worker_dataset(train.data, setup["image_size"], setup["in_chans"], setup.get("shared"))
    res = run_trainer(setup["trainer"], arch, dataset, train, objective, threads, None, setup["image_size"])
    rec = res.to_dict()  # with its per-round history (a tabulated benchmark replays it to a scheduler)
    rec["metrics"] = {**rec["metrics"], "job_s": time.perf_counter() - t0}
    return {**base, **rec}


def _setup(study: Study, shared: bool = False) -> dict[str, Any]:
    """What every job needs; ``shared``: also load the file-backed sources once into Ray's object store
    (``trainers.shared``; Ray must be initialised), read by every worker of a node without a copy."""
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
        from trainers.shared import share_datasets

        configs = [exp.train.data, *(p.train.data for p in study.protocols)]
        setup["shared"] = share_datasets(configs, exp.space.image_size, exp.space.in_chans)
    return setup


def _prepare(sdir: StudyDir, study: Study | None) -> tuple[Study, list[Architecture]]:
    """Create the study directory at the first start, or check that a rerun asks for the same study."""
    if sdir.exists():
        saved = json.loads(sdir.study_json.read_text())
        if study is not None and saved.get("fingerprint") != study.fingerprint():
            raise UserError(
                f"{sdir.path} holds a study with other settings (the study YAML, its search YAML "
                "or a protocol changed since it started). Resume it as it was with "
                f"`nas-fidelity --resume {sdir.path}`, or give this study another --name."
            )
        return sdir.read_study(), sdir.read_architectures()
    if study is None:
        raise UserError(
            f"{sdir.path} is not a study directory (no study.json). Start a study with "
            "`nas-fidelity STUDY.yaml --name NAME`."
        )
    archs = sample_architectures(study)
    if len(archs) < 2:
        raise UserError(
            f"The space of {study.experiment.file} gave {len(archs)} architecture(s) within its "
            "budgets; a study needs at least 2. Widen the space or its budgets."
        )
    sdir.path.mkdir(parents=True, exist_ok=True)
    atomic_write(sdir.archs_json, json.dumps([a.to_dict() for a in archs], indent=1))
    atomic_write(
        sdir.study_json,
        json.dumps(
            {"format": FORMAT, "fingerprint": study.fingerprint(), "file": study.file, "source": _source(study)},
            indent=1,
        ),
    )
    return study, archs


def _source(study: Study) -> dict[str, Any]:
    """The study YAML with its search YAML inlined (content and path), so the study reloads from study.json
    alone, whatever happens to the search YAML file later."""
    import yaml

    data = yaml.safe_load(Path(study.file).read_text()) if study.file else {}
    data = dict(data or {})
    data["study"] = {
        **(data.get("study") or {}),
        "space": {"file": str(Path(study.experiment.file).resolve()), "yaml": study.experiment.raw},
    }
    return data


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

    from ..search.cluster import connect
    from ..search.lock import RunLock
    from .config import load_study

    if study is not None and not isinstance(study, Study):
        study = load_study(study)
    sdir = StudyDir(study_dir)
    if study is None and not sdir.exists():
        _prepare(sdir, None)
    created = not sdir.path.exists()
    with RunLock(_mk(sdir.path)):
        try:
            study, archs = _prepare(sdir, study)
        except UserError:
            if created:  # a refused start leaves nothing behind
                shutil.rmtree(sdir.path, ignore_errors=True)
            raise
        done, todo, left_after = _pending(sdir, study, archs, max_jobs)
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
            from ..search.raylog import ray_notices

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


def _pending(
    sdir: StudyDir, study: Study, archs: list[Architecture], max_jobs: int | None
) -> tuple[set[str], list[dict[str, Any]], int]:
    """The recorded job keys, the jobs to run now (at most ``max_jobs``) and how many are left after them."""
    records = sdir.read_records()
    done = {r["key"] for r in records}
    todo = [j for j in plan_jobs(study, archs) if j["key"] not in done]
    left_after = max(0, len(todo) - max_jobs) if max_jobs is not None else 0
    if max_jobs is not None:
        todo = todo[:max_jobs]
    return done, todo, left_after


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

    from ..search.cluster import check_resources

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
