"""Optuna on the driver: a durable study in the run directory, its samplers, and telling it trial records.

Why not Ray's ``OptunaSearch``: it keeps the study inside a pickled searcher, drops intermediate results
with several objectives and disables pruners. Here the study lives in ``RUN_DIR/optuna.journal`` (a
``JournalStorage``, so ``optuna`` and ``optuna-dashboard`` open it), maximises ``[generalization,
capacity]`` (or the axes ``objective.axes`` names, with their directions and names from
``trainers.objectives.registry.OBJECTIVES``) and keeps the scalar ``score`` as a user attribute.

The Ray Tune searcher that asks and tells this study is :class:`nas.search.searcher.OptunaSearcher`; this
module needs no Ray, so reports and exports open a run's study without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import UserError
from nas.search.config import SAMPLER_NAMES
from nas.search.record import TrialRecord, axis_values
from nas.search.rundir import STUDY_NAME, RunDir
from trainers.objectives.registry import Objective, objectives_of

__all__ = [
    "STUDY_NAME",
    "SAMPLERS",
    "open_study",
    "make_storage",
    "check_storage_url",
    "redact",
    "make_sampler",
    "constraints_of",
    "reconcile",
    "recover_records",
    "enqueue_grid",
    "tell_record",
    "set_attrs",
    "study_objectives",
    "TRIAL_CONSTRAINTS",
]


def constraints_of(trial: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """The sampler's ``constraints_func``: stored budget excesses (<= 0 is feasible)."""
    return tuple(trial.user_attrs.get("constraints", (0.0, 0.0)))


# Optuna >= 5 reads constraints stored on each trial (Trial.set_constraint) and deprecates constraints_func;
# older versions need the function. The searcher sets them on every trial it asks for (see suggest).
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")
_CONS = {} if TRIAL_CONSTRAINTS else {"constraints_func": constraints_of}


def _tpe(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True, **_CONS)


def _nsga2(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup), **_CONS)


def _gp(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False, **_CONS)


def _random(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


# sampler name -> factory(seed, startup_trials); ``grid`` queues every candidate, then samples at random
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "nsga2": _nsga2,
    "gp": _gp,
    "random": _random,
    "grid": _random,
}
if set(SAMPLERS) != set(SAMPLER_NAMES):
    raise ImportError(f"SAMPLERS {sorted(SAMPLERS)} and nas.search.config.SAMPLER_NAMES differ")


def make_sampler(name: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` in a search YAML (:data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise UserError(f"search.sampler {name!r} is not a sampler; known: {', '.join(SAMPLERS)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate TPE, GP
        return SAMPLERS[name](seed, startup_trials)


RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


def redact(url: str) -> str:
    """``url`` with its password hidden (for messages and ``experiment.json``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands: hide everything after the scheme
        return url.split("://", 1)[0] + "://***"


def check_storage_url(url: str) -> None:
    """Refuse a ``--storage`` value that is not an RDB URL Optuna opens."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise UserError(
            f"--storage {redact(url)!r} is not a database URL. Allowed: sqlite:///path/study.db (one machine), "
            "postgresql://user:password@host:5432/db or mysql+pymysql://user:password@host/db (several drivers "
            "or dashboards); leave --storage out for the default, the journal file RUN_DIR/optuna.journal."
        )


def make_storage(run: RunDir, url: str | None = None):
    """The study's storage: ``url`` (an RDB) if given, else the journal file ``RUN_DIR/optuna.journal``."""
    if url is None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(run.journal)))
    check_storage_url(url)
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError as err:
        raise UserError(
            f"--storage {redact(url)}: the database driver is not installed ({err}). Install it "
            "on the driver machine: `pip install psycopg2-binary` for PostgreSQL, `pip install "
            "pymysql` for MySQL."
        ) from None
    except Exception as err:  # noqa: BLE001 - sqlalchemy's connection/argument errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"Cannot open the Optuna storage {redact(url)} ({first}). Check the host, port, "
            "database name and credentials, and that the database server is running; or leave "
            "--storage out to keep the study in RUN_DIR/optuna.journal."
        ) from None


def open_study(
    run: RunDir,
    sampler: optuna.samplers.BaseSampler | None = None,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    objectives: tuple[Objective, ...] | None = None,
) -> optuna.Study:
    """Create or load the run's study, maximising or minimising each of ``objectives`` (default: the run's
    own axes) under its name.

    Without ``storage``/``study_name`` they come from the run's ``experiment.json`` (an RDB URL recorded
    there without its password needs ``storage`` again); the default is ``RUN_DIR/optuna.journal``,
    study ``nas``.
    """
    if storage is None or study_name is None:
        meta = run.read_meta() if run.exists() else {}
        storage = storage or meta.get("storage")
        study_name = study_name or meta.get("study") or STUDY_NAME
        if storage and "***" in storage:
            raise UserError(
                f"The study of {run.path} lives in {storage}, whose password is not stored: pass "
                "the full URL again with `--storage` (storage= in Python)."
            )
    objectives = objectives or objectives_of(run.axes())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=make_storage(run, storage),
        study_name=study_name,
        directions=[o.direction for o in objectives],
        sampler=sampler,
        load_if_exists=True,
    )
    if len(study.directions) != len(objectives):
        raise UserError(
            f"The Optuna study of {run.path} optimises {len(study.directions)} objective(s), but "
            f"objective.axes names {len(objectives)} ({', '.join(o.name for o in objectives)}). The "
            "axes of a run cannot change: start a new run with another `--name`."
        )
    name_metrics(study, objectives)
    return study


def name_metrics(study: optuna.Study, objectives: tuple[Objective, ...]) -> None:
    """Name the study's objectives (optuna-dashboard shows these instead of "Objective 0/1")."""
    names = [o.name for o in objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def enqueue_grid(study: optuna.Study, space, limit: int | None = None) -> int:
    """Queue every candidate of ``space`` (in its deterministic order) once; return how many."""
    n = 0
    for arch in space.enumerate(limit):
        study.enqueue_trial(space.encode(arch), user_attrs={"grid": True})
        n += 1
    return n


def set_attrs(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, k, v)


def study_objectives(study: optuna.Study) -> tuple[Objective, ...]:
    """The objectives of a study opened by :func:`open_study` (its metric names)."""
    return objectives_of(study.metric_names or ("generalization", "capacity"))


def tell_record(
    study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, rec: dict[str, Any], **attrs: Any
) -> None:
    """Tell Optuna a recorded outcome: ok -> its values; stopped early -> PRUNED; failed -> each
    objective's ``failed`` value."""
    set_attrs(
        study, trial, {"score": rec["score"], "status": rec["status"], "reason": rec.get("reason", "")[:500], **attrs}
    )
    if rec["status"] == "stopped":
        study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(trial.number, axis_values(rec, study_objectives(study)), skip_if_finished=True)


def recover_records(study: optuna.Study, records: list[dict[str, Any]], space, run: RunDir) -> list[dict[str, Any]]:
    """Finished trials the study holds but ``trials.jsonl`` lacks (a truncated or deleted file): rebuild
    their records from the study (axes, score, status, reason, cost; no per-epoch history), append them to
    ``trials.jsonl`` and return them, so they are neither lost nor trained again."""
    known = {r.get("number") for r in records}
    source = run.journal.name if isinstance(study._storage, optuna.storages.JournalStorage) else "optuna storage"
    out = []
    for ft in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = ft.user_attrs
        if ft.number in known or "tune_trial_id" not in a or a.get("status") in (None, "infeasible", "duplicate"):
            continue
        try:
            arch = space.suggest(optuna.trial.FixedTrial(dict(ft.params)))
        except ValueError:  # parameters under other names (a run started by an earlier version)
            continue
        if arch.id != a.get("arch_id"):
            continue  # the space cannot rebuild it exactly: leave it to be trained again
        objectives = study_objectives(study)
        values = ft.values if ft.state == TrialState.COMPLETE and ft.values else [o.failed for o in objectives]
        rec = TrialRecord.of_trial(
            arch,
            ft.number,
            a["tune_trial_id"],
            a["status"],
            reason=a.get("reason", ""),
            score=float(a.get("score", 0.0)),
            values={o.name: float(v) for o, v in zip(objectives, values)},
            metrics={"params": float(a.get("params", 0)), "macs": float(a.get("macs", 0))},
            extra={"recovered_from": source},
        ).to_json()
        run.append_record(rec)
        out.append(rec)
    return out


def reconcile(study: optuna.Study, records: list[dict[str, Any]]) -> int:
    """Settle RUNNING trials left by a stopped or killed driver; return how many were re-queued.

    A RUNNING trial whose result is in ``trials.jsonl`` is told that result; any other is marked FAIL and
    its parameters are queued again, so the architecture is trained on resume. Its user attribute says
    which: ``interrupted`` (it had reached a worker) or ``abandoned`` (the driver stopped while proposing it,
    before it was launched).
    """
    by_number = {r["number"]: r for r in records if r.get("number") is not None}
    requeued = 0
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        rec = by_number.get(ft.number)
        if rec is not None and rec["id"] == ft.user_attrs.get("arch_id"):
            tell_record(study, ft, rec)
            continue
        set_attrs(study, ft, {"interrupted" if "tune_trial_id" in ft.user_attrs else "abandoned": True})
        study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
        if ft.params:
            study.enqueue_trial(dict(ft.params), user_attrs={"requeued_from": ft.number})
        requeued += 1
    return requeued
