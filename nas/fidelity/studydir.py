"""A fidelity study's directory: its files, the records of finished jobs, a first start or a checked rerun.

The study directory holds all state::

    STUDY_DIR/
      study.json          the resolved study (settings, search YAML, every protocol) and its fingerprint
      architectures.json  the sampled architectures, fixed at the first start
      jobs.jsonl          one line per finished job (training or zero-cost), appended and fsync'd
      driver.lock         held by the running driver
      fidelity.md/.json, scatter.png   derived by nas.fidelity.report

Each file is read by one typed reader here, through :mod:`nas.fsio` (:class:`StudyRecord`, the architecture
list, :class:`JobRecord`): what is damaged, of the wrong shape or of another study is refused with one
paragraph naming the file (and the line); a torn last line of ``jobs.jsonl`` (a crash mid-write) is skipped
and, before the next record is appended, cut off into ``jobs.jsonl.torn`` (its job runs again); a whole last
record that only lacks its newline gets one.

Formats (``"format"``; this version writes :data:`FORMAT` and reads every earlier one as it):

- ``study.json``: 1 as written before the formats were versioned together, 2 the same keys
  (``fingerprint``, ``file``, ``source``).
- ``architectures.json``: 1 a bare list of architectures; 2 ``{"format": 2, "architectures": [...]}``.
- ``jobs.jsonl``: 1 (no ``format`` key) a record without ``kind``, and NaN where a zero-cost proxy or a
  metric had no value; 2 adds ``"format": 2`` and ``"kind"`` (``train`` or ``zero_cost``; room for more
  kinds later) and writes null for a missing value (NaN is refused).

A folder with no ``study.json`` that holds anything else is not a study: no study starts there, and nothing
in it is written over.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import ConfigError, UserError
from nas.fidelity.config import ZERO_COST_JOB, Study, named_architectures, study_from_dict
from nas.fidelity.plan import TRAIN_JOB, job_key, plan_jobs, sample_architectures
from nas.fsio import (
    Invalid,
    append_jsonl,
    atomic_write,
    is_run_dir,
    make_dirs,
    os_problem,
    read_json,
    read_jsonl,
    record_format,
    repair_jsonl_tail,
)
from nas.limits import SEED_MAX
from nas.model.arch import Architecture

FORMAT = 2  # the format of the files this version writes (see the module notes)
KINDS = (TRAIN_JOB, ZERO_COST_JOB)
STATUSES = ("ok", "diverged", "oom", "error", "infeasible")
# what a first start killed before it wrote study.json may leave in the folder (study.json comes last)
LEFTOVERS = ("driver.lock", "ray.log", "architectures.json")
OWN_FILES = ("study.json", "architectures.json", "jobs.jsonl")


class _OldNaN:
    """What a NaN of a format-1 line decodes to: accepted there (as a missing value), refused in format 2."""

    def __repr__(self) -> str:
        return "NaN"


OLD_NAN = _OldNaN()


# ------------------------------------------------------------------------------------------ records
def _format(d: Mapping[str, Any], what: str) -> int:
    return record_format(d, what, FORMAT)


def _unknown(d: Mapping[str, Any], known: set[str], what: str) -> None:
    extra = sorted(str(k) for k in d if k not in known)
    if extra:
        raise Invalid(f"it has the key {extra[0]!r:.60}, which no {what} has")


def _text(d: Mapping[str, Any], key: str, *, empty: bool = False, default: str | None = None) -> str:
    if key not in d and default is not None:
        return default
    if key not in d:
        raise Invalid(f"the key {key!r} is missing")
    v = d[key]
    if not isinstance(v, str) or (not empty and not v):
        raise Invalid(f"`{key}` must be a{'' if empty else ' non-empty'} string (got {v!r:.60})")
    return v


def _number(v: Any, key: str, *, finite: bool = True) -> float | None:
    """A number (``None`` and an old NaN: ``None``); ``finite``: +/-Infinity refused too."""
    if v is None or v is OLD_NAN:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Invalid(f"`{key}` must be a number or null (got {v!r:.60})")
    if finite and not math.isfinite(v):
        raise Invalid(f"`{key}` must be a finite number (got {v})")
    return v


def _holds_old_nan(obj: Any) -> bool:
    if obj is OLD_NAN:
        return True
    if isinstance(obj, Mapping):
        return any(_holds_old_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_holds_old_nan(v) for v in obj)
    return False


def json_safe(obj: Any) -> Any:
    """``obj`` as JSON writes it: a NaN (or an old NaN) as null, tuples as lists."""
    if obj is OLD_NAN or (isinstance(obj, float) and math.isnan(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _jsonable(obj: Any) -> Any:
    """A worker's metric as JSON holds it: a numpy or torch scalar as a float, anything else as its text."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


_JOB_KEYS = {
    "format",
    "kind",
    "key",
    "arch_id",
    "arch",
    "layout",
    "protocol",
    "seed",
    "status",
    "reason",
    "generalization",
    "capacity",
    "score",
    "zero_cost",
    "metrics",
    "history",
}


@dataclass(frozen=True)
class JobRecord:
    """One finished job of ``jobs.jsonl``: a training (``kind`` ``train``) of ``arch`` under ``protocol``
    with ``seed``, or the zero-cost proxies of ``arch`` (``kind`` ``zero_cost``).

    A value that was not measured is NaN here (null in the file): a zero-cost proxy without a value, a
    metric the trainer could not compute. ``generalization``, ``capacity`` and ``score`` are finite for a
    training whose ``status`` is ``ok``, and ``None`` where a record has none (a worker lost).
    """

    key: str
    kind: str
    arch_id: str
    arch: str
    layout: str
    protocol: str
    seed: int
    status: str
    reason: str = ""
    generalization: float | None = None
    capacity: float | None = None
    score: float | None = None
    zero_cost: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Mapping[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, d: Any) -> JobRecord:
        """The record of one decoded line of ``jobs.jsonl`` (format 1 or 2); raises :class:`Invalid`."""
        if not isinstance(d, dict):
            raise Invalid(f"it is {type(d).__name__}, not a JSON object (each line of jobs.jsonl is one)")
        fmt = _format(d, "jobs.jsonl")
        _unknown(d, _JOB_KEYS, "job record")
        if fmt == 1:  # before kinds: the zero-cost job was the only one named zero_cost
            kind = ZERO_COST_JOB if d.get("protocol") == ZERO_COST_JOB else TRAIN_JOB
        else:
            if _holds_old_nan(d):
                raise Invalid("it holds NaN, which no format-2 record does (null stands for a value not measured)")
            kind = _text(d, "kind")
            if kind not in KINDS:
                raise Invalid(f"its kind {kind!r:.40} is not a kind of job ({', '.join(KINDS)})")
        arch_id, protocol = _text(d, "arch_id"), _text(d, "protocol")
        seed = d.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise Invalid(f"`seed` must be an integer from 0 to {SEED_MAX} (got {seed!r:.40})")
        if (kind == ZERO_COST_JOB) != (protocol == ZERO_COST_JOB):
            raise Invalid(f"its kind {kind!r} does not go with its protocol {protocol!r}")
        key = _text(d, "key")
        if key != job_key(arch_id, kind, protocol, seed):
            raise Invalid(
                f"its key {key!r:.80} is not that of its architecture, protocol and seed "
                f"({job_key(arch_id, kind, protocol, seed)!r})"
            )
        status = _text(d, "status")
        if status not in STATUSES:
            raise Invalid(f"its status {status!r:.40} is not one of {', '.join(STATUSES)}")
        axes = {name: _number(d.get(name), name) for name in ("generalization", "capacity", "score")}
        if kind == TRAIN_JOB and status == "ok":
            for name, v in axes.items():
                if v is None:
                    raise Invalid(f"it is a finished training (status ok) without its `{name}`")
        zc = d.get("zero_cost", {})
        if zc is None or not isinstance(zc, dict):
            raise Invalid(f"`zero_cost` must be a mapping of proxy names to scores (got {zc!r:.60})")
        if kind == ZERO_COST_JOB and status == "ok" and "zero_cost" not in d:
            raise Invalid("it is a zero-cost measurement (status ok) without its `zero_cost` scores")
        scores = {k: _number(v, f"zero_cost.{k}", finite=False) for k, v in zc.items()}
        metrics = d.get("metrics", {})
        if not isinstance(metrics, dict):
            raise Invalid(f"`metrics` must be a mapping (got {metrics!r:.60})")
        clean = {}
        for k, v in metrics.items():  # numbers (null: not measured), or what else a custom trainer reports
            if isinstance(v, (str, bool, list, dict)):
                clean[k] = json_safe(v)
            else:
                clean[k] = _number(v, f"metrics.{k}", finite=False)
        history = d.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise Invalid("`history` must be a list of mappings (one per round)")
        return cls(
            key=key,
            kind=kind,
            arch_id=arch_id,
            arch=_text(d, "arch"),
            layout=_text(d, "layout"),
            protocol=protocol,
            seed=seed,
            status=status,
            reason=_text(d, "reason", empty=True, default=""),
            generalization=axes["generalization"],
            capacity=axes["capacity"],
            score=axes["score"],
            zero_cost={k: math.nan if v is None else float(v) for k, v in scores.items()},
            metrics={k: math.nan if v is None else v for k, v in clean.items()},
            history=tuple(json_safe(h) for h in history),
        )

    @classmethod
    def from_result(cls, rec: Mapping[str, Any]) -> JobRecord:
        """The record of a worker's result (a plain dict, where NaN stands for a value not measured). A
        result that cannot be recorded (a custom trainer's odd metric) becomes an ``error`` record."""
        data = json_safe({**rec, "format": FORMAT, "metrics": _jsonable(rec.get("metrics", {}))})
        data.setdefault("kind", ZERO_COST_JOB if data.get("protocol") == ZERO_COST_JOB else TRAIN_JOB)
        try:
            return cls.from_json(data)
        except Invalid as err:
            keep = {k: data[k] for k in ("format", "kind", "key", "arch_id", "arch", "layout", "protocol", "seed")}
            return cls.from_json({**keep, "status": "error", "reason": f"the result cannot be recorded: {err}"[:500]})

    def to_json(self) -> dict[str, Any]:
        """The line written to ``jobs.jsonl`` (format :data:`FORMAT`; a NaN becomes null)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "key": self.key,
            "arch_id": self.arch_id,
            "arch": self.arch,
            "layout": self.layout,
            "protocol": self.protocol,
            "seed": self.seed,
            "status": self.status,
            "reason": self.reason,
        }
        for name in ("generalization", "capacity", "score"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.kind == ZERO_COST_JOB or self.zero_cost:
            out["zero_cost"] = json_safe(self.zero_cost)
        out["metrics"] = json_safe(self.metrics)
        if self.history:
            out["history"] = json_safe(self.history)
        return out


@dataclass(frozen=True)
class StudyRecord:
    """``study.json``: the study's fingerprint, the study YAML's path and the study YAML as it started, with
    its search YAML inlined (``source``), so the study reloads from this file alone."""

    fingerprint: str
    file: str | None
    source: dict[str, Any]

    @classmethod
    def from_json(cls, d: Any) -> StudyRecord:
        if not isinstance(d, dict):
            raise Invalid(f"it is {type(d).__name__}, not a JSON object")
        _format(d, "study.json")
        _unknown(d, {"format", "fingerprint", "file", "source"}, "study.json")
        fp = _text(d, "fingerprint")
        if not re.fullmatch(r"[0-9a-f]{16}", fp):
            raise Invalid(f"its fingerprint {fp!r:.40} is not one of ours (16 hexadecimal digits)")
        file = d.get("file")
        if file is not None and not isinstance(file, str):
            raise Invalid(f"`file` must be a path or null (got {file!r:.60})")
        source = d.get("source")
        if not isinstance(source, dict):
            raise Invalid(f"`source` must be the study YAML as a mapping (got {source!r:.60})")
        study = source.get("study")
        space = study.get("space") if isinstance(study, dict) else None
        if not isinstance(space, dict) or not isinstance(space.get("yaml"), dict):
            raise Invalid("`source.study.space` must hold the search YAML ({file: PATH, yaml: {...}})")
        return cls(fingerprint=fp, file=file, source=source)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "file": self.file, "source": self.source}


def _architectures(d: Any) -> list[Architecture]:
    """The architecture list of a decoded ``architectures.json`` (format 1: a bare list; 2: a mapping)."""
    if isinstance(d, dict):
        if _format(d, "architectures.json") < 2:
            raise Invalid("it is a mapping without `format` (an architecture list of format 1 is a bare list)")
        _unknown(d, {"format", "architectures"}, "architecture list")
        d = d.get("architectures")
    if not isinstance(d, list):
        raise Invalid(f"it holds {type(d).__name__}, not a list of architectures")
    if len(d) < 2:
        raise Invalid(f"it lists {len(d)} architecture(s); a study has at least 2")
    out: list[Architecture] = []
    seen: dict[str, int] = {}
    for i, a in enumerate(d):
        try:
            arch = Architecture.from_dict(a, None, f"architectures[{i}]")
        except UserError as err:
            raise Invalid(str(err).rstrip(".")) from None
        if arch.id in seen:
            raise Invalid(f"architectures {seen[arch.id] + 1} and {i + 1} are the same ({arch})")
        seen[arch.id] = i
        out.append(arch)
    return out


# ------------------------------------------------------------------------------------------ the folder
class StudyDir:
    """The files of one study directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.study_json = self.path / "study.json"
        self.archs_json = self.path / "architectures.json"
        self.jobs = self.path / "jobs.jsonl"

    def exists(self) -> bool:
        return self.study_json.is_file()

    def _fix(self) -> str:
        return (
            f"It is the study's own record: restore it from a copy, or start the study again from its YAML "
            f"in another folder (`nas-fidelity STUDY.yaml --name NEW`); {self.path} is left as it is."
        )

    def read_record(self) -> StudyRecord:
        """``study.json`` as written at the first start."""
        return read_json(self.study_json, StudyRecord.from_json, what="The study record", fix=self._fix())

    def read_study(self, record: StudyRecord | None = None) -> Study:
        """The study as saved at the first start (no source file needed)."""
        saved = record or self.read_record()
        try:
            study = study_from_dict(saved.source, saved.file)
        except ConfigError as err:
            raise UserError(
                f"The study saved in {self.study_json} cannot be loaded: {str(err).rstrip('.')}. Nothing was "
                "changed. Restore what it names (a data folder, a trainer module), or start the study again "
                "from its YAML in another folder (`nas-fidelity STUDY.yaml --name NEW`)."
            ) from None
        if study.fingerprint() != saved.fingerprint:
            raise UserError(
                f"The study saved in {self.study_json} does not resolve to the study it recorded (fingerprint "
                f"{study.fingerprint()}, recorded {saved.fingerprint}): the file was edited, or this version of "
                "coatnas resolves its protocol differently (a new setting or default), so new jobs would not be "
                "comparable with the recorded ones. Use the coatnas version that started it, or start the study "
                "again from its YAML in another folder (`nas-fidelity STUDY.yaml --name NEW`)."
            )
        return study

    def read_architectures(self, study: Study | None = None) -> list[Architecture]:
        """The sampled architectures; with ``study``, each must be a candidate of its space, and those of a
        list-form ``study.architectures`` must be the listed ones, in order."""
        if not os.path.lexists(self.archs_json):
            raise UserError(
                f"The study in {self.path} has no architectures.json (the architectures it trains). Restore it "
                "from a copy, or start the study again from its YAML in another folder (`nas-fidelity STUDY.yaml "
                f"--name NEW`); {self.path} is left as it is."
            )
        archs = read_json(self.archs_json, _architectures, what="The architecture list", fix=self._fix())
        if study is not None:
            space = study.experiment.space
            for i, a in enumerate(archs):
                why = space.why_invalid(a)
                if why is not None:
                    raise UserError(
                        f"The architecture list {self.archs_json}: architecture {i + 1} ({a}) is not a candidate "
                        f"of the study's space ({why}), so the file is another study's. {self._fix()}"
                    )
            diff = named_difference(study, archs)
            if diff:
                raise UserError(
                    f"The study in {self.path} lists its architectures (`study.architectures`, saved in "
                    f"{self.study_json.name}), but its architecture list {self.archs_json} holds others: {diff}. "
                    "The file was edited or is another study's, or this version of coatnas reads the list's "
                    "strings otherwise. Restore architectures.json from a copy, or start the study again from its "
                    "YAML in a new --study-dir (or --name); nothing was trained or changed."
                )
        return archs

    def read_records(self) -> list[JobRecord]:
        """Recorded jobs, in order; a torn last line (a crash mid-write) is skipped (and cut off before the
        next append), any other bad line refused with one paragraph naming it."""
        return read_jsonl(
            self.jobs,
            JobRecord.from_json,
            what="The job records",
            fix=(
                "Each line is one finished job: delete that line (its job runs again on "
                f"`nas-fidelity --resume {self.path}`; every other job is kept), or move the file aside to run "
                "every job again."
            ),
            nan=OLD_NAN,
        )

    def append(self, record: JobRecord | Mapping[str, Any]) -> JobRecord:
        """Append one finished job (a worker's result dict or a record), after repairing the file's tail."""
        rec = record if isinstance(record, JobRecord) else JobRecord.from_result(record)
        append_jsonl(self.jobs, rec.to_json(), JobRecord.from_json, nan=OLD_NAN)
        return rec

    def repair_tail(self) -> None:
        """Cut a torn last line of ``jobs.jsonl`` off (into ``jobs.jsonl.torn``) now, before any job runs: a
        place that cannot take it (a link or a FIFO at ``jobs.jsonl.torn``, a full disk) is refused before
        anything is trained, never after a finished job could not be recorded."""
        try:
            repair_jsonl_tail(self.jobs, JobRecord.from_json, nan=OLD_NAN)
        except OSError as err:
            raise UserError(
                f"The job records {self.jobs} end with a torn line (a run killed mid-write), which is cut off "
                f"into {self.jobs.name}.torn before any job runs, but that failed: {err.filename or self.jobs}: "
                f"{os_problem(err)}. Move {self.jobs.name}.torn aside (or free space), then resume with "
                f"`nas-fidelity --resume {self.path}`; nothing was trained or changed."
            ) from None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def check_folder(sdir: StudyDir) -> None:
    """Refuse a study folder that ``nas-fidelity`` must not write into: a file, a search run directory, a
    study whose own files are links or folders, or a folder with no ``study.json`` that holds anything but
    what a killed first start leaves. A new or empty folder, or a study directory, passes. Nothing is
    created."""
    p = sdir.path
    if p.is_symlink() and not p.exists():
        raise UserError(f"The study folder {p} is a dangling symbolic link. Choose another --study-dir or --name.")
    if os.path.lexists(p) and not p.is_dir():
        raise UserError(f"The study folder {p} is a file, not a folder. Choose another --study-dir or --name.")
    if not p.is_dir():
        return
    if is_run_dir(p):
        raise UserError(
            f"{p} is the run directory of a search (nas-search); a study never writes into it. Choose another "
            "--study-dir or --name."
        )
    for name in OWN_FILES:
        try:
            st = os.lstat(p / name)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise UserError(f"Cannot check {p / name}: {err.strerror or err}.") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"{p / name} is {_kind(st.st_mode)}; a study's own files are regular files that nas-fidelity "
                "wrote, and it never follows or replaces anything else. Move it aside (or restore the study's "
                "own file) and run the command again."
            )
    if sdir.exists():
        return
    try:
        names = os.listdir(p)
    except OSError as err:
        raise UserError(f"Cannot read the folder {p}: {err.strerror or err}. Choose another --study-dir.") from None
    foreign = sorted(n for n in names if n not in LEFTOVERS and not (n.startswith(".") and n.endswith(".tmp")))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(
            f"{p} is not a study directory (it has no study.json) but holds {shown}. nas-fidelity starts a "
            "study only in a new or empty folder, and never writes among files it did not create. Choose "
            "another --study-dir (or --name), or move those files away."
        )


def named_difference(study: Study, archs: list[Architecture]) -> str:
    """How ``archs`` (a study directory's architectures.json) differ from the architectures ``study``'s list-form
    ``study.architectures`` names, in order (``""``: they do not, or the study samples its architectures)."""
    if not isinstance(study.settings.architectures, tuple):
        return ""
    listed = named_architectures(study.settings.architectures, study.experiment.space, study.file)
    want, have = [a.id for a in listed], [a.id for a in archs]
    if want == have:
        return ""
    added = [str(a) for a in listed if a.id not in have]
    dropped = [str(a) for a in archs if a.id not in want]
    parts = [f"the list names {len(want)}, architectures.json holds {len(have)}"]
    if added:
        parts.append(f"{len(added)} listed but not there, e.g. {added[0]}")
    if dropped:
        parts.append(f"{len(dropped)} there but not listed, e.g. {dropped[0]}")
    if not added and not dropped:
        parts.append("the same architectures in another order (the reference trains the first ones)")
    return "; ".join(parts)


def prepare(sdir: StudyDir, study: Study | None) -> tuple[Study, list[Architecture]]:
    """Create the study directory at the first start, or check that a rerun asks for the same study."""
    check_folder(sdir)
    if sdir.exists():
        saved = sdir.read_record()
        if study is not None and saved.fingerprint != study.fingerprint():
            _check_listed(sdir, study)  # the list changed: say so (more than "other settings")
            raise UserError(
                f"{sdir.path} holds a study with other settings (the study YAML, its search YAML "
                "or a protocol changed since it started). Resume it as it was with "
                f"`nas-fidelity --resume {sdir.path}`, or give this study another --name."
            )
        study = sdir.read_study(saved)
        return study, sdir.read_architectures(study)
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
    make_dirs(sdir.path)
    atomic_write(
        sdir.archs_json,
        json.dumps({"format": FORMAT, "architectures": [a.to_dict() for a in archs]}, indent=1),
    )
    record = StudyRecord(fingerprint=study.fingerprint(), file=study.file, source=_source(study))
    atomic_write(sdir.study_json, json.dumps(record.to_json(), indent=1, default=str))  # last: the study exists
    return study, archs


def _check_listed(sdir: StudyDir, study: Study) -> None:
    """A study YAML whose ``study.architectures`` list names other architectures than the study directory's
    architectures.json (those chosen at its start) is refused, naming both; an unreadable architectures.json is
    left to the resume's own checks."""
    try:
        archs = sdir.read_architectures()
    except UserError:
        return
    diff = named_difference(study, archs)
    if diff:
        raise UserError(
            f"{sdir.path} holds a study started with other architectures: its {sdir.archs_json} holds the "
            f"{len(archs)} architectures chosen at its start, but `study.architectures` in {study.file} lists "
            f"others ({diff}). A started study keeps its architectures: restore the list as it was (or resume "
            f"with `nas-fidelity --resume {sdir.path}`), or start this study in a new --study-dir (or --name)."
        )


def _source(study: Study) -> dict[str, Any]:
    """The study YAML with its search YAML inlined (content and path), so the study reloads from study.json
    alone, whatever happens to the search YAML file later."""
    data = json.loads(json.dumps(study.source, default=str))
    data["study"] = {
        **(data.get("study") or {}),
        "space": {"file": str(Path(study.experiment.file).resolve()), "yaml": study.experiment.raw},
    }
    return data


def checked_records(sdir: StudyDir, study: Study, archs: list[Architecture]) -> list[JobRecord]:
    """The recorded jobs, each of one of the study's architectures and protocols and recorded once;
    otherwise one paragraph (the file is another study's, or was merged or edited by hand)."""
    records = sdir.read_records()
    known = {a.id for a in archs}
    seeds = {p.name: set(p.seeds) for p in study.protocols}
    for r in records:
        why = None
        if r.arch_id not in known:
            why = f"the architecture {r.arch_id} ({r.arch}) is not one of the study's {len(archs)}"
        elif r.kind == TRAIN_JOB and r.protocol not in seeds:
            why = f"the study has no protocol {r.protocol!r} (its protocols: {', '.join(seeds)})"
        elif r.kind == TRAIN_JOB and r.seed not in seeds[r.protocol]:
            why = f"the protocol {r.protocol!r} has no seed {r.seed} (its seeds: {sorted(seeds[r.protocol])})"
        if why:
            raise UserError(
                f"The job records {sdir.jobs} hold the job {r.key!r}, but {why}: the file is another study's "
                "(or was edited). Restore this study's own jobs.jsonl, or move the file aside to run every job "
                "again."
            )
    twice = [k for k, n in Counter(r.key for r in records).items() if n > 1]
    if twice:
        raise UserError(
            f"The job records {sdir.jobs} hold the job {twice[0]!r} more than once"
            + (f" (and {len(twice) - 1} other job(s) too)" if len(twice) > 1 else "")
            + " (a file merged or edited by hand), so which result counts is unclear. Keep the line you trust "
            "and delete the other(s); every other job is kept."
        )
    return records


def pending(
    sdir: StudyDir, study: Study, archs: list[Architecture], max_jobs: int | None
) -> tuple[set[str], list[dict[str, Any]], int]:
    """The recorded job keys, the jobs to run now (at most ``max_jobs``) and how many are left after them."""
    done = {r.key for r in checked_records(sdir, study, archs)}
    todo = [j for j in plan_jobs(study, archs) if j["key"] not in done]
    left_after = max(0, len(todo) - max_jobs) if max_jobs is not None else 0
    if max_jobs is not None:
        todo = todo[:max_jobs]
    return done, todo, left_after
