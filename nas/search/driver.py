"""``nas.search.run``: the search driver (Ray Tune runs the trials, Optuna proposes and ranks them).

Usable from a notebook::

    from nas.search import run
    res = run("coatnet.yaml", trials=8, name="demo")
    res.rows[0], res.best_path

The run directory is the single source of truth (``nas.search.rundir``); calling ``run`` again with the
same name (or ``resume=True`` and ``run_dir``) continues the search: finished trials are kept, interrupted
ones re-run, and ``trials`` may raise the budget. The driver's steps, each in its own room: deciding whether
a search may start or resume (``nas.search.startup``), the session's study and records (here), the trial loop
(``nas.search.tuning``), signals (``nas.runtime.signals``) and progress (``nas.search.progress``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nas.runtime.signals import StopSignals
from nas.search.config import Experiment, format_duration, protocol_of
from nas.search.leaderboard import format_table, latest_records, write_leaderboard
from nas.search.progress import Printer, Progress, proposals_line
from nas.search.record import TrialRecord
from nas.search.rundir import STUDY_NAME, RunMeta, new_meta
from nas.search.startup import Target, after_failure, redact, resolve_target


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
    budget_spent: bool = False  # the session's time budget stopped the search (resumable)
    proposals: dict[str, Any] = field(default_factory=dict)  # this session's proposals (ProposalStats)
    verification: dict[str, Any] = field(default_factory=dict)  # this session's verification stage and its cost

    def table(self, limit: int | None = 20) -> str:
        return format_table(self.rows, limit)


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
    time_budget: str | float | None = None,
) -> SearchResult:
    """Run (or resume) a search and return its leaderboard.

    Args:
        space: a search YAML path or bundled name, or a loaded :class:`Experiment`; ``None`` on resume.
        trials: completed trials wanted in total (raises the budget of a resumed run).
        name: run name; the run directory is ``runs/<name>`` unless ``run_dir`` is given.
        resume: continue the run in ``run_dir`` (an existing run of the same name also continues).
        run_dir: a folder (local disk, NFS) or a URI (``s3://``, ``gs://``, ``file://``; anything ``pyarrow.fs``
            opens): the driver then works in a local copy, pushed back as trials finish (at most every 10 s)
            and at the end.
        address: a Ray cluster to join (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``).
        storage: an RDB URL for the Optuna study (``postgresql://...``, ``sqlite:///...``); default the
            journal file ``RUN_DIR/optuna.journal``. Recorded in the run (without its password).
        progress: ``True`` prints progress on stdout, a file object prints there, ``False`` is silent.
        should_stop: polled after each finished trial; ``True`` stops the search cleanly (resumable).
        export: write ``best.yaml`` at the end.
        new_protocol: resume although the protocol (``train:``, ``objective:``, ``search.trainer`` or the
            data files) changed since the run started; new trials are ranked beside the old ones, and
            experiment.json records the change. Without it such a resume is refused with the diff.
        time_budget: wall-clock time of this session, counted from this call: ``"2h"``, ``"45m"``,
            ``"1h30m"``, ``"90s"`` or a number of seconds; default the YAML's ``search.time_budget``, else
            none. When spent, the search stops as a signal stops it (running trials re-run on resume) and
            ``SearchResult.budget_spent`` says so. A resumed session gets its own budget, not what was left.
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
    budget_s = _budget(time_budget)  # a bad value is refused before anything is read or written
    with StopSignals() as signals:
        target = resolve_target(space, name, run_dir, resume, storage, new_protocol, overrides)
        if budget_s is None and target.exp.search.time_budget is not None:
            budget_s = _budget(target.exp.search.time_budget, "search.time_budget")
        created = not target.run.path.exists()
        from nas.fsio import make_dirs

        make_dirs(target.run.path, f"of the run, {target.shown}")
        from nas.runtime.lock import RunLock
        from nas.search.tuning import SEARCH

        try:
            with RunLock(target.run.path, SEARCH):
                return _session(target, address, storage, progress, should_stop, export, t_cmd, signals, budget_s)
        except BaseException as err:
            after_failure(err, target, created, storage)
            raise


def _budget(value: str | float | None, key: str = "time_budget") -> float | None:
    """Seconds of a time budget: a duration (``2h``, ``1h30m``: ``nas.search.config.parse_duration``) or a
    number of seconds, within ``RANGES["search.time_budget"]``; ``None`` for none."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from nas.limits import check_value

        check_value(value, "search.time_budget", None, key)
        return float(value)
    from nas.search.config import parse_duration

    return parse_duration(value, key)


def _session(
    target: Target,
    address: str | None,
    storage: str | None,
    progress: Any,
    should_stop: Callable[[Progress], bool] | None,
    export: bool,
    t_cmd: float,
    signals: StopSignals,
    budget_s: float | None = None,
) -> SearchResult:
    """One driver session on the locked run directory: Ray, the study, the trial loop, the results."""
    from nas.search.tuning import connect_ray, run_trials

    exp, run_ = target.exp, target.run
    out = sys.stdout if progress is True else (progress or None)
    say = Printer(out, run_)
    s = exp.search
    goal = s.trials if s.sampler != "grid" else min(s.trials, exp.space.size())
    remaining = goal - len(latest_records(run_.read_records()))
    # Join Ray first: a wrong address or an impossible resource request changes nothing in the run directory.
    # Ray's start-up notices go to search.log, not the terminal; the signal handlers are put back after ray.init.
    due = remaining > 0 or _verification_due(target)
    started = connect_ray(address, s, target.where_set, run_.log_line, signals) if due else False
    loop = verified = None
    try:
        study, records, session, prog = _open_session(target, storage, address, goal, say, budget_s)
        ray_ready_s = time.perf_counter() - t_cmd
        remaining = goal - len(records)
        if remaining > 0:
            sync = target.mirror.push if target.mirror is not None else None
            loop = run_trials(
                exp, run_, study, records, remaining, session, prog, say, should_stop, t_cmd, sync, signals
            )
            from nas.search.optuna_bridge import reconcile

            reconcile(study, run_.read_records())
        if exp.finalists is not None and not (loop and loop.stopped):  # the search's trials are done
            from nas.search.finalists import verify

            deadline = t_cmd + budget_s if budget_s is not None else None
            verified = verify(exp, run_, study, session, say, signals, deadline)
    finally:
        signals.on_stop = lambda signum: None  # a signal now only waits for the saving below; a second aborts
        if started:
            import ray

            ray.shutdown()
    spent = prog.budget_s if prog.budget_spent or (verified and verified.why == "time_budget") else None
    result = _finish(target, records, goal, loop, export, out, say, spent, verified)
    result.timings["ray_ready_s"] = ray_ready_s
    result.timings["total_s"] = time.perf_counter() - t_cmd
    signals.on_stop = None
    result.stopped_by = result.stopped_by or signals.received
    return result


def _verification_due(target: Target) -> bool:
    """The run has a ``finalists:`` section whose trainings are not all recorded (checked before Ray starts)."""
    if target.exp.finalists is None or not target.existing:
        return False
    from nas.search.finalists import pending_jobs

    return bool(pending_jobs(target.exp, target.run))


def _open_session(
    target: Target, storage: str | None, address: str | None, goal: int, say: Printer, budget_s: float | None = None
):
    """Open the study, record the new session, settle what an earlier session left and queue the first
    candidates. Returns (study, records by architecture id, session number, progress)."""
    repairs, rebuilt = _repair(target) if target.existing else ([], False)
    study, meta = _open_study(target, storage)
    session = len(meta.sessions)
    all_records = target.run.read_records()
    _record_session(target, meta, address, say, budget_s)
    for note in repairs:
        say(f"nas-search: {note}")
    records, requeued = _settle(target, study, all_records, say, rebuilt)
    prog = Progress(target=goal, budget_s=budget_s)
    for rec in records.values():
        prog.add(rec)
    prog.done_at_start = prog.done
    prog.finished_at.clear()  # the pace of this session's trials only
    exp, run_ = target.exp, target.run
    where = target.mirror.uri if target.mirror else run_.path
    say(
        f"nas-search: {'Resuming' if target.existing else 'Starting'} run {where} ({exp.space.size():,} "
        f"candidates, sampler {exp.search.sampler}, {prog.done}/{goal} trials done"
        + (f", {requeued} interrupted re-queued" if requeued else "")
        + (f", time budget {format_duration(budget_s)}" if budget_s is not None else "")
        + ")"
    )
    if target.mirror is not None:
        say(
            f"nas-search: working copy {run_.path}, pushed to {target.mirror.uri} as trials finish (at most "
            "every 10 s) and at the end"
        )
        target.mirror.push()  # the run exists at the URI from its start
    return study, records, session, prog


def _repair(target: Target) -> tuple[list[str], bool]:
    """Before a resume opens the study: cut a torn last line off trials.jsonl, then repair the journal or
    rebuild the study from trials.jsonl (``optuna_bridge.prepare_journal``). Returns what was done, one line
    each, and whether the study was rebuilt."""
    from nas.search import optuna_bridge as ob
    from trainers.objectives.registry import objectives_of

    run_ = target.run
    notes = []
    if run_.repair_torn_tail() is not None:
        notes.append(
            f"cut a torn last line off {run_.trials_jsonl.name} (a driver killed mid-write; kept in "
            f"{run_.trials_jsonl.name}.torn); that trial is recovered from the study or re-run"
        )
    meta = run_.read_meta()
    if meta.storage is not None:  # an RDB keeps its own consistency
        return notes, False
    fix = ob.prepare_journal(
        run_, run_.read_records(), target.exp.space, objectives_of(target.exp.objective), meta.study
    )
    return notes + fix.notes(run_), fix.rebuilt is not None


def _open_study(target: Target, storage: str | None):
    """The run's Optuna study with this session's sampler, and the run's metadata (new for a new run).
    The study comes first: a storage that cannot be opened changes nothing in the run directory."""
    from nas.search import optuna_bridge as ob
    from trainers.objectives.registry import objectives_of

    exp, run_, s = target.exp, target.run, target.exp.search
    name = run_.path.name
    if target.existing:
        meta = run_.read_meta()
    else:
        meta = new_meta(
            name,
            exp.space.fingerprint(),
            exp.file,
            storage=redact(storage) if storage else None,
            study=f"{name}-{uuid.uuid4().hex[:8]}" if storage else STUDY_NAME,
            uri=target.mirror.uri if target.mirror else None,
        )
    sampler = ob.make_sampler(s.sampler, s.seed + 1000 * len(meta.sessions), s.startup_trials)
    study = ob.open_study(
        run_,
        sampler,
        storage=storage,
        study_name=None if target.existing else meta.study,
        objectives=objectives_of(exp.objective),
    )
    return study, meta


def _record_session(
    target: Target, meta: RunMeta, address: str | None, say: Printer, budget_s: float | None = None
) -> None:
    """Append this session to experiment.json with the protocol and write the run's space.yaml."""
    exp, run_ = target.exp, target.run
    entry = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trials": exp.search.trials,
        "address": address,
        "ordered": exp.search.ordered,  # whether this session's proposals were reproducible (search.ordered)
    }
    if budget_s is not None:
        entry["time_budget_s"] = budget_s
    if target.protocol_change:
        entry["new_protocol"] = target.protocol_change
    meta.sessions.append(entry)
    meta.protocol = protocol_of(exp)
    from nas.search.finalists import meta_entry

    finalists = meta_entry(exp)
    if finalists is None:
        meta.extra.pop("finalists", None)
    else:
        old = meta.extra.get("finalists") or {}
        if old.get("protocol") not in (None, finalists["protocol"]):
            say(
                "nas-search: the `finalists:` section changed since the last session: its finalists are verified "
                "again under the new protocol (the earlier trainings stay in finalists.jsonl but no longer count)"
            )
        meta.extra["finalists"] = finalists
    run_.write_experiment(exp, run_.path.name)
    run_.write_meta(meta)
    if target.protocol_change:
        say(f"nas-search: continuing under a new protocol (--new-protocol): {'; '.join(target.protocol_change)}")


def _settle(
    target: Target, study, all_records: list[TrialRecord], say: Printer, rebuilt: bool = False
) -> tuple[dict[str, TrialRecord], int]:
    """Recover trials the study holds but trials.jsonl lacks, re-queue interrupted ones, and (in a new run,
    or a grid search whose study was rebuilt) queue the grid or the pre-screened candidates. Returns (records
    by architecture id, re-queued count)."""
    from nas.search import optuna_bridge as ob

    exp, run_, s = target.exp, target.run, target.exp.search
    recovered = ob.recover_records(study, all_records, exp.space, run_) if target.existing else []
    if recovered:
        say(
            f"nas-search: {len(recovered)} finished trial(s) missing from {run_.trials_jsonl.name} were recovered "
            f"from the Optuna study (trials {', '.join(str(r.number) for r in recovered)})"
        )
        all_records = run_.read_records()
    requeued = ob.reconcile(study, all_records)
    if s.sampler == "grid" and (rebuilt or not target.existing):  # a rebuilt study lost its queue
        ob.enqueue_grid(study, exp.space, limit=None, skip={r.id for r in all_records})
    if s.prescreen.proxy and not target.existing:
        from nas.search.prescreen import enqueue_prescreened

        queued, scored, secs = enqueue_prescreened(study, exp, s.seed)
        say(
            f"nas-search: pre-screen: {scored} candidates scored by {s.prescreen.proxy} in {secs:.1f} s; the best "
            f"{queued} are the first trials"
        )
    return {r.id: r for r in latest_records(all_records)}, requeued


def _finish(
    target: Target,
    records: dict,
    goal: int,
    loop,
    export: bool,
    out: TextIO | None,
    say: Printer,
    budget_spent: float | None = None,
    verified=None,
) -> SearchResult:
    """Write the leaderboard, export the best trial, close the session in experiment.json and say how the
    search ended (``budget_spent``: the time budget, in seconds, that stopped it; ``verified``: the session's
    verification stage, ``nas.search.finalists.VerifyOutcome``)."""
    from nas.export.model_config import model_config_of, save_model_config

    run_, mirror = target.run, target.mirror
    rows = write_leaderboard(run_, axes=target.exp.objective.axes)
    best = next((r for r in rows if r["status"] == "ok"), None)
    best_path = None
    if best is not None and export:
        rec = records.get(best["id"]) or next(r for r in run_.read_records() if r.id == best["id"])
        best_path = save_model_config(model_config_of(rec, target.exp, run_), run_.best_yaml)
    interrupted = bool(loop and loop.stopped) or bool(verified and verified.stopped)
    stopped_by = (loop.stopped_by if loop else None) or (verified.stopped_by if verified else None)
    meta = run_.read_meta()
    meta.sessions[-1].update(
        {"ended": time.strftime("%Y-%m-%d %H:%M:%S"), "completed": len(rows), "interrupted": interrupted}
    )
    if stopped_by is not None:
        meta.sessions[-1]["stopped_by"] = signal.Signals(stopped_by).name
    elif interrupted and budget_spent is not None:
        meta.sessions[-1]["stopped_by"] = "time_budget"
    if loop and "supernet_s" in loop.timings:  # the weight-sharing proxy's supernets (trained or read)
        meta.sessions[-1]["supernet_s"] = round(float(loop.timings["supernet_s"]), 1)
    proposals = dict(loop.proposals) if loop else {}
    if proposals.get("proposals"):
        meta.sessions[-1]["proposals"] = proposals
    verification = {}
    if verified is not None:
        verification = {"jobs": verified.jobs, "done": verified.done, "stopped": verified.stopped, **verified.cost}
        meta.sessions[-1]["verification"] = verification
    run_.write_meta(meta)
    if mirror is not None:
        mirror.push()
    if out is not None:
        print(f"\n{format_table(rows)}\n", file=out)
    if best_path is not None:
        if best.get("verified") is not None:
            iv = f" [{best['verified_lo']:.3f}, {best['verified_hi']:.3f}]" if best["verified_lo"] is not None else ""
            ties = sum(1 for r in rows[1:] if r.get("tied"))
            what = (
                f"verified score {best['verified']:.3f}{iv} over {best['verified_n']} seed(s), "
                f"proxy {best['score']:.3f}" + (f"; {ties} finalist(s) statistically tied with it" if ties else "")
            )
        else:
            what = f"proxy score {best['score']:.3f} (it ranks candidates; it is not an accuracy)"
        say(f"nas-search: best {best['layout']} L={best['depths']} D={best['widths']} {what} -> {best_path}")
    if any(proposals.get("rejected", {}).values()):
        say(proposals_line(proposals))
    where = mirror.uri if mirror else run_.path
    by_budget = interrupted and stopped_by is None and budget_spent is not None
    during = (
        f" during the verification ({verified.done}/{verified.jobs} trainings done)"
        if verified is not None and verified.stopped
        else ""
    )
    if by_budget:
        say(
            f"nas-search: the time budget ({format_duration(budget_spent)}) is spent: stopped with {len(rows)}/{goal} "
            f"trials done{during}; everything is saved. Resume with `nas-search --resume {where}` (each session gets "
            "the whole budget; --time-budget gives another)."
        )
    elif interrupted:
        why = f" by {signal.Signals(stopped_by).name}" if stopped_by is not None else ""
        say(
            f"nas-search: stopped{why} with {len(rows)}/{goal} trials done{during}; everything is saved. Resume with "
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
        budget_spent=by_budget,
        proposals=proposals,
        verification=verification,
    )
