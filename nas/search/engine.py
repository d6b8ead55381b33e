"""``nas.search.run``: the search driver (Ray Tune runs the trials, Optuna proposes and ranks them).

Usable from a notebook::

    from nas.search import run
    res = run("coatnet.yaml", trials=8, name="demo")
    res.rows[0], res.best_path

The run directory is the single source of truth (``nas.search.rundir``); calling ``run`` again with the
same name (or ``resume=True`` and ``run_dir``) continues the search: finished trials are kept, interrupted
ones re-run, and ``trials`` may raise the budget.
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..errors import UserError
from .config import Experiment, load_experiment, protocol_of
from .leaderboard import format_table, latest_records, write_leaderboard
from .rundir import DEFAULT_ROOT, STUDY_NAME, RunDir, atomic_write, new_meta
from .storage import Mirror, is_uri

__all__ = ["run", "dry_run", "SearchResult", "Progress", "resolve_run_dir", "model_config_of", "protocol_of",
           "SearchInterrupted", "EXIT_CODES"]

NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
# exit status of nas-search stopped by a signal (everything saved, resumable): 128 + the signal number
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SearchInterrupted(KeyboardInterrupt):
    """The search was stopped by a signal before it could stop cleanly (``signum``: which)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Progress:
    """Counts shown in the live progress line (and passed to ``should_stop``)."""

    target: int
    done: int = 0
    running: int = 0
    failed: int = 0
    skipped: int = 0
    done_at_start: int = 0
    best: dict[str, Any] | None = None
    elapsed_s: float = 0.0

    @property
    def eta_s(self) -> float | None:
        new = self.done - self.done_at_start
        if new <= 0:
            return None
        return self.elapsed_s / new * max(0, self.target - self.done)


@dataclass
class SearchResult:
    """What a search leaves: the leaderboard rows (best first), the best row and its exported config."""

    run_dir: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_path: Path | None
    completed: int
    target: int
    interrupted: bool = False
    exhausted: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    stopped_by: int | None = None  # the signal that stopped the search (SIGINT, SIGTERM, SIGHUP), if any

    def table(self, limit: int | None = 20) -> str:
        return format_table(self.rows, limit)


# ------------------------------------------------------------------------------------------ helpers
def _fmt_s(s: float | None) -> str:
    if s is None:
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def resolve_run_dir(name: str | None, run_dir: str | os.PathLike | None, space_file: str | None) -> Path:
    """``run_dir`` if given, else ``runs/<name>`` (name defaults to the space file's stem)."""
    if run_dir is not None:
        return Path(run_dir).expanduser()
    given = name is not None
    if name is None:
        name = Path(space_file).stem if space_file else "search"
    if not NAME_RE.fullmatch(name):
        which = f"--name {name!r}" if given else f"The run name {name!r} (the space file's stem)"
        raise UserError(f"{which} is not a valid run name: use 1-100 letters, digits, '-', '_' and '.' (not "
                        f"first) (it becomes the folder {DEFAULT_ROOT}/<name>); pass --name NAME, or --run-dir for "
                        "any other place.")
    return Path(DEFAULT_ROOT) / name


def model_config_of(rec: dict[str, Any], exp: Experiment, run: RunDir):
    """The :class:`ModelConfig` of a trial record, with its provenance."""
    from ..arch import Architecture, ModelConfig
    arch = Architecture.from_dict(rec["arch"])
    m = rec.get("metrics", {})
    num_classes = int(m.get("num_classes") or exp.num_classes)
    metrics = {k: round(float(rec[k]), 6) for k in ("generalization", "capacity", "score")}
    metrics.update({k: round(float(m[k]), 6) for k in ("val_acc", "train_acc", "params", "macs") if k in m})
    return ModelConfig(arch=arch, num_classes=num_classes, image_size=exp.space.image_size,
                       in_chans=exp.space.in_chans, provenance={
                           "run": str(run.path), "trial": rec.get("number"), "id": rec["id"],
                           "status": rec["status"], "data": exp.train.data.name, "metrics": metrics})


def _write_model_config(config, path: Path) -> Path:
    atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def _protocol_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k, '(none)')!r} -> {new.get(k, '(none)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


# ------------------------------------------------------------------------------------------ dry run
def dry_run(space: str | os.PathLike | Experiment, *, samples: int = 5, seed: int | None = None,
            trials: int | None = None) -> str:
    """Validate the YAML and describe the search without training: size, budgets, sampled candidates
    (drawn with ``seed``, default the YAML's ``search.seed``)."""
    from ..cost import count_cost
    from ..limits import check_value
    check_value(samples, "samples", None, "--samples")
    exp = space if isinstance(space, Experiment) else load_experiment(space)
    exp = exp.with_search(trials=trials, seed=seed)
    seed = exp.search.seed
    sp, k = exp.space, exp.num_classes
    rng = random.Random(seed)
    lines = [f"space {exp.file}: {sp.size():,} candidates, {len(sp.layouts)} layout(s) "
             f"({', '.join(sp.layouts)}), input {sp.image_size}px x{sp.in_chans}, {k} classes "
             f"({exp.train.data.name})",
             f"budgets: max_params {sp.budgets.max_params or 'none'}, max_macs {sp.budgets.max_macs or 'none'}",
             f"search: {exp.search.trials} trials, sampler {exp.search.sampler}, {exp.search.cpus_per_trial:g} "
             f"CPU / {exp.search.gpus_per_trial:g} GPU per trial, scheduler {exp.search.scheduler.type}",
             f"{samples} sampled candidates (seed {seed}):"]
    for _ in range(samples):
        arch = sp.sample(rng)
        cost = count_cost(arch, image_size=sp.image_size, num_classes=k, in_chans=sp.in_chans)
        over = [n for n, e in zip(("params", "MACs"), sp.budgets.excess(cost)) if e > 0]
        flag = f"  OVER BUDGET ({', '.join(over)}: skipped by the search)" if over else ""
        lines.append(f"  {arch}  {cost.params / 1e6:.3f}M params  {cost.macs / 1e6:.1f}M MACs  id {arch.id}{flag}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ run
class _Printer:
    def __init__(self, out: TextIO | None, run: RunDir):
        self.out, self.run = out, run

    def __call__(self, text: str) -> None:
        self.run.log_line(text)
        if self.out is not None:
            print(text, file=self.out, flush=True)


def run(space: str | os.PathLike | Experiment | None = None, *, trials: int | None = None,
        name: str | None = None, run_dir: str | os.PathLike | None = None, resume: bool = False,
        address: str | None = None, max_concurrent: int | None = None, cpus_per_trial: float | None = None,
        gpus_per_trial: float | None = None, sampler: str | None = None, seed: int | None = None,
        storage: str | None = None, progress: bool | TextIO = True,
        should_stop: Callable[[Progress], bool] | None = None, export: bool = True,
        new_protocol: bool = False) -> SearchResult:
    """Run (or resume) a search and return its leaderboard.

    Args:
        space: a search YAML path or bundled name, or a loaded :class:`Experiment`; ``None`` on resume.
        trials: completed trials wanted in total (raises the budget of a resumed run).
        name: run name; the run directory is ``runs/<name>`` unless ``run_dir`` is given.
        resume: continue the run in ``run_dir`` (an existing run of the same name also continues).
        run_dir: a folder (local disk, NFS) or a URI (``s3://``, ``gs://``, ``file://``; anything ``pyarrow.fs``
            opens): the driver then works in a local copy, pushed back after every finished trial.
        address: a Ray cluster to join (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``).
        storage: an RDB URL for the Optuna study (``postgresql://...``, ``sqlite:///...``); default the
            journal file ``RUN_DIR/optuna.journal``. Recorded in the run (without its password).
        progress: ``True`` prints progress on stdout, a file object prints there, ``False`` is silent.
        should_stop: polled after each finished trial; ``True`` stops the search cleanly (resumable).
        export: write ``best.yaml`` at the end.
        new_protocol: resume although the protocol (``train:``, ``objective:``, ``search.trainer`` or the
            data files) changed since the run started; new trials are ranked beside the old ones, and
            experiment.json records the change. Without it such a resume is refused with the diff.
    Overrides (``max_concurrent`` ... ``seed``) replace the YAML's ``search:`` values.

    SIGINT, SIGTERM and SIGHUP stop the search cleanly (the main thread only): running trials are
    stopped and re-run on resume, everything is saved, ``SearchResult.stopped_by`` names the signal.
    """
    with _Signals() as signals:
        return _run(space, trials=trials, name=name, run_dir=run_dir, resume=resume, address=address,
                    max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                    sampler=sampler, seed=seed, storage=storage, progress=progress, should_stop=should_stop,
                    export=export, new_protocol=new_protocol, signals=signals)


class _Signals:
    """SIGINT/SIGTERM/SIGHUP handling of a search (main thread only; elsewhere a no-op).

    Outside the trial loop a signal raises :class:`SearchInterrupted` at once (nothing to save yet: a
    refused or half-made start is cleaned up by ``run``). Inside it (``on_stop`` set by ``_tune``) the
    first signal asks the loop to stop cleanly and a second one aborts. Re-installed after ``ray.init``,
    which installs its own SIGTERM handler.
    """

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        self.old: dict[int, Any] = {}
        self.received: int | None = None
        self.on_stop: Callable[[int], None] | None = None

    def _handle(self, signum, frame):
        if self.on_stop is not None and self.received is None:
            self.received = signum
            self.on_stop(signum)
            return
        self.received = self.received or signum
        raise SearchInterrupted(signum)

    def install(self) -> None:
        if not self.active:
            return
        for sig in STOP_SIGNALS:
            old = signal.signal(sig, self._handle)
            self.old.setdefault(sig, old)

    def __enter__(self) -> "_Signals":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _run(space, *, trials, name, run_dir, resume, address, max_concurrent, cpus_per_trial, gpus_per_trial,
         sampler, seed, storage, progress, should_stop, export, new_protocol, signals) -> SearchResult:
    t_cmd = time.perf_counter()
    if space is None and not resume and run_dir is None and name is None:
        raise UserError("nas-search needs a search space (`--space FILE|NAME`) or a run to resume "
                        "(`--resume RUN_DIR`).")
    exp = None if space is None else (space if isinstance(space, Experiment) else load_experiment(space))
    if storage is not None:
        from .optuna_bridge import check_storage_url
        check_storage_url(storage)
    mirror = None
    if run_dir is not None and is_uri(run_dir):
        mirror = Mirror(str(run_dir))
        if mirror.exists():
            mirror.pull()
        elif mirror.local.exists():  # nothing at the URI (new, or deleted to start over): no stale local copy
            import shutil
            shutil.rmtree(mirror.local)
        run_dir = mirror.local
    path = resolve_run_dir(name, run_dir, exp.file if exp else None)
    shown = mirror.uri if mirror else path
    run_ = RunDir(path)
    if resume and not run_.exists():
        if run_.path.exists() and not run_.path.is_dir():
            raise UserError(f"--resume {shown}: that is a file, not a run directory. Pass the folder a search "
                            "wrote (e.g. runs/<name>).")
        raise UserError(f"--resume {shown}: no search was run there (no experiment.json). Pass the run "
                        "directory of an earlier search, or start one with `nas-search --space FILE`.")
    if run_.path.exists() and not run_.path.is_dir():
        raise UserError(f"Run directory {path} exists and is not a folder. Choose another `--run-dir` or "
                        "`--name`.")
    existing = run_.exists()
    if not existing and run_.path.is_dir() and any(p for p in run_.path.iterdir() if p.name != "driver.lock"):
        raise UserError(f"Run directory {path} exists and holds other files, but no search (no experiment.json). "
                        "Choose an empty or new folder with `--run-dir`/`--name`.")
    protocol_change: list[str] = []
    if existing and not os.access(run_.path, os.W_OK | os.X_OK):
        raise UserError(f"Cannot resume {shown}: the run directory is not writable by this user (permission "
                        "denied or read-only), and a search records every trial there. Make it writable, or copy "
                        f"it (`cp -r {shown} COPY`) and resume the copy; `nas-report {shown} --out DIR` reads it "
                        "as it is.")
    if existing:
        meta = run_.read_meta()
        stored = run_.read_experiment()
        if stored.space.fingerprint() != meta["fingerprint"]:
            raise UserError(
                f"Cannot resume {shown}: the space in {run_.space_yaml} no longer matches the fingerprint "
                f"recorded in {run_.experiment_json.name} when the run started ({stored.space.fingerprint()} vs "
                f"{meta['fingerprint']}); space.yaml was edited. Restore it (copy the search YAML the run started "
                f"from, {meta.get('source')}, to {run_.space_yaml}), or start a new run with another `--name`.")
        if exp is None:
            exp = stored
        else:
            changed = stored.space.diff(exp.space)
            if changed:
                changed += _protocol_diff(meta.get("protocol") or protocol_of(stored), protocol_of(exp))
                raise UserError(
                    f"Cannot resume {shown}: the search space changed since that run started "
                    f"({exp.file} vs the recorded {run_.space_yaml}): {'; '.join(changed)}. Resume with the "
                    "original file (or with `--resume` alone), or start a new run with another `--name`.")
            if trials is None:  # the same command again never shrinks the budget of the run
                keep = max(stored.search.trials, exp.search.trials)
                exp = dataclasses.replace(exp, search=dataclasses.replace(exp.search, trials=keep))
        recorded = meta.get("protocol") or protocol_of(stored)
        protocol_change = _protocol_diff(recorded, protocol_of(exp))
        if protocol_change and not new_protocol:
            raise UserError(
                f"Cannot resume {shown}: the training protocol changed since that run started, so new trials "
                f"would be ranked beside old ones trained differently: {'; '.join(protocol_change)}. Resume "
                "with the original settings (or with `--resume` alone), start a new run with another `--name`, "
                "or pass --new-protocol to continue under the new protocol anyway (recorded in experiment.json).")
        if storage is not None and _redact(storage) != (meta.get("storage") or "journal"):
            raise UserError(f"Cannot resume {shown} with --storage {_redact(storage)}: its Optuna study lives in "
                            f"{meta.get('storage') or 'RUN_DIR/optuna.journal'}. Leave --storage out, or give "
                            "the URL the run started with.")
    assert exp is not None
    exp = exp.with_search(trials=trials, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial, sampler=sampler, seed=seed)
    where_set = {"gpus": None if gpus_per_trial is not None or not exp.file else
                 f"`search.gpus_per_trial: {exp.search.gpus_per_trial:g}` (in {exp.file})",
                 "cpus": None if cpus_per_trial is not None or not exp.file else
                 f"`search.cpus_per_trial` (in {exp.file})"}
    created = not run_.path.exists()
    from ..fsio import make_dirs
    make_dirs(run_.path, f"of the run, {shown}")

    from .lock import RunLock
    try:
        with RunLock(run_.path):
            return _run_locked(exp, run_, existing, address, storage, mirror, progress, should_stop, export,
                               t_cmd, signals, protocol_change, where_set)
    except BaseException as err:
        if created and not run_.read_records() and not _has_results(run_):
            # refused or failed before anything was computed: leave nothing behind
            import shutil
            _drop_new_study(run_, storage)
            shutil.rmtree(run_.path, ignore_errors=True)
        elif isinstance(err, UserError) and run_.experiment_json.is_file() and "--resume" not in str(err):
            raise UserError(f"{err} The run stays resumable: fix that, then `nas-search --resume {shown}`.") \
                from None
        if isinstance(err, OSError):  # a full disk, a vanished or read-only folder under the run
            from ..fsio import os_problem
            what = f" ({err.filename})" if err.filename else ""
            resumable = (f" Nothing recorded was lost; the run stays resumable: fix that, then `nas-search --resume "
                         f"{shown}`.") if run_.path.is_dir() else ""
            raise UserError(f"Cannot write to the run directory {shown}{what}: {os_problem(err)}.{resumable}") \
                from None
        raise


def _has_results(run_: RunDir) -> bool:
    """The run's journal holds a finished trial (trials.jsonl may lag behind it)."""
    if not run_.journal.is_file() or not run_.journal.stat().st_size:
        return False
    try:
        from optuna.trial import TrialState

        from .optuna_bridge import open_study
        study = open_study(run_)
        return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    except Exception:  # noqa: BLE001 - unreadable: keep the folder
        return True


def _drop_new_study(run_: RunDir, storage: str | None) -> None:
    """Delete the study a refused new run created in an RDB (the journal goes with the folder)."""
    if storage is None:
        return
    try:
        import json as _json

        import optuna
        meta = _json.loads(run_.experiment_json.read_text())
        study = optuna.load_study(study_name=meta["study"], storage=storage)
        if not study.trials:
            optuna.delete_study(study_name=meta["study"], storage=storage)
    except Exception:  # noqa: BLE001 - nothing was created, or the database is unreachable
        pass


def _redact(url: str) -> str:
    from .optuna_bridge import redact
    return redact(url)


def _run_locked(exp: Experiment, run_: RunDir, existing: bool, address: str | None, storage: str | None,
                mirror: Mirror | None, progress: Any, should_stop: Callable[[Progress], bool] | None,
                export: bool, t_cmd: float, signals: _Signals, protocol_change: list[str],
                where_set: dict[str, str | None]) -> SearchResult:
    from . import optuna_bridge as ob

    name = run_.path.name
    out = sys.stdout if progress is True else (progress or None)
    say = _Printer(out, run_)
    all_records = run_.read_records()
    s = exp.search
    target = s.trials if s.sampler != "grid" else min(s.trials, exp.space.size())
    remaining = target - len(latest_records(all_records))
    # Join Ray first: a wrong address or an impossible resource request changes nothing in the run directory.
    from .raylog import ray_notices
    with ray_notices(run_.log_line):  # Ray's start-up notices go to search.log, not the terminal
        started = _connect(address, s, where_set) if remaining > 0 else False
    signals.install()  # after ray.init, which installs a SIGTERM handler of its own
    try:
        if existing:
            meta = run_.read_meta()
        else:
            import uuid
            meta = new_meta(name, exp.space.fingerprint(), exp.file, storage=_redact(storage) if storage else None,
                            study=f"{name}-{uuid.uuid4().hex[:8]}" if storage else STUDY_NAME,
                            uri=mirror.uri if mirror else None)
        session = len(meta["sessions"])
        sampler = ob.make_sampler(s.sampler, s.seed + 1000 * session, s.startup_trials)
        # the study first: a storage that cannot be opened changes nothing in the run directory
        study = ob.open_study(run_, sampler, storage=storage, study_name=None if existing else meta["study"])
        torn = run_.repair_torn_tail() if existing else None
        entry = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "trials": exp.search.trials, "address": address}
        if protocol_change:
            entry["new_protocol"] = protocol_change
        meta["sessions"].append(entry)
        meta["protocol"] = protocol_of(exp)
        run_.write_experiment(exp, name)
        run_.write_meta(meta)
        if torn:
            say(f"nas-search: cut a torn last line off {run_.trials_jsonl.name} (a driver killed mid-write; kept "
                f"in trials.jsonl.torn); that trial is recovered from the study or re-run")
        if protocol_change:
            say(f"nas-search: continuing under a new protocol (--new-protocol): {'; '.join(protocol_change)}")

        recovered = ob.recover_records(study, all_records, exp.space, run_) if existing else []
        if recovered:
            say(f"nas-search: {len(recovered)} finished trial(s) missing from {run_.trials_jsonl.name} were recovered "
                f"from the Optuna study (trials {', '.join(str(r['number']) for r in recovered)})")
            all_records = run_.read_records()
            remaining = target - len(latest_records(all_records))
        records = {r["id"]: r for r in latest_records(all_records)}
        requeued = ob.reconcile(study, all_records)
        if s.sampler == "grid" and not existing:
            ob.enqueue_grid(study, exp.space, limit=None)
        if s.prescreen.proxy and not existing:
            from .prescreen import enqueue_prescreened
            queued, scored, secs = enqueue_prescreened(study, exp, s.seed)
            say(f"nas-search: pre-screen: {scored} candidates scored by {s.prescreen.proxy} in {secs:.1f} s; the best "
                f"{queued} are the first trials")
        ok = [r for r in records.values() if r["status"] == "ok"]
        prog = Progress(target=target, done=len(records), done_at_start=len(records),
                        failed=sum(r["status"] != "ok" for r in records.values()),
                        best=max(ok, key=lambda r: r["score"]) if ok else None)
        verb = "Resuming" if existing else "Starting"
        where = mirror.uri if mirror else run_.path
        say(f"nas-search: {verb} run {where} ({exp.space.size():,} candidates, sampler {s.sampler}, "
            f"{prog.done}/{target} trials done" + (f", {requeued} interrupted re-queued" if requeued else "") + ")")
        if mirror is not None:
            say(f"nas-search: working copy {run_.path}, pushed to {mirror.uri} after every trial")
            mirror.push()  # the run exists at the URI from its start

        interrupted = exhausted = False
        stopped_by = None
        timings: dict[str, float] = {"ray_ready_s": time.perf_counter() - t_cmd}
        if remaining > 0:
            sync = mirror.push if mirror is not None else None
            interrupted, exhausted, more, stopped_by = _tune(exp, run_, study, records, remaining, session, prog,
                                                             say, should_stop, t_cmd, sync, signals)
            timings.update(more)
            ob.reconcile(study, run_.read_records())
    finally:
        signals.on_stop = lambda signum: None  # a signal now only waits for the saving below; a second aborts
        if started:
            import ray
            ray.shutdown()
    rows = write_leaderboard(run_)
    best = next((r for r in rows if r["status"] == "ok"), None)
    best_path = None
    if best is not None and export:
        rec = records.get(best["id"]) or next(r for r in run_.read_records() if r["id"] == best["id"])
        best_path = _write_model_config(model_config_of(rec, exp, run_), run_.best_yaml)
    meta = run_.read_meta()
    meta["sessions"][-1].update({"ended": time.strftime("%Y-%m-%d %H:%M:%S"), "completed": len(rows),
                                 "interrupted": interrupted})
    if stopped_by is not None:
        meta["sessions"][-1]["stopped_by"] = signal.Signals(stopped_by).name
    run_.write_meta(meta)
    if mirror is not None:
        mirror.push()
    if out is not None:
        print("", file=out)
        print(format_table(rows), file=out)
        print("", file=out)
    if best_path is not None:
        say(f"nas-search: best {best['layout']} L={best['depths']} D={best['widths']} score {best['score']:.3f} "
            f"-> {best_path}")
    if interrupted:
        why = f" by {signal.Signals(stopped_by).name}" if stopped_by is not None else ""
        say(f"nas-search: stopped{why} with {len(rows)}/{target} trials done; everything is saved. Resume with "
            f"`nas-search --resume {mirror.uri if mirror else run_.path}`.")
    elif exhausted and len(rows) < target:
        say(f"nas-search: the space has no more new candidates within the budgets ({len(rows)} trained).")
    timings["total_s"] = time.perf_counter() - t_cmd
    signals.on_stop = None
    stopped_by = stopped_by or signals.received
    return SearchResult(run_dir=run_.path, rows=rows, best=best, best_path=best_path, completed=len(rows),
                        target=target, interrupted=interrupted, exhausted=exhausted, timings=timings,
                        stopped_by=stopped_by)


def _error_file(trial) -> str:
    path = getattr(trial, "local_path", None) or getattr(trial, "path", None)
    return f"{path}/error.txt" if path else "the run's tune/ folder"


def _trial_name(trial) -> str:
    return f"trial-{trial.config['number']:04d}-{trial.config['arch_id']}"


def _connect(address: str | None, s, where_set: dict[str, str | None] | None = None) -> bool:
    """Join (or start) Ray and check the per-trial resources; ``True`` when this call started Ray."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    from .cluster import check_resources, connect
    started = connect(address)
    try:
        where_set = where_set or {}
        check_resources(s.cpus_per_trial, s.gpus_per_trial, gpus_from=where_set.get("gpus"),
                        cpus_from=where_set.get("cpus"))
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started


def _tune(exp: Experiment, run_: RunDir, study, records: dict, remaining: int, session: int, prog: Progress,
          say: _Printer, should_stop, t_cmd: float, sync: Callable[[], None] | None, signals: _Signals):
    from ray import tune
    from ray.tune import Callback

    from ..cost import count_cost
    from .optuna_bridge import OptunaSearcher
    from .trainable import train_trial

    s, sp = exp.search, exp.space
    num_classes = exp.num_classes
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stop = {"flag": False, "why": ""}

    def cost_fn(arch):
        return count_cost(arch, image_size=sp.image_size, num_classes=num_classes, in_chans=sp.in_chans)

    def on_record(rec: dict[str, Any]) -> None:
        prog.done += 1
        prog.failed += rec["status"] != "ok"
        if rec["status"] == "ok" and (prog.best is None or rec["score"] > prog.best["score"]):
            prog.best = rec
        prog.elapsed_s = time.perf_counter() - t0
        prog.running = len(searcher.live)
        prog.skipped = searcher.skipped + searcher.duplicates
        best = f"best {prog.best['score']:.3f} (trial {prog.best['number']})" if prog.best else "best -"
        what = f"{rec['status']}" + (f": {rec['reason'][:60]}" if rec["status"] != "ok" else
                                     f" score {rec['score']:.3f}")
        say(f"[{prog.done:>3}/{prog.target}] trial {rec['number']} {rec['arch_str']} -> {what} | "
            f"running {prog.running} failed {prog.failed} skipped {prog.skipped} | {best} | "
            f"{_fmt_s(prog.elapsed_s)} elapsed, ETA {_fmt_s(prog.eta_s)}")
        write_leaderboard(run_)
        if sync is not None:
            sync()
        if should_stop is not None and not stop["flag"] and should_stop(prog):
            stop["flag"], stop["why"] = True, "should_stop"
            searcher.stopping = True

    searcher = OptunaSearcher(study, sp, cost_fn, records, remaining, run=run_, grid=s.sampler == "grid",
                              max_skips=s.max_skips, on_record=on_record)

    class _Start(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            timings.setdefault("first_trial_s", time.perf_counter() - t_cmd)

        def on_trial_recover(self, iteration, trials, trial, **info):
            say(f"nas-search: trial {trial.config['number']} lost its worker (a dead process or node); Ray Tune "
                f"re-runs it (search.max_retries {s.max_retries}); details in {_error_file(trial)}")

    class _Stopper(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return stop["flag"]

    per_trial = exp.train.epochs * (2 if exp.objective.mode == "both" else 1) + 1  # reports of a trial
    if s.trainer.startswith("table:"):  # the recorded rounds, plus the final report
        from trainers.tabular import load_table, table_path
        table = load_table(table_path(s.trainer))
        per_trial = max(len(e.get("history") or []) for e in table.entries.values()) + 1
    from .schedulers import make_scheduler  # imports Ray: not at module level (the dry run stays Ray-free)
    scheduler = make_scheduler(s.scheduler, per_trial)
    setup = {"train": dataclasses.asdict(exp.train), "objective": dataclasses.asdict(exp.objective),
             "image_size": sp.image_size, "in_chans": sp.in_chans, "cpus_per_trial": s.cpus_per_trial,
             "trainer": s.trainer}
    trainable = tune.with_resources(tune.with_parameters(train_trial, setup=setup),
                                    {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    run_.tune_dir.mkdir(exist_ok=True)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=s.max_concurrent, reuse_actors=True,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name=f"session-{session}", storage_path=str(run_.tune_dir), verbose=0,
                                  stop=_Stopper(), callbacks=[_Start()],
                                  failure_config=tune.FailureConfig(max_failures=s.max_retries)),
    )
    # Tune logs every lost worker with a full traceback; the line above and the trial record say it instead.
    import logging
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    def on_signal(signum: int) -> None:
        stop["flag"], stop["why"] = True, signal.Signals(signum).name
        searcher.stopping = True
        say(f"nas-search: {signal.Signals(signum).name}: stopping (Ctrl-C or the same signal again aborts at once); "
            "running trials will be re-run on resume")

    signals.on_stop = on_signal
    try:
        tuner.fit()
    except KeyboardInterrupt as err:  # a second signal: abort the loop, still save what is recorded
        stop["flag"], stop["why"] = True, signal.Signals(getattr(err, "signum", signal.SIGINT)).name
        signals.received = signals.received or getattr(err, "signum", signal.SIGINT)
    finally:
        signals.on_stop = None
    timings["search_s"] = time.perf_counter() - t0
    return stop["flag"], searcher.exhausted, timings, signals.received
