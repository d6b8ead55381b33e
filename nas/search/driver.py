"""``nas.search.run``: the search driver (Ray Tune runs the trials, Optuna proposes and ranks them).

Usable from a notebook::

    from nas.search import run
    res = run("coatnet.yaml", trials=8, name="demo")
    res.rows[0], res.best_path

The run directory is the single source of truth (``nas.search.rundir``); calling ``run`` again with the
same name (or ``resume=True`` and ``run_dir``) continues the search: finished trials are kept, interrupted
ones re-run, and ``trials`` may raise the budget. The driver's steps, each in its own room: checking and
opening the run directory (here), the session's study and records (here), the trial loop
(``nas.search.tuning``), signals (``nas.search.signals``) and progress (``nas.search.progress``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import UserError
from .config import Experiment, load_experiment, protocol_diff, protocol_of
from .leaderboard import format_table, latest_records, write_leaderboard
from .progress import Printer, Progress
from .rundir import STUDY_NAME, RunDir, new_meta, resolve_run_dir
from .signals import StopSignals
from .storage import Mirror, is_uri

__all__ = ["run", "SearchResult"]


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


@dataclass
class _Target:
    """Where a search runs and what was decided about it before the run directory is locked."""

    exp: Experiment
    run: RunDir
    shown: str  # the run directory as the user named it (a URI for a mirror)
    mirror: Mirror | None
    existing: bool
    protocol_change: list[str]
    where_set: dict[str, str | None]  # where gpus/cpus per trial were set, for resource errors


def run(
    space: str | os.PathLike | Experiment | None = None,
    *,
    trials: int | None = None,
    name: str | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    address: str | None = None,
    max_concurrent: int | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    storage: str | None = None,
    progress: bool | TextIO = True,
    should_stop: Callable[[Progress], bool] | None = None,
    export: bool = True,
    new_protocol: bool = False,
) -> SearchResult:
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
    t_cmd = time.perf_counter()
    overrides = dict(
        trials=trials,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        sampler=sampler,
        seed=seed,
    )
    with StopSignals() as signals:
        target = _target(space, name, run_dir, resume, storage, new_protocol, overrides)
        created = not target.run.path.exists()
        from ..fsio import make_dirs

        make_dirs(target.run.path, f"of the run, {target.shown}")
        from .lock import RunLock

        try:
            with RunLock(target.run.path):
                return _session(target, address, storage, progress, should_stop, export, t_cmd, signals)
        except BaseException as err:
            _after_failure(err, target, created, storage)
            raise


def _target(
    space, name, run_dir, resume: bool, storage: str | None, new_protocol: bool, overrides: dict[str, Any]
) -> _Target:
    """Load the experiment and decide where it runs; refuse, before anything is written, a start or resume
    that cannot go on (missing or foreign folder, edited space, changed protocol, other storage)."""
    if space is None and not resume and run_dir is None and name is None:
        raise UserError(
            "nas-search needs a search space (`--space FILE|NAME`) or a run to resume (`--resume RUN_DIR`)."
        )
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
            shutil.rmtree(mirror.local)
        run_dir = mirror.local
    path = resolve_run_dir(name, run_dir, exp.file if exp else None)
    shown = str(mirror.uri if mirror else path)
    run_ = RunDir(path)
    _check_folder(run_, shown, resume)
    existing = run_.exists()
    protocol_change: list[str] = []
    if existing:
        exp, protocol_change = _check_resume(run_, shown, exp, overrides["trials"], storage, new_protocol)
    assert exp is not None
    exp = exp.with_search(**overrides)
    where_set = {
        "gpus": None
        if overrides["gpus_per_trial"] is not None or not exp.file
        else f"`search.gpus_per_trial: {exp.search.gpus_per_trial:g}` (in {exp.file})",
        "cpus": None
        if overrides["cpus_per_trial"] is not None or not exp.file
        else f"`search.cpus_per_trial` (in {exp.file})",
    }
    return _Target(exp, run_, shown, mirror, existing, protocol_change, where_set)


def _check_folder(run_: RunDir, shown: str, resume: bool) -> None:
    """Refuse a run directory that is a file, holds something else, or (on resume) holds no search."""
    if resume and not run_.exists():
        if run_.path.exists() and not run_.path.is_dir():
            raise UserError(
                f"--resume {shown}: that is a file, not a run directory. Pass the folder a search "
                "wrote (e.g. runs/<name>)."
            )
        raise UserError(
            f"--resume {shown}: no search was run there (no experiment.json). Pass the run "
            "directory of an earlier search, or start one with `nas-search --space FILE`."
        )
    if run_.path.exists() and not run_.path.is_dir():
        raise UserError(
            f"Run directory {run_.path} exists and is not a folder. Choose another `--run-dir` or `--name`."
        )
    if not run_.exists() and run_.path.is_dir() and any(p for p in run_.path.iterdir() if p.name != "driver.lock"):
        raise UserError(
            f"Run directory {run_.path} exists and holds other files, but no search (no "
            "experiment.json). Choose an empty or new folder with `--run-dir`/`--name`."
        )
    if run_.exists() and not os.access(run_.path, os.W_OK | os.X_OK):
        raise UserError(
            f"Cannot resume {shown}: the run directory is not writable by this user (permission "
            "denied or read-only), and a search records every trial there. Make it writable, or copy "
            f"it (`cp -r {shown} COPY`) and resume the copy; `nas-report {shown} --out DIR` reads it "
            "as it is."
        )


def _check_resume(
    run_: RunDir, shown: str, exp: Experiment | None, trials: int | None, storage: str | None, new_protocol: bool
) -> tuple[Experiment, list[str]]:
    """The experiment a resume continues (the recorded one, or ``exp`` if it matches it) and the protocol
    change it brings; refused when the space, the protocol (without ``new_protocol``) or storage changed."""
    meta = run_.read_meta()
    stored = run_.read_experiment()
    if stored.space.fingerprint() != meta["fingerprint"]:
        raise UserError(
            f"Cannot resume {shown}: the space in {run_.space_yaml} no longer matches the fingerprint "
            f"recorded in {run_.experiment_json.name} when the run started ({stored.space.fingerprint()} vs "
            f"{meta['fingerprint']}); space.yaml was edited. Restore it (copy the search YAML the run started "
            f"from, {meta.get('source')}, to {run_.space_yaml}), or start a new run with another `--name`."
        )
    if exp is None:
        exp = stored
    else:
        changed = stored.space.diff(exp.space)
        if changed:
            changed += protocol_diff(meta.get("protocol") or protocol_of(stored), protocol_of(exp))
            raise UserError(
                f"Cannot resume {shown}: the search space changed since that run started "
                f"({exp.file} vs the recorded {run_.space_yaml}): {'; '.join(changed)}. Resume with the "
                "original file (or with `--resume` alone), or start a new run with another `--name`."
            )
        if trials is None:  # the same command again never shrinks the budget of the run
            keep = max(stored.search.trials, exp.search.trials)
            exp = dataclasses.replace(exp, search=dataclasses.replace(exp.search, trials=keep))
    protocol_change = protocol_diff(meta.get("protocol") or protocol_of(stored), protocol_of(exp))
    if protocol_change and not new_protocol:
        raise UserError(
            f"Cannot resume {shown}: the training protocol changed since that run started, so new trials "
            f"would be ranked beside old ones trained differently: {'; '.join(protocol_change)}. Resume "
            "with the original settings (or with `--resume` alone), start a new run with another `--name`, "
            "or pass --new-protocol to continue under the new protocol anyway (recorded in experiment.json)."
        )
    if storage is not None and _redact(storage) != (meta.get("storage") or "journal"):
        raise UserError(
            f"Cannot resume {shown} with --storage {_redact(storage)}: its Optuna study lives in "
            f"{meta.get('storage') or 'RUN_DIR/optuna.journal'}. Leave --storage out, or give "
            "the URL the run started with."
        )
    return exp, protocol_change


def _after_failure(err: BaseException, target: _Target, created: bool, storage: str | None) -> None:
    """A search that failed or was refused: remove what a new run made before anything was computed, or
    turn the error into one paragraph that says the run stays resumable. Re-raises a rewritten error."""
    run_, shown = target.run, target.shown
    if created and not run_.read_records() and not _has_results(run_):
        _drop_new_study(run_, storage)
        shutil.rmtree(run_.path, ignore_errors=True)
    elif isinstance(err, UserError) and run_.experiment_json.is_file() and "--resume" not in str(err):
        raise UserError(f"{err} The run stays resumable: fix that, then `nas-search --resume {shown}`.") from None
    if isinstance(err, OSError):  # a full disk, a vanished or read-only folder under the run
        from ..fsio import os_problem

        what = f" ({err.filename})" if err.filename else ""
        resumable = (
            (f" Nothing recorded was lost; the run stays resumable: fix that, then `nas-search --resume {shown}`.")
            if run_.path.is_dir()
            else ""
        )
        raise UserError(f"Cannot write to the run directory {shown}{what}: {os_problem(err)}.{resumable}") from None


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
        import json

        import optuna

        meta = json.loads(run_.experiment_json.read_text())
        study = optuna.load_study(study_name=meta["study"], storage=storage)
        if not study.trials:
            optuna.delete_study(study_name=meta["study"], storage=storage)
    except Exception:  # noqa: BLE001 - nothing was created, or the database is unreachable
        pass


def _redact(url: str) -> str:
    from .optuna_bridge import redact

    return redact(url)


def _session(
    target: _Target,
    address: str | None,
    storage: str | None,
    progress: Any,
    should_stop: Callable[[Progress], bool] | None,
    export: bool,
    t_cmd: float,
    signals: StopSignals,
) -> SearchResult:
    """One driver session on the locked run directory: Ray, the study, the trial loop, the results."""
    from .tuning import connect_ray, run_trials

    exp, run_ = target.exp, target.run
    out = sys.stdout if progress is True else (progress or None)
    say = Printer(out, run_)
    s = exp.search
    goal = s.trials if s.sampler != "grid" else min(s.trials, exp.space.size())
    remaining = goal - len(latest_records(run_.read_records()))
    # Join Ray first: a wrong address or an impossible resource request changes nothing in the run directory.
    from .raylog import ray_notices

    with ray_notices(run_.log_line):  # Ray's start-up notices go to search.log, not the terminal
        started = connect_ray(address, s, target.where_set) if remaining > 0 else False
    signals.install()  # after ray.init, which installs a SIGTERM handler of its own
    loop = None
    try:
        study, records, session, prog = _open_session(target, storage, address, goal, say)
        ray_ready_s = time.perf_counter() - t_cmd
        remaining = goal - len(records)
        if remaining > 0:
            sync = target.mirror.push if target.mirror is not None else None
            loop = run_trials(
                exp, run_, study, records, remaining, session, prog, say, should_stop, t_cmd, sync, signals
            )
            from .optuna_bridge import reconcile

            reconcile(study, run_.read_records())
    finally:
        signals.on_stop = lambda signum: None  # a signal now only waits for the saving below; a second aborts
        if started:
            import ray

            ray.shutdown()
    result = _finish(target, records, goal, loop, export, out, say)
    result.timings["ray_ready_s"] = ray_ready_s
    result.timings["total_s"] = time.perf_counter() - t_cmd
    signals.on_stop = None
    result.stopped_by = result.stopped_by or signals.received
    return result


def _open_session(target: _Target, storage: str | None, address: str | None, goal: int, say: Printer):
    """Record the new session, open the study, repair and reconcile what an earlier session left, queue the
    grid or pre-screened candidates. Returns (study, records by architecture id, session number, progress)."""
    from trainers.objective import objectives_of

    from . import optuna_bridge as ob

    exp, run_, s, existing = target.exp, target.run, target.exp.search, target.existing
    name = run_.path.name
    if existing:
        meta = run_.read_meta()
    else:
        meta = new_meta(
            name,
            exp.space.fingerprint(),
            exp.file,
            storage=_redact(storage) if storage else None,
            study=f"{name}-{uuid.uuid4().hex[:8]}" if storage else STUDY_NAME,
            uri=target.mirror.uri if target.mirror else None,
        )
    session = len(meta["sessions"])
    sampler = ob.make_sampler(s.sampler, s.seed + 1000 * session, s.startup_trials)
    # the study first: a storage that cannot be opened changes nothing in the run directory
    study = ob.open_study(
        run_,
        sampler,
        storage=storage,
        study_name=None if existing else meta["study"],
        objectives=objectives_of(exp.objective),
    )
    all_records = run_.read_records()
    torn = run_.repair_torn_tail() if existing else None
    entry = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "trials": s.trials, "address": address}
    if target.protocol_change:
        entry["new_protocol"] = target.protocol_change
    meta["sessions"].append(entry)
    meta["protocol"] = protocol_of(exp)
    run_.write_experiment(exp, name)
    run_.write_meta(meta)
    if torn:
        say(
            f"nas-search: cut a torn last line off {run_.trials_jsonl.name} (a driver killed mid-write; kept "
            f"in trials.jsonl.torn); that trial is recovered from the study or re-run"
        )
    if target.protocol_change:
        say(f"nas-search: continuing under a new protocol (--new-protocol): {'; '.join(target.protocol_change)}")
    recovered = ob.recover_records(study, all_records, exp.space, run_) if existing else []
    if recovered:
        say(
            f"nas-search: {len(recovered)} finished trial(s) missing from {run_.trials_jsonl.name} were recovered "
            f"from the Optuna study (trials {', '.join(str(r['number']) for r in recovered)})"
        )
        all_records = run_.read_records()
    records = {r["id"]: r for r in latest_records(all_records)}
    requeued = ob.reconcile(study, all_records)
    if s.sampler == "grid" and not existing:
        ob.enqueue_grid(study, exp.space, limit=None)
    if s.prescreen.proxy and not existing:
        from .prescreen import enqueue_prescreened

        queued, scored, secs = enqueue_prescreened(study, exp, s.seed)
        say(
            f"nas-search: pre-screen: {scored} candidates scored by {s.prescreen.proxy} in {secs:.1f} s; the best "
            f"{queued} are the first trials"
        )
    prog = Progress(target=goal)
    for rec in records.values():
        prog.add(rec)
    prog.done_at_start = prog.done
    where = target.mirror.uri if target.mirror else run_.path
    say(
        f"nas-search: {'Resuming' if existing else 'Starting'} run {where} ({exp.space.size():,} candidates, "
        f"sampler {s.sampler}, {prog.done}/{goal} trials done"
        + (f", {requeued} interrupted re-queued" if requeued else "")
        + ")"
    )
    if target.mirror is not None:
        say(f"nas-search: working copy {run_.path}, pushed to {target.mirror.uri} after every trial")
        target.mirror.push()  # the run exists at the URI from its start
    return study, records, session, prog


def _finish(
    target: _Target, records: dict, goal: int, loop, export: bool, out: TextIO | None, say: Printer
) -> SearchResult:
    """Write the leaderboard, export the best trial, close the session in experiment.json and say how the
    search ended."""
    from ..export import model_config_of, save_model_config

    run_, mirror = target.run, target.mirror
    rows = write_leaderboard(run_)
    best = next((r for r in rows if r["status"] == "ok"), None)
    best_path = None
    if best is not None and export:
        rec = records.get(best["id"]) or next(r for r in run_.read_records() if r["id"] == best["id"])
        best_path = save_model_config(model_config_of(rec, target.exp, run_), run_.best_yaml)
    interrupted = bool(loop and loop.stopped)
    stopped_by = loop.stopped_by if loop else None
    meta = run_.read_meta()
    meta["sessions"][-1].update(
        {"ended": time.strftime("%Y-%m-%d %H:%M:%S"), "completed": len(rows), "interrupted": interrupted}
    )
    if stopped_by is not None:
        meta["sessions"][-1]["stopped_by"] = signal.Signals(stopped_by).name
    run_.write_meta(meta)
    if mirror is not None:
        mirror.push()
    if out is not None:
        print(f"\n{format_table(rows)}\n", file=out)
    if best_path is not None:
        say(
            f"nas-search: best {best['layout']} L={best['depths']} D={best['widths']} score {best['score']:.3f} "
            f"-> {best_path}"
        )
    where = mirror.uri if mirror else run_.path
    if interrupted:
        why = f" by {signal.Signals(stopped_by).name}" if stopped_by is not None else ""
        say(
            f"nas-search: stopped{why} with {len(rows)}/{goal} trials done; everything is saved. Resume with "
            f"`nas-search --resume {where}`."
        )
    elif loop and loop.exhausted and len(rows) < goal:
        say(f"nas-search: the space has no more new candidates within the budgets ({len(rows)} trained).")
    return SearchResult(
        run_dir=run_.path,
        rows=rows,
        best=best,
        best_path=best_path,
        completed=len(rows),
        target=goal,
        interrupted=interrupted,
        exhausted=bool(loop and loop.exhausted),
        timings=dict(loop.timings) if loop else {},
        stopped_by=stopped_by,
    )
