"""The run directory: the single source of truth of a search.

Layout::

    RUN_DIR/
      space.yaml          the resolved search YAML (space in canonical form, train, objective, search)
      experiment.json     name, fingerprint, source file, sessions (start/end, trials asked for)
      optuna.journal      the Optuna study (open it with optuna / optuna-dashboard)
      trials.jsonl        one line per finished trial, appended and fsync'd by the driver
      finalists.jsonl     one line per verification training (``finalists:``; nas.search.finalists)
      finalists.csv/.json the verified finalists: mean score over seeds, 95% interval, ties with the best
      leaderboard.csv/.json, best.yaml, report.md, pareto.png   derived, rewritten atomically
      tune/               Ray Tune experiment state, one folder per driver session, and one TensorBoard run
                          per trained trial, named by its architecture (``t0003 C-C-T-T L=... D=...``)
      supernet/           the supernets of a weight-sharing protocol (``train.supernet``): one checkpoint per
                          regime, ``search-REGIME-FINGERPRINT.safetensors`` (nas.search.supernet)
      driver.lock         held by the running driver
      search.log          the driver's progress lines
      trials.jsonl.torn, optuna.journal.torn          torn last lines a driver cut off before appending
      optuna.journal.replaced-N                       a journal replaced by a study rebuilt from trials.jsonl
      trials.jsonl.before-renumbering-N               trials.jsonl before records sharing a number were renumbered

``trials.jsonl`` is read through :meth:`RunDir.read_records` (typed :class:`~nas.search.record.TrialRecord`s)
and ``experiment.json`` through :meth:`RunDir.read_meta` (a :class:`RunMeta`), both through ``nas.fsio``'s
readers: a damaged or foreign file is refused with one paragraph naming it (and the line). Both carry a
``format``; files written before it (format 1) are read the same and migrated on the next write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.errors import UserError, yaml_problem
from nas.fsio import (
    Invalid,
    append_jsonl,
    append_line,
    atomic_write,
    read_json,
    read_jsonl,
    record_format,
    repair_jsonl_tail,
)
from nas.search.record import TrialRecord
from nas.yamlio import load_yaml_file

DEFAULT_ROOT = "runs"
META_FORMAT = 2  # experiment.json: 1 (or no ``format``) as written before, 2 read through RunMeta; same keys
STUDY_NAME = "nas"  # the study of a run whose study lives in its journal file
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


@dataclass
class RunMeta:
    """``experiment.json``: what a run is (name, space fingerprint, source, where its study lives) and its
    driver sessions. ``sessions`` and ``protocol`` change as sessions start and end; :meth:`RunDir.write_meta`
    saves them."""

    name: str
    fingerprint: str
    source: str | None = None
    storage: str | None = None  # an RDB URL without its password; None: RUN_DIR/optuna.journal
    study: str = STUDY_NAME
    uri: str | None = None  # the run's URI when the driver works in a local copy
    sessions: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] | None = None
    rebuilt: str | None = None  # when experiment.json was rebuilt from space.yaml (it was lost)
    extra: dict[str, Any] = field(default_factory=dict)

    _STRINGS = ("source", "storage", "uri", "rebuilt")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "format": META_FORMAT,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "storage": self.storage,
            "study": self.study,
            "uri": self.uri,
            "sessions": self.sessions,
        }
        if self.protocol is not None:
            out["protocol"] = self.protocol
        if self.rebuilt is not None:
            out["rebuilt"] = self.rebuilt
        return out

    @classmethod
    def from_json(cls, d: Any) -> RunMeta:
        """The metadata of a decoded ``experiment.json`` (format 1 or 2); raises :class:`Invalid`."""
        if not isinstance(d, dict):
            raise Invalid(f"it is a JSON {type(d).__name__}, not the object nas-search writes")
        record_format(d, "experiment.json", META_FORMAT)
        if "fingerprint" not in d:
            raise Invalid("the key 'fingerprint' is missing")
        for key in ("name", "fingerprint"):
            if not isinstance(d.get(key, ""), str):
                raise Invalid(f"`{key}` must be a string (got {d[key]!r:.60})")
        for key in cls._STRINGS:
            if d.get(key) is not None and not isinstance(d[key], str):
                raise Invalid(f"`{key}` must be a string or null (got {d[key]!r:.60})")
        study = d.get("study") or STUDY_NAME
        if not isinstance(study, str):
            raise Invalid(f"`study` must be a string (got {study!r:.60})")
        sessions = d.get("sessions", [])
        if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
            raise Invalid("`sessions` must be a list of JSON objects")
        protocol = d.get("protocol")
        if protocol is not None and not isinstance(protocol, dict):
            raise Invalid(f"`protocol` must be a JSON object (got {protocol!r:.60})")
        known = {"format", "name", "fingerprint", "study", "sessions", "protocol", *cls._STRINGS}
        return cls(
            name=d.get("name", ""),
            fingerprint=d["fingerprint"],
            study=study,
            sessions=sessions,
            protocol=protocol,
            extra={k: v for k, v in d.items() if k not in known},
            **{k: d.get(k) for k in cls._STRINGS},
        )


def new_meta(
    name: str,
    fingerprint: str,
    source: str | None,
    *,
    storage: str | None = None,
    study: str = STUDY_NAME,
    uri: str | None = None,
) -> RunMeta:
    """The metadata of a new run (``storage`` without its password)."""
    return RunMeta(name=name, fingerprint=fingerprint, source=source, storage=storage, study=study, uri=uri)


def resolve_run_dir(name: str | None, run_dir: str | os.PathLike | None, space_file: str | None) -> Path:
    """``run_dir`` if given, else ``runs/<name>`` (name defaults to the space file's stem)."""
    if run_dir is not None:
        return Path(run_dir).expanduser()
    given = name is not None
    if name is None:
        name = Path(space_file).stem if space_file else "search"
    if not NAME_RE.fullmatch(name):
        which = f"--name {name!r}" if given else f"The run name {name!r} (the space file's stem)"
        raise UserError(
            f"{which} is not a valid run name: use 1-100 letters, digits, '-', '_' and '.' (not "
            f"first) (it becomes the folder {DEFAULT_ROOT}/<name>); pass --name NAME, or --run-dir for "
            "any other place."
        )
    return Path(DEFAULT_ROOT) / name


class RunDir:
    """Paths and records of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    # ----------------------------------------------------------------------------------- paths
    space_yaml = property(lambda self: self.path / "space.yaml")
    experiment_json = property(lambda self: self.path / "experiment.json")
    journal = property(lambda self: self.path / "optuna.journal")
    trials_jsonl = property(lambda self: self.path / "trials.jsonl")
    leaderboard_csv = property(lambda self: self.path / "leaderboard.csv")
    leaderboard_json = property(lambda self: self.path / "leaderboard.json")
    best_yaml = property(lambda self: self.path / "best.yaml")
    tune_dir = property(lambda self: self.path / "tune")
    finalists_jsonl = property(lambda self: self.path / "finalists.jsonl")
    finalists_csv = property(lambda self: self.path / "finalists.csv")
    finalists_json = property(lambda self: self.path / "finalists.json")
    log = property(lambda self: self.path / "search.log")

    def exists(self) -> bool:
        """A search ran here: it has ``experiment.json``, or (that file lost) ``space.yaml`` and results."""
        return self.experiment_json.is_file() or (
            self.space_yaml.is_file() and (self.trials_jsonl.is_file() or self.journal.is_file())
        )

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------ metadata
    def read_meta(self) -> RunMeta:
        """``experiment.json`` (rebuilt from ``space.yaml`` where it was lost); a damaged or foreign file
        is refused with one paragraph."""
        if not os.path.lexists(self.experiment_json):
            if self.exists():
                return self._rebuilt_meta()
            raise UserError(
                f"{self.path} is not a nas-search run directory: it has no experiment.json. Pass "
                "the folder a search wrote (e.g. runs/<name>), or start a new search with "
                "`nas-search --space FILE`."
            )
        return read_json(
            self.experiment_json,
            RunMeta.from_json,
            what="The run's metadata",
            fix=f"Move it aside (`mv {self.experiment_json} {self.experiment_json}.bad`) and resume: nas-search "
            "rebuilds it from space.yaml, and trials.jsonl and optuna.journal keep every result; only the "
            "session history is lost.",
        )

    def _rebuilt_meta(self) -> RunMeta:
        """``experiment.json`` rebuilt from ``space.yaml`` (a journal study; the session history is gone)."""
        meta = new_meta(self.path.name, self.read_experiment().space.fingerprint(), str(self.space_yaml))
        meta.rebuilt = time.strftime("%Y-%m-%d %H:%M:%S")
        return meta

    def write_meta(self, meta: RunMeta) -> None:
        atomic_write(self.experiment_json, json.dumps(meta.to_json(), indent=2, default=str))

    def axes(self) -> tuple[str, ...]:
        """The run's objective axes (``objective.axes`` of ``space.yaml``; the default axes where it is
        unreadable or has none), read without validating the rest."""
        from trainers.objectives.registry import DEFAULT_AXES, OBJECTIVES

        try:
            axes = (load_yaml_file(self.space_yaml).get("objective") or {}).get("axes")
        except (OSError, yaml.YAMLError, UserError, AttributeError):
            return DEFAULT_AXES
        ok = isinstance(axes, list) and axes and all(isinstance(a, str) and a in OBJECTIVES for a in axes)
        return tuple(axes) if ok else DEFAULT_AXES

    def image_size(self) -> int | None:
        """The run's input size (``space.input.image_size`` of ``space.yaml``, read once per ``RunDir``);
        ``None`` where it is unreadable."""
        if "_image_size" not in self.__dict__:
            try:
                exp = self.read_experiment()
                self.__dict__["_image_size"] = int(exp.space.image_size)
            except (OSError, UserError, ValueError, AttributeError):
                self.__dict__["_image_size"] = None
        return self.__dict__["_image_size"]

    def read_experiment(self):
        """The :class:`Experiment` stored in ``space.yaml``."""
        from nas.search.config import experiment_from_dict

        if not self.space_yaml.is_file():
            raise UserError(
                f"{self.path} has no space.yaml, so it is not a complete run directory. Start a new "
                "search with `nas-search --space FILE`."
            )
        try:
            data = load_yaml_file(self.space_yaml)
        except (yaml.YAMLError, UserError) as err:
            why = yaml_problem(err) if isinstance(err, yaml.YAMLError) else str(err)
            source = None
            try:
                source = self.read_meta().source if self.experiment_json.is_file() else None
            except UserError:
                pass
            raise UserError(
                f"{self.space_yaml} is corrupted ({why}); it must not be edited by hand. Restore it: "
                f"copy the search YAML the run started from ({source or 'see experiment.json, key source'}) "
                f"to {self.space_yaml} and resume (nas-search checks that its space matches the run's "
                "fingerprint); trials.jsonl and optuna.journal keep every result."
            ) from None
        except OSError as err:
            raise UserError(f"Cannot read {self.space_yaml}: {err.strerror}.") from None
        return experiment_from_dict(data, str(self.space_yaml), stored=True)

    def write_experiment(self, exp, name: str) -> None:
        from trainers.training.config import TrainConfig  # noqa: F401 - the dataclasses below come from there

        data = {
            "space": exp.space.to_dict(),
            "train": dataclasses.asdict(exp.train),
            "objective": dataclasses.asdict(exp.objective),
            "search": dataclasses.asdict(exp.search),
        }
        if getattr(exp, "finalists", None) is not None:
            f = exp.finalists
            over = {k: dict(v) for k, v in f.overrides.items() if v}
            if "data" in over.get("train", {}):  # the resolved source, as train.data above
                over["train"]["data"] = dataclasses.asdict(f.train.data)
            data["finalists"] = {"top_k": f.top_k, "pareto": f.pareto, "max": f.max, "seeds": f.seeds, **over}
        header = (
            f"# Resolved search of run {name!r} (from {exp.file}); written by nas-search, do not edit.\n"
            f"# space fingerprint: {exp.space.fingerprint()}\n"
        )
        atomic_write(self.space_yaml, header + yaml.safe_dump(data, sort_keys=False))

    # -------------------------------------------------------------------------------- trials
    RECORDS_FIX = (
        "Delete that line to run its trial again (or restore the file from a copy); the other lines are intact."
    )

    def read_records(self) -> list[TrialRecord]:
        """Finished trials in order, typed; a torn last line (a killed driver) is skipped, any other damage
        (a wrong type, a NaN, a foreign line) is refused with one paragraph naming the line."""
        return read_jsonl(self.trials_jsonl, TrialRecord.from_json, what="The trial records", fix=self.RECORDS_FIX)

    def repair_torn_tail(self) -> bytes | None:
        """Cut a torn last line off ``trials.jsonl`` (its trial is recovered from the study or re-run),
        keeping the fragment in ``trials.jsonl.torn``; return the fragment. A whole last record that only
        lacks its newline gets one. Only the driver holding the lock calls this."""
        return repair_jsonl_tail(self.trials_jsonl, TrialRecord.from_json)

    def append_record(self, record: TrialRecord) -> None:
        """Append one finished trial and fsync, so a killed driver loses no completed trial."""
        append_jsonl(self.trials_jsonl, record.to_json(), TrialRecord.from_json)

    def rewrite_records(self, records: list[TrialRecord], aside: Path) -> None:
        """Replace ``trials.jsonl`` with ``records`` (atomically), the old file kept as ``aside``."""
        atomic_write(aside, self.trials_jsonl.read_bytes(), what=str(aside))
        lines = "".join(json.dumps(r.to_json(), sort_keys=True, default=float) + "\n" for r in records)
        atomic_write(self.trials_jsonl, lines, what=str(self.trials_jsonl))

    # ---------------------------------------------------------------------------- verification
    FINALISTS_FIX = "Delete that line to run its training again; the other lines are intact."

    def read_finalists(self) -> list:
        """The verification trainings (``finalists.jsonl``) in order, typed
        (:class:`~nas.search.finalists.FinalistRecord`); damage is refused as in :meth:`read_records`."""
        from nas.search.finalists import FinalistRecord

        return read_jsonl(
            self.finalists_jsonl, FinalistRecord.from_json, what="The verification records", fix=self.FINALISTS_FIX
        )

    def append_finalist(self, record) -> None:
        """Append one verification training and fsync."""
        from nas.search.finalists import FinalistRecord

        append_jsonl(self.finalists_jsonl, record.to_json(), FinalistRecord.from_json)

    def log_line(self, text: str) -> None:
        append_line(self.log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
