"""Where a search runs and whether it may start or resume: everything decided before the run directory is
locked and written, and the clean-up after a refused or failed start (nothing a refused start made is left).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from typing import Any

from nas.errors import UserError
from nas.runtime.storage import Mirror, is_uri
from nas.search.config import Experiment, load_experiment, protocol_diff, protocol_of
from nas.search.rundir import RunDir, resolve_run_dir


@dataclass
class Target:
    """Where a search runs and what was decided about it before the run directory is locked."""

    exp: Experiment
    run: RunDir
    shown: str  # the run directory as the user named it (a URI for a mirror)
    mirror: Mirror | None
    existing: bool
    protocol_change: list[str]
    where_set: dict[str, str | None]  # where gpus/cpus per trial were set, for resource errors


def resolve_target(
    space, name, run_dir, resume: bool, storage: str | None, new_protocol: bool, overrides: dict[str, Any]
) -> Target:
    """Load the experiment and decide where it runs; refuse, before anything is written, a start or resume
    that cannot go on (missing or foreign folder, edited space, changed protocol, other storage)."""
    if space is None and not resume and run_dir is None and name is None:
        raise UserError(
            "nas-search needs a search space (`--space FILE|NAME`) or a run to resume (`--resume RUN_DIR`)."
        )
    exp = None if space is None else (space if isinstance(space, Experiment) else load_experiment(space))
    if storage is not None:
        from nas.search.optuna_bridge import check_storage_url

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
    return Target(exp, run_, shown, mirror, existing, protocol_change, where_set)


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
    run_.read_records()  # a damaged trials.jsonl is refused before anything is locked or written
    if stored.space.fingerprint() != meta.fingerprint:
        raise UserError(
            f"Cannot resume {shown}: the space in {run_.space_yaml} no longer matches the fingerprint "
            f"recorded in {run_.experiment_json.name} when the run started ({stored.space.fingerprint()} vs "
            f"{meta.fingerprint}); space.yaml was edited. Restore it (copy the search YAML the run started "
            f"from, {meta.source}, to {run_.space_yaml}), or start a new run with another `--name`."
        )
    if exp is None:
        exp = stored
    else:
        changed = stored.space.diff(exp.space)
        if changed:
            changed += protocol_diff(meta.protocol or protocol_of(stored), protocol_of(exp))
            raise UserError(
                f"Cannot resume {shown}: the search space changed since that run started "
                f"({exp.file} vs the recorded {run_.space_yaml}): {'; '.join(changed)}. Resume with the "
                "original file (or with `--resume` alone), or start a new run with another `--name`."
            )
        if trials is None:  # the same command again never shrinks the budget of the run
            keep = max(stored.search.trials, exp.search.trials)
            exp = dataclasses.replace(exp, search=dataclasses.replace(exp.search, trials=keep))
    protocol_change = protocol_diff(meta.protocol or protocol_of(stored), protocol_of(exp))
    if protocol_change and not new_protocol:
        raise UserError(
            f"Cannot resume {shown}: the training protocol changed since that run started, so new trials "
            f"would be ranked beside old ones trained differently: {'; '.join(protocol_change)}. Resume "
            "with the original settings (or with `--resume` alone), start a new run with another `--name`, "
            "or pass --new-protocol to continue under the new protocol anyway (recorded in experiment.json)."
        )
    if storage is not None and redact(storage) != (meta.storage or "journal"):
        raise UserError(
            f"Cannot resume {shown} with --storage {redact(storage)}: its Optuna study lives in "
            f"{meta.storage or 'RUN_DIR/optuna.journal'}. Leave --storage out, or give "
            "the URL the run started with."
        )
    return exp, protocol_change


def after_failure(err: BaseException, target: Target, created: bool, storage: str | None) -> None:
    """A search that failed or was refused: remove what a new run made before anything was computed, or
    turn the error into one paragraph that says the run stays resumable. Re-raises a rewritten error."""
    run_, shown = target.run, target.shown
    if created and not run_.read_records() and not _has_results(run_):
        _drop_new_study(run_, storage)
        shutil.rmtree(run_.path, ignore_errors=True)
    elif isinstance(err, UserError) and run_.experiment_json.is_file() and "--resume" not in str(err):
        raise UserError(f"{err} The run stays resumable: fix that, then `nas-search --resume {shown}`.") from None
    if isinstance(err, OSError):  # a full disk, a vanished or read-only folder under the run
        from nas.fsio import os_problem

        what = f" ({err.filename})" if err.filename else ""
        resumable = (
            (f" Nothing recorded was lost; the run stays resumable: fix that, then `nas-search --resume {shown}`.")
            if run_.path.is_dir()
            else ""
        )
        raise UserError(f"Cannot write to the run directory {shown}{what}: {os_problem(err)}.{resumable}") from None


def _has_results(run_: RunDir) -> bool:
    """The run's journal holds a finished trial, failed ones included (trials.jsonl may lag behind it), or its
    supernets' training wrote a checkpoint (``train.supernet``)."""
    from nas.search.supernet import FOLDER

    if (run_.path / FOLDER).is_dir() and any((run_.path / FOLDER).iterdir()):
        return True
    if not run_.journal.is_file() or not run_.journal.stat().st_size:
        return False
    try:
        from optuna.trial import TrialState

        from nas.search.optuna_bridge import open_study

        study = open_study(run_)
        return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
    except Exception:  # noqa: BLE001 - unreadable: keep the folder
        return True


def _drop_new_study(run_: RunDir, storage: str | None) -> None:
    """Delete the study a refused new run created in an RDB (the journal goes with the folder)."""
    if storage is None:
        return
    try:
        import optuna

        name = run_.read_meta().study
        study = optuna.load_study(study_name=name, storage=storage)
        if not study.trials:
            optuna.delete_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - nothing was created, or the database is unreachable
        pass


def redact(url: str) -> str:
    from nas.search.optuna_bridge import redact

    return redact(url)
