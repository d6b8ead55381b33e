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

import itertools
import math
import os
import stat
import warnings
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import UserError
from nas.fsio import Invalid
from nas.search.config import SAMPLERS
from nas.search.proposals import StandInTrial
from nas.search.record import STATUSES, TrialRecord
from nas.search.rundir import STUDY_NAME, RunDir
from trainers.objectives.registry import Objective, objectives_of

CONSTRAINT_NAMES = ("params", "macs")
"""A trial's constraints, in order: the relative excess of its parameters and of its MACs over the space's
budgets (``value / limit - 1``: <= 0 is within it, -1 without a limit; ``Budgets.excess``)."""


def constraints_of(trial: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """The sampler's ``constraints_func``: stored budget excesses (<= 0 is feasible)."""
    return tuple(trial.user_attrs.get("constraints", (0.0, 0.0)))


# Optuna >= 5 reads constraints stored on each trial and deprecates constraints_func; older versions need the
# function. The searcher stores them on every trial it asks for (set_constraints).
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")
_CONS = {} if TRIAL_CONSTRAINTS else {"constraints_func": constraints_of}

# Where a trial's constraints are stored. "list": the system attribute ``constraints`` holding the list, which
# every Optuna version's samplers read and optuna-dashboard (0.21) shows: a trial with a value > 0 is drawn as
# infeasible. "keys": Optuna 5's ``Trial.set_constraint`` form (``constraints:params``, ``constraints:macs``),
# which optuna-dashboard 0.21 does not read (its API gives ``constraints: []``); only a run started by an
# earlier coatnas under Optuna 5 has it. A study keeps its form: the GP sampler needs the same constraint names
# on every trial.
CONSTRAINTS_KEY = "constraints"


def constraint_form(study: optuna.Study) -> str:
    """How the finished trials of ``study`` store their constraints: ``"list"`` (also for a new study) or
    ``"keys"`` (a run started by an earlier version under Optuna 5)."""
    if not TRIAL_CONSTRAINTS:
        return "list"
    for ft in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        attrs = ft.system_attrs
        if CONSTRAINTS_KEY in attrs:
            return "list"
        if any(k.startswith(CONSTRAINTS_KEY + ":") for k in attrs):
            return "keys"
    return "list"


def set_constraints(
    study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, cons: list[float], form: str = "list"
) -> None:
    """Store ``cons`` (:data:`CONSTRAINT_NAMES`, in order) on the unfinished ``trial`` in ``form``
    (:func:`constraint_form`), and as the user attribute ``constraints`` (read by ``constraints_of``)."""
    values = [float(c) for c in cons]
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, CONSTRAINTS_KEY, values)
    if form == "keys":
        for name, value in zip(CONSTRAINT_NAMES, values):
            storage.set_trial_system_attr(trial._trial_id, f"{CONSTRAINTS_KEY}:{name}", value)
    else:
        storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, values)


# The samplers by name are nas.search.config.SAMPLERS (names a YAML may use -> these factories, imported on use).
def tpe_sampler(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True, **_CONS)


def nsga2_sampler(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup), **_CONS)


def gp_sampler(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False, **_CONS)


def random_sampler(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(name: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` in a search YAML (:data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise UserError(f"search.sampler {name!r} is not a sampler; known: {SAMPLERS.allowed()}.")
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
        meta = run.read_meta() if run.exists() else None
        storage = storage or (meta.storage if meta else None)
        study_name = study_name or (meta.study if meta else STUDY_NAME)
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


def enqueue_grid(study: optuna.Study, space, limit: int | None = None, skip: Container[str] = ()) -> int:
    """Queue every candidate of ``space`` (in its deterministic order) once, but those whose id is in
    ``skip`` (already trained); return how many."""
    n = 0
    for arch in space.enumerate(limit):
        if arch.id in skip:
            continue
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
    study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, rec: TrialRecord, **attrs: Any
) -> None:
    """Tell Optuna a recorded outcome (:func:`record_state`): ok -> COMPLETE with its values; stopped early ->
    PRUNED; a training that failed (diverged, oom, error) -> FAIL, without values, so that it is neither on the
    Pareto front nor a best trial; infeasible (a worker measured an objective beyond its budget) -> COMPLETE with
    its values (each unmeasured objective's ``failed`` value), which samplers learn the budget from."""
    set_attrs(study, trial, {"score": rec.score, "status": rec.status, "reason": rec.reason[:500], **attrs})
    state = record_state(rec)
    if state == TrialState.COMPLETE:
        study.tell(trial.number, rec.axis_values(study_objectives(study)), skip_if_finished=True)
    else:
        study.tell(trial.number, state=state, skip_if_finished=True)


def record_state(rec: TrialRecord) -> TrialState:
    """The state of a record's study trial: see :func:`tell_record`."""
    if rec.status == "stopped":
        return TrialState.PRUNED
    if rec.status in ("ok", "infeasible"):
        return TrialState.COMPLETE
    return TrialState.FAIL


def recover_records(study: optuna.Study, records: list[TrialRecord], space, run: RunDir) -> list[TrialRecord]:
    """Finished trials the study holds but ``trials.jsonl`` lacks (a truncated or deleted file): rebuild
    their records from the study (axes, score, status, reason, cost; no per-epoch history), append them to
    ``trials.jsonl`` and return them, so they are neither lost nor trained again."""
    known = {r.number for r in records}
    source = run.journal.name if isinstance(study._storage, optuna.storages.JournalStorage) else "optuna storage"
    objectives = study_objectives(study)
    out = []
    for ft in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        a = ft.user_attrs
        if ft.number in known or "tune_trial_id" not in a or a.get("status") not in STATUSES:
            continue  # recorded, never trained (infeasible, duplicate), interrupted, or not written by nas-search
        try:
            arch = space.suggest(optuna.trial.FixedTrial(dict(ft.params)))
        except ValueError:  # parameters under other names (a run started by an earlier version)
            continue
        if arch.id != a.get("arch_id"):
            continue  # the space cannot rebuild it exactly: leave it to be trained again
        values = ft.values if ft.state == TrialState.COMPLETE and ft.values else [o.failed for o in objectives]
        score = a.get("score", 0.0)
        finite = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        rec = TrialRecord.of_trial(
            arch,
            ft.number,
            str(a["tune_trial_id"]),
            a["status"],
            reason=str(a.get("reason", "")),
            score=float(score) if finite else 0.0,
            values={o.name: float(v) for o, v in zip(objectives, values)},
            metrics={"params": _num(a.get("params")), "macs": _num(a.get("macs"))},
            extra={"recovered_from": source},
        )
        run.append_record(rec)
        out.append(rec)
    return out


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def reconcile(study: optuna.Study, records: list[TrialRecord]) -> int:
    """Settle RUNNING trials left by a stopped or killed driver; return how many were re-queued.

    A RUNNING trial whose result is in ``trials.jsonl`` is told that result; any other is marked FAIL and
    its parameters are queued again, so the architecture is trained on resume. Its user attribute says
    which: ``interrupted`` (it had reached a worker) or ``abandoned`` (the driver stopped while proposing it,
    before it was launched).
    """
    by_number = {r.number: r for r in records if r.number is not None}
    requeued = 0
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        rec = by_number.get(ft.number)
        if rec is not None and rec.id == ft.user_attrs.get("arch_id"):
            tell_record(study, ft, rec)
            continue
        kind = "interrupted" if "tune_trial_id" in ft.user_attrs else "abandoned"
        why = "while it trained" if kind == "interrupted" else "while proposing it"
        reason = f"{kind}: the driver stopped {why}; its candidate was queued again"
        set_attrs(study, ft, {kind: True, "reason": reason})
        study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
        if ft.params:
            again = {"requeued_from": ft.number}
            if isinstance(ft.user_attrs.get("proposal"), int):  # ordered mode: the same place in the sequence
                again["proposal"] = ft.user_attrs["proposal"]
            study.enqueue_trial(dict(ft.params), user_attrs=again)
        requeued += 1
    return requeued


# ------------------------------------------------------------------------------------------------ journal
# RUN_DIR/optuna.journal is Optuna's JournalFileBackend: one JSON operation per line, replayed in order when
# the study is opened. Optuna itself skips a last line without its newline when reading, but appends the next
# operation onto it, and the merged line then stops every later read ("Invalid log format"); a line lost
# from the middle (CREATE_TRIAL) renumbers every later trial, and an emptied journal starts numbering at 0
# again. So before a resume opens the study, :func:`prepare_journal` repairs the journal, or rebuilds the
# study from trials.jsonl (the source of truth), so that every recorded trial is in it once, under its number.

JOURNAL_OPS = range(11)  # optuna.storages.journal._storage.JournalOperation: CREATE_STUDY .. DISCARD_TRIALS


def journal_op(d: Any) -> dict[str, Any]:
    """One decoded line of an Optuna journal (the ``parse`` of :func:`nas.fsio.repair_jsonl_tail`)."""
    op = d.get("op_code") if isinstance(d, dict) else None
    if isinstance(op, bool) or not isinstance(op, int) or op not in JOURNAL_OPS:
        raise Invalid("not an Optuna journal operation (no valid op_code)")
    if not isinstance(d.get("worker_id"), str):
        raise Invalid("not an Optuna journal operation (no worker_id)")
    return d


@dataclass
class JournalRepair:
    """What :func:`prepare_journal` did to a run's journal (nothing: all ``None``/empty)."""

    torn: bytes | None = None  # the torn last line cut off into optuna.journal.torn
    rebuilt: str | None = None  # why the study was rebuilt from trials.jsonl
    aside: Path | None = None  # where the replaced journal was kept
    renumbered: list[tuple[int, int]] = field(default_factory=list)  # (old, new) numbers of records
    records_aside: Path | None = None  # trials.jsonl before its records were renumbered

    def notes(self, run: RunDir) -> list[str]:
        """One line per repair, for the driver's log."""
        out = []
        if self.torn is not None:
            out.append(
                f"cut a torn last line off {run.journal.name} (a driver killed mid-write; kept in "
                f"{run.journal.name}.torn)"
            )
        if self.rebuilt is not None:
            kept = f"; the old journal is kept as {self.aside.name}" if self.aside is not None else ""
            out.append(f"rebuilt the Optuna study from {run.trials_jsonl.name}: {self.rebuilt}{kept}")
        if self.renumbered:
            pairs = ", ".join(f"{a} -> {b}" for a, b in self.renumbered)
            out.append(
                f"{len(self.renumbered)} record(s) of {run.trials_jsonl.name} shared a trial number with an "
                f"earlier one and were renumbered ({pairs}); the file before is kept as {self.records_aside.name}"
            )
        return out


def prepare_journal(
    run: RunDir,
    records: list[TrialRecord],
    space,
    objectives: tuple[Objective, ...],
    study_name: str = STUDY_NAME,
) -> JournalRepair:
    """Make the run's journal safe to open and append to, before a resume opens the study.

    A torn last line is cut off (kept in ``optuna.journal.torn``); a whole last line without its newline gets
    one. If the journal is then missing or empty while trials are recorded, unreadable by Optuna, lacks the
    study, or lacks a recorded trial (or holds another architecture under its number), the study is rebuilt
    from ``records`` (each under its own number; a number no record has becomes a FAIL trial marked
    ``lost``) and the old journal is moved aside, never deleted. Records that share a number (written by an
    earlier version whose journal was lost) are renumbered, ``trials.jsonl`` rewritten with the old file
    kept beside it. Only the driver holding the run's lock calls this.
    """
    from nas.fsio import repair_jsonl_tail

    path = run.journal
    out = JournalRepair()
    if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise UserError(
            f"{path} is not a regular file (a link, a folder or a device), so it is not the Optuna journal "
            "nas-search writes. Move it aside and resume: the study is rebuilt from trials.jsonl, which keeps "
            "every result."
        )
    if os.path.lexists(path):
        out.torn = repair_jsonl_tail(path, journal_op)
    out.rebuilt = journal_problem(path, records, study_name)
    if out.rebuilt is not None:
        _rebuild(run, records, space, objectives, study_name, out)
    return out


def journal_problem(path: Path, records: list[TrialRecord], study_name: str = STUDY_NAME) -> str | None:
    """Why the journal at ``path`` cannot carry the study of ``records`` on (``None``: it can)."""
    numbers = [r.number for r in records if r.number is not None]
    dup = next((n for i, n in enumerate(numbers) if n in numbers[:i]), None)
    if not os.path.lexists(path) or os.path.getsize(path) == 0:
        return None if not records else ("it is missing" if not os.path.lexists(path) else "it is empty")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = JournalStorage(JournalFileBackend(str(path)))
            study_id = storage.get_study_id_from_name(study_name)
            trials = storage.get_all_trials(study_id, deepcopy=False)
    except KeyError:
        return f"it holds no study {study_name!r}" if records else None
    except Exception as err:  # noqa: BLE001 - whatever Optuna raises on a damaged journal
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return f"Optuna cannot read it ({type(err).__name__}: {first})"
    by_number = {t.number: t for t in trials}
    for rec in records:
        if rec.number is None:
            continue
        t = by_number.get(rec.number)
        if t is None:
            return f"it lacks trial {rec.number} of trials.jsonl ({len(trials)} trials in the journal)"
        if t.user_attrs.get("arch_id") != rec.id:
            return f"its trial {rec.number} is not the architecture trials.jsonl records under that number"
    if dup is not None:
        return f"trials.jsonl has two records of trial {dup}"
    return None


def _aside(path: Path, label: str) -> Path:
    """A free name beside ``path`` to keep an old version of it."""
    for i in itertools.count(1):
        cand = path.with_name(f"{path.name}.{label}-{i}")
        if not os.path.lexists(cand):
            return cand
    raise AssertionError("unreachable")


def _rebuild(
    run: RunDir,
    records: list[TrialRecord],
    space,
    objectives: tuple[Objective, ...],
    study_name: str,
    out: JournalRepair,
) -> None:
    """Write a new journal with one trial per record number (see :func:`prepare_journal`), then swap it in."""
    import tempfile

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nas.fsio import os_problem

    by_number: dict[int, TrialRecord] = {}
    later: list[TrialRecord] = []
    for rec in records:
        if rec.number is None or rec.number in by_number:
            later.append(rec)
        else:
            by_number[rec.number] = rec
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{run.journal.name}.", suffix=".rebuild", dir=run.path)
        os.close(fd)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(
                storage=JournalStorage(JournalFileBackend(tmp)),
                study_name=study_name,
                directions=[o.direction for o in objectives],
                sampler=optuna.samplers.RandomSampler(seed=0),
            )
            name_metrics(study, objectives)
            for n in range(max(by_number, default=-1) + 1):
                rec = by_number.get(n)
                study.add_trial(_rebuilt_trial(rec, space, objectives, True) if rec else _lost_trial())
            renumbered: dict[int, TrialRecord] = {}
            for rec in later:
                n = len(study.get_trials(deepcopy=False))
                study.add_trial(_rebuilt_trial(rec, space, objectives, rec.number is not None))
                if rec.number is not None:
                    renumbered[id(rec)] = rec.replace_number(n, rec.number)
                    out.renumbered.append((rec.number, n))
        if renumbered:
            out.records_aside = _aside(run.trials_jsonl, "before-renumbering")
            run.rewrite_records([renumbered.get(id(r), r) for r in records], out.records_aside)
        if os.path.lexists(run.journal):
            out.aside = _aside(run.journal, "replaced")
            os.rename(run.journal, out.aside)
        os.replace(tmp, run.journal)
        tmp = None
    except OSError as err:
        raise UserError(
            f"Cannot rebuild the Optuna study of {run.path} ({out.rebuilt}): {os_problem(err)}. Nothing "
            "recorded was lost: trials.jsonl keeps every result; fix that and resume."
        ) from None
    finally:
        if tmp is not None:
            for leftover in (tmp, tmp + ".lock"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass


def _rebuilt_trial(
    rec: TrialRecord, space, objectives: tuple[Objective, ...], numbered: bool
) -> optuna.trial.FrozenTrial:
    """The study trial of a record: its parameters (when the space rebuilds the architecture), values,
    state and user attributes as the searcher sets them. ``numbered``: it is the record's own trial (a
    record without a number gets no ``tune_trial_id``, so recover_records never copies it back)."""
    attrs: dict[str, Any] = {
        "arch": rec.arch_str,
        "arch_id": rec.id,
        "params": int(rec.metric("params")),
        "macs": int(rec.metric("macs")),
        "constraints": [0.0, 0.0],
        "score": rec.score,
        "status": rec.status,
        "reason": rec.reason[:500],
        "rebuilt_from": "trials.jsonl",
    }
    if numbered and rec.tune_trial_id is not None:
        attrs["tune_trial_id"] = rec.tune_trial_id
    system = {CONSTRAINTS_KEY: [0.0, 0.0]}  # the list form (constraint_form): within the budgets
    replay = None
    try:
        encoded = space.encode(rec.architecture())
        replay = StandInTrial(lambda name, dist: encoded[name])
        if space.suggest(replay).id != rec.id:
            replay = None
    except (ValueError, KeyError, UserError):
        replay = None
    if replay is None:  # the space cannot rebuild it: kept for its number, invisible to the sampler
        return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={**attrs, "unbuildable": True})
    kw: dict[str, Any] = {"params": replay.params, "distributions": replay.distributions}
    state = record_state(rec)
    if state != TrialState.COMPLETE:
        return optuna.trial.create_trial(state=state, user_attrs=attrs, system_attrs=system, **kw)
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=rec.axis_values(objectives),
        user_attrs=attrs,
        system_attrs=system,
        **kw,
    )


def _lost_trial() -> optuna.trial.FrozenTrial:
    """A trial number the journal had but trials.jsonl never recorded (infeasible, a duplicate, ...)."""
    return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"lost": True, "rebuilt_from": "trials.jsonl"})
