"""Training the supernets of a weight-sharing protocol (``train.supernet``) once, before the trials that inherit
from them: for a search run (``RUN/supernet/``) and for a fidelity study (``STUDY/supernet/``).

Each supernet (one per regime, ``trainers.training.supernet_state.regimes_of``) trains in chunks of
``train.supernet.checkpoint_every`` steps, each chunk one Ray task (on any node, with the trial's CPUs and GPUs)
that starts from the state the previous one returned; the supernets of the two regimes train side by side. The
driver writes each returned state as a checkpoint through the safe writer (``NAME-REGIME-FINGERPRINT.safetensors``: the
tensors, AdamW's moments and the batch generator as numpy arrays; the fingerprint of the space and protocol,
the step and the figures as metadata), prints a progress line, and on a pause (SIGINT/SIGTERM) cancels the
running chunks: a resumed command starts from the last checkpoint, and draws what it would have drawn. Once
trained, each supernet's tensors go into Ray's object store once; trial workers read them from there
(:meth:`nas.search.trainable.WorkerSetup.supernet_weights`, once per worker process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import UserError
from nas.fsio import atomic_write, make_dirs, read_safetensors

if TYPE_CHECKING:
    from nas.space.search_space import SearchSpace
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig

FORMAT = 1
KIND = "coatnas-supernet"
FOLDER = "supernet"


@dataclass(frozen=True)
class SupernetJob:
    """One supernet to train: ``name`` (``search``, or a study's ``PROTOCOL-SEED``) and its regime."""

    name: str
    regime: str
    train: TrainConfig
    objective: ObjectiveConfig
    fingerprint: str

    @property
    def file(self) -> str:
        """``NAME-REGIME-FINGERPRINT.safetensors``: a changed protocol (``--new-protocol``) trains a supernet of its
        own beside the old one, which stays."""
        return f"{self.name}-{self.regime}-{self.fingerprint}.safetensors"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.regime})" if self.name != "search" else self.regime


def fingerprint(space: SearchSpace, train: TrainConfig, objective: ObjectiveConfig, regime: str) -> str:
    """What a supernet's weights depend on: the space, the training protocol (not where the data lie: their
    identity), the supernet's own training settings and the regime (its subset)."""
    from nas.search.config import data_identity
    from trainers.training.config import flat

    sn = dataclasses.asdict(train.supernet) if train.supernet is not None else {}
    # settings of the trials (and `regimes`, which only says which supernets train), not of one supernet
    for after in ("finetune_steps", "finetune_lr", "cache", "regimes"):
        sn.pop(after, None)
    t = flat(dataclasses.asdict(dataclasses.replace(train, supernet=None)), "train")
    for where in ("path", "url", "md5", "download"):
        t.pop(f"train.data.{where}", None)
    t["train.data.files"] = data_identity(train.data)
    text = json.dumps(
        {
            "space": space.fingerprint(),
            "train": t,
            "supernet": sn,
            "regime": regime,
            "subset_fraction": objective.subset_fraction if regime == "generalization" else None,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def jobs_of(name: str, space: SearchSpace, train: TrainConfig, objective: ObjectiveConfig) -> list[SupernetJob]:
    """The supernets the protocol ``(train, objective)`` trains, named ``name``."""
    from trainers.training.supernet_state import regimes_of

    return [
        SupernetJob(name, r, train, objective, fingerprint(space, train, objective, r))
        for r in regimes_of(train, objective)
    ]


# --------------------------------------------------------------------------------------- checkpoints
_FIX = (
    "It is written by nas-search / nas-fidelity while they train a supernet; move it aside (or delete it) and the "
    "supernet trains again from the start."
)


def write_checkpoint(path: Path, job: SupernetJob, arrays: Mapping[str, Any], meta: Mapping[str, float]) -> None:
    """Write the state ``arrays`` of ``job``'s supernet after ``meta["step"]`` steps, atomically."""
    from safetensors.numpy import save

    header = {
        "kind": KIND,
        "format": str(FORMAT),
        "fingerprint": job.fingerprint,
        "regime": job.regime,
        "steps": str(job.train.supernet.steps),
        **{k: repr(float(v)) for k, v in meta.items()},
    }
    make_dirs(path.parent)
    atomic_write(path, save(dict(arrays), metadata=header), what="supernet checkpoint")


def read_checkpoint(path: Path, job: SupernetJob) -> tuple[dict[str, Any], dict[str, float]]:
    """The state and figures of ``job``'s supernet saved at ``path``: checked to be a supernet checkpoint of
    this space and protocol, at a step within its training, with finite tensors; else one paragraph."""
    import numpy as np

    from trainers.training.supernet_state import RNG, WEIGHTS

    what = f"the supernet checkpoint of {job.label}"
    arrays, header = read_safetensors(path, what=what, fix=_FIX, numpy=True)

    def refuse(problem: str) -> UserError:
        return UserError(f"{path}: not {what}: {problem}. {_FIX}")

    if header.get("kind") != KIND:
        raise refuse("its metadata does not say it is a coatnas supernet")
    if header.get("format") != str(FORMAT):
        raise refuse(f"it is format {header.get('format')!r}; this coatnas reads format {FORMAT}")
    if header.get("fingerprint") != job.fingerprint or header.get("regime") != job.regime:
        raise refuse("it was trained for another space, protocol or regime")
    try:
        meta = {k: float(v) for k, v in header.items() if k not in ("kind", "format", "fingerprint", "regime")}
    except ValueError:
        raise refuse("its metadata holds a figure that is not a number") from None
    step = meta.get("step", math.nan)
    if not (math.isfinite(step) and step == int(step) and 1 <= step <= job.train.supernet.steps):
        raise refuse(f"its step {header.get('step')!r} is not within its training (1..{job.train.supernet.steps})")
    if meta.get("steps") != job.train.supernet.steps:
        raise refuse(f"it trains for {header.get('steps')} steps, not {job.train.supernet.steps}")
    if RNG not in arrays or not any(k.startswith(WEIGHTS) for k in arrays):
        raise refuse("it holds no supernet weights or no generator state")
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise refuse(f"its tensor {key} holds NaN or infinite values")
    return arrays, meta


# -------------------------------------------------------------------------------------------- training
def _chunk(space, data, image_size: int, in_chans: int, shared, train, objective, regime, arrays, step, threads):
    """The body of one chunk's Ray task: the data set (from the object store when shared), then
    ``trainers.training.supernet.train_chunk``."""
    from trainers.data.shared import worker_dataset
    from trainers.training.supernet import train_chunk

    dataset = worker_dataset(data, image_size, in_chans, shared)
    return train_chunk(space, dataset, train, objective, regime, arrays, step, num_threads=threads)


def _check(space, num_classes: int, arrays) -> str | None:
    """The body of a checkpoint's check (a Ray task: it needs torch): ``trainers.training.supernet.state_problem``."""
    from trainers.training.supernet import state_problem

    return state_problem(space, num_classes, arrays)


def train_supernets(
    folder: Path,
    jobs: list[SupernetJob],
    space: SearchSpace,
    *,
    num_classes: int,
    image_size: int,
    in_chans: int,
    shared: Mapping[Any, Any] | None,
    cpus: float,
    gpus: float,
    say: Callable[[str], None],
    stopping: Callable[[], bool],
    prog: str = "nas-search",
) -> dict[str, Any] | None:
    """Train (or finish) every supernet of ``jobs`` in ``folder`` (those of one fingerprint once, under the first
    one's name); return ``{name: object ref}`` of each name's
    ``{regime: {key: array}}`` in Ray's object store, or ``None`` when ``stopping()`` turned true (a pause: the
    checkpoints stay). A training that fails (diverges, runs out of memory) is a :class:`UserError` saying so."""
    import ray

    unique: dict[str, SupernetJob] = {}
    for job in jobs:  # protocols that differ only in their trials' settings share one supernet
        unique.setdefault(job.fingerprint, job)
    states: dict[SupernetJob, tuple[Any, int, dict[str, float]]] = {}
    for job in unique.values():
        path = folder / job.file
        if path.exists():
            arrays, meta = read_checkpoint(path, job)
            states[job] = (arrays, int(meta["step"]), meta)
        else:
            states[job] = (None, 0, {})
    loaded = [j for j in unique.values() if states[j][0] is not None]
    if loaded:  # every tensor at its shape, before any chunk or trial uses them
        check = ray.remote(_check).options(num_cpus=min(cpus, 1.0) or 1.0)
        problems = ray.get([check.remote(space, num_classes, states[j][0]) for j in loaded])
        for job, problem in zip(loaded, problems):
            if problem:
                raise UserError(f"{folder / job.file}: not the supernet checkpoint of {job.label}: {problem}. {_FIX}")
    todo = [j for j in unique.values() if states[j][1] < j.train.supernet.steps]
    if todo:
        say(
            f"{prog}: training {len(todo)} supernet(s) once for the whole space ("
            + ", ".join(f"{j.label}: step {states[j][1]}/{j.train.supernet.steps}" for j in todo)
            + f"); checkpoints in {folder}"
        )
    task = ray.remote(_chunk).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
    threads = max(1, int(cpus))
    t0, ran = time.perf_counter(), 0
    inflight: dict[Any, SupernetJob] = {}
    lost: dict[SupernetJob, int] = {}

    def submit(job: SupernetJob) -> None:
        arrays, step, _ = states[job]
        t, regime = job.train, job.regime
        ref = task.remote(space, t.data, image_size, in_chans, shared, t, job.objective, regime, arrays, step, threads)
        inflight[ref] = job

    for job in todo:
        submit(job)
    try:
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            if stopping():
                return None
            for ref in ready:
                job = inflight.pop(ref)
                try:
                    arrays, figures = ray.get(ref)
                except ray.exceptions.RayError as err:
                    time.sleep(0.5)  # a stop signal sent to the whole process group may reach the workers first
                    if stopping():
                        return None
                    lost[job] = lost.get(job, 0) + 1
                    if isinstance(err, ray.exceptions.RayTaskError) or lost[job] > 3:
                        raise _failure(err, job) from None
                    submit(job)  # its worker or node was lost: the chunk runs again from the same state
                    continue
                before = states[job][2]
                spent = before.get("seconds_total", 0.0) + figures["seconds"]
                meta = {**figures, "seconds_total": spent}
                write_checkpoint(folder / job.file, job, arrays, meta)
                ran += int(figures["step"]) - states[job][1]
                states[job] = (arrays, int(figures["step"]), meta)
                step, total = int(figures["step"]), job.train.supernet.steps
                left = sum(j.train.supernet.steps - states[j][1] for j in todo)  # steps of all of them
                eta = left * (time.perf_counter() - t0) / max(1, ran)  # at the pace of this session, all in parallel
                say(
                    f"{prog}: supernet {job.label}: step {step}/{total}, loss {figures['loss']:.3f}, "
                    f"acc {figures['acc']:.2f}, {figures['seconds']:.0f} s for the last "
                    f"{job.train.supernet.checkpoint_every} steps"
                    + (f"; all supernets done in about {eta / 60:.0f} min" if left else "")
                )
                if step < total:
                    submit(job)
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
    if todo:
        say(f"{prog}: supernet(s) trained in {time.perf_counter() - t0:.0f} s")
    return share_supernets(jobs, {j: states[unique[j.fingerprint]][0] for j in jobs})


def _failure(err, job: SupernetJob) -> UserError:
    """The paragraph of a chunk that failed: its cause as the trials' classifier says (diverged, out of memory,
    error), or the workers lost more than three times, and what to do."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, UserError):
        return cause
    from trainers.training.result import classify_failure

    failure = classify_failure(cause if isinstance(cause, BaseException) else err)
    hint = {
        "diverged": "lower `train.supernet.lr` (or `train.lr`), or keep `train.grad_clip` on",
        "oom": "lower `train.batch_size`, or give each trial more memory",
    }.get(failure.status, "the reason above says what failed")
    return UserError(
        f"The supernet {job.label} failed to train ({failure.status}): {failure.reason}. The checkpoints written "
        f"so far are kept (a resumed command continues from the last). Fix: {hint}."
    )


def share_supernets(jobs: list[SupernetJob], states: Mapping[SupernetJob, Any]) -> dict[str, Any]:
    """``{name: object ref}``: each name's trained tensors (``{regime: {key: array}}``) put into Ray's object store
    once, for every worker of every node to read without a copy."""
    import ray

    from trainers.training.supernet_state import weights_of

    by_name: dict[str, dict[str, Any]] = {}
    for job in jobs:
        by_name.setdefault(job.name, {})[job.regime] = weights_of(states[job])
    return {name: ray.put(weights) for name, weights in by_name.items()}


def with_supernets(exp, run, setup, say, signals, flag, prog: str = "nas-search"):
    """``setup`` (a search's :class:`~nas.search.trainable.WorkerSetup`, its data shared) with the run's trained
    supernets (``RUN/supernet/``), trained or finished here first; ``None`` when a signal paused the training
    (``flag`` says why; the checkpoints resume it)."""
    import signal as signal_module

    jobs = jobs_of("search", exp.space, exp.train, exp.objective)
    previous = signals.on_stop
    signals.on_stop = lambda signum: flag.request(signal_module.Signals(signum).name)
    try:
        refs = train_supernets(
            run.path / FOLDER,
            jobs,
            exp.space,
            num_classes=exp.num_classes,
            image_size=exp.space.image_size,
            in_chans=exp.space.in_chans,
            shared=setup.shared,
            cpus=exp.search.cpus_per_trial,
            gpus=exp.search.gpus_per_trial,
            say=say,
            stopping=lambda: flag.set,
            prog=prog,
        )
    except KeyboardInterrupt as err:  # a second signal: stop at once, the checkpoints written stay
        flag.request(signal_module.Signals(getattr(err, "signum", signal_module.SIGINT)).name)
        refs = None
    finally:
        signals.on_stop = previous
    if refs is None:
        why = flag.why or "stopped"
        say(f"{prog}: {why}: the supernet's training pauses; resuming continues from its last checkpoint")
        return None
    return dataclasses.replace(setup, supernets=refs)
