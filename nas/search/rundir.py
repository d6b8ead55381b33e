"""The run directory: the single source of truth of a search.

Layout::

    RUN_DIR/
      space.yaml          the resolved search YAML (space in canonical form, train, objective, search)
      experiment.json     name, fingerprint, source file, sessions (start/end, trials asked for)
      optuna.journal      the Optuna study (open it with optuna / optuna-dashboard)
      trials.jsonl        one line per finished trial, appended and fsync'd by the driver
      leaderboard.csv/.json, best.yaml, report.md, pareto.png   derived, rewritten atomically
      tune/               Ray Tune experiment state, one folder per driver session
      driver.lock         held by the running driver
      search.log          the driver's progress lines
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from nas.errors import UserError, yaml_problem
from nas.fsio import append_line, atomic_write
from nas.yamlio import load_yaml_file

__all__ = ["RunDir", "new_meta", "resolve_run_dir", "DEFAULT_ROOT", "STUDY_NAME"]

DEFAULT_ROOT = "runs"
FORMAT = 1
STUDY_NAME = "nas"  # the study of a run whose study lives in its journal file
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def new_meta(
    name: str,
    fingerprint: str,
    source: str | None,
    *,
    storage: str | None = None,
    study: str = STUDY_NAME,
    uri: str | None = None,
) -> dict[str, Any]:
    """The content of a new run's ``experiment.json`` (``storage`` without its password)."""
    return {
        "format": FORMAT,
        "name": name,
        "fingerprint": fingerprint,
        "source": source,
        "storage": storage,
        "study": study,
        "uri": uri,
        "sessions": [],
    }


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
    log = property(lambda self: self.path / "search.log")

    def exists(self) -> bool:
        """A search ran here: it has ``experiment.json``, or (that file lost) ``space.yaml`` and results."""
        return self.experiment_json.is_file() or (
            self.space_yaml.is_file() and (self.trials_jsonl.is_file() or self.journal.is_file())
        )

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------ metadata
    def read_meta(self) -> dict[str, Any]:
        if not self.experiment_json.is_file() and self.exists():
            return self._rebuilt_meta()
        try:
            meta = json.loads(self.experiment_json.read_text())
            if not isinstance(meta, dict) or "fingerprint" not in meta:
                raise ValueError("no fingerprint")
            return meta
        except FileNotFoundError:
            raise UserError(
                f"{self.path} is not a nas-search run directory: it has no experiment.json. Pass "
                "the folder a search wrote (e.g. runs/<name>), or start a new search with "
                "`nas-search --space FILE`."
            ) from None
        except (ValueError, OSError) as err:
            raise UserError(
                f"{self.experiment_json} is unreadable or corrupted ({err}). Move it aside "
                f"(`mv {self.experiment_json} {self.experiment_json}.bad`) and resume: nas-search "
                "rebuilds it from space.yaml, and trials.jsonl and optuna.journal keep every result; "
                "only the session history is lost."
            ) from None

    def _rebuilt_meta(self) -> dict[str, Any]:
        """``experiment.json`` rebuilt from ``space.yaml`` (a journal study; the session history is gone)."""
        meta = new_meta(self.path.name, self.read_experiment().space.fingerprint(), str(self.space_yaml))
        meta["rebuilt"] = time.strftime("%Y-%m-%d %H:%M:%S")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.experiment_json, json.dumps(meta, indent=2, default=str))

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
                source = json.loads(self.experiment_json.read_text()).get("source")
            except (OSError, ValueError, AttributeError):
                pass
            raise UserError(
                f"{self.space_yaml} is corrupted ({why}); it must not be edited by hand. Restore it: "
                f"copy the search YAML the run started from ({source or 'see experiment.json, key source'}) "
                f"to {self.space_yaml} and resume (nas-search checks that its space matches the run's "
                "fingerprint); trials.jsonl and optuna.journal keep every result."
            ) from None
        except OSError as err:
            raise UserError(f"Cannot read {self.space_yaml}: {err.strerror}.") from None
        return experiment_from_dict(data, str(self.space_yaml))

    def write_experiment(self, exp, name: str) -> None:
        from trainers.training.config import TrainConfig  # noqa: F401 - the dataclasses below come from there

        data = {
            "space": exp.space.to_dict(),
            "train": dataclasses.asdict(exp.train),
            "objective": dataclasses.asdict(exp.objective),
            "search": dataclasses.asdict(exp.search),
        }
        header = (
            f"# Resolved search of run {name!r} (from {exp.file}); written by nas-search, do not edit.\n"
            f"# space fingerprint: {exp.space.fingerprint()}\n"
        )
        atomic_write(self.space_yaml, header + yaml.safe_dump(data, sort_keys=False))

    # -------------------------------------------------------------------------------- trials
    def read_records(self) -> list[dict[str, Any]]:
        """Finished trials in order; a torn last line (a killed driver) is ignored, other damage is an error."""
        if not self.trials_jsonl.is_file():
            return []
        lines = self.trials_jsonl.read_text().splitlines()
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "id" not in rec or "arch" not in rec:
                    raise ValueError("not a trial record")
            except ValueError as err:
                if i == len(lines) - 1:
                    continue  # torn write of a killed driver: that trial is re-run
                raise UserError(
                    f"{self.trials_jsonl}: line {i + 1} is corrupted ({err}). Delete that line to "
                    "re-run the trial, or restore the file; the other lines are intact."
                ) from None
            out.append(rec)
        return out

    def torn_tail(self) -> tuple[int, bytes] | None:
        """``(offset, fragment)`` of a torn last line of ``trials.jsonl`` (a driver killed mid-write: no
        trailing newline and not a whole record), else ``None``."""
        try:
            data = self.trials_jsonl.read_bytes()
        except FileNotFoundError:
            return None
        if not data or data.endswith(b"\n"):
            return None
        start = data.rfind(b"\n") + 1
        fragment = data[start:]
        try:
            rec = json.loads(fragment)
            if isinstance(rec, dict) and "id" in rec and "arch" in rec:
                return None  # a whole record that only lacks its newline
        except ValueError:
            pass
        return start, fragment

    def repair_torn_tail(self) -> bytes | None:
        """Cut a torn last line off ``trials.jsonl`` (its trial is re-run), keeping the fragment in
        ``trials.jsonl.torn``; return the fragment. Only the driver holding the lock calls this."""
        torn = self.torn_tail()
        if torn is None:
            return None
        start, fragment = torn
        append_line(self.path / "trials.jsonl.torn", fragment.decode(errors="replace") + "\n", sync=True)
        data = self.trials_jsonl.read_bytes()[:start]
        atomic_write(self.trials_jsonl, data, what=str(self.trials_jsonl))
        return fragment

    def append_record(self, record: dict[str, Any]) -> None:
        """Append one finished trial and fsync, so a killed driver loses no completed trial."""
        line = json.dumps(record, sort_keys=True, default=float) + "\n"
        self.repair_torn_tail()
        # A whole last record without its newline (edited by hand): start on a fresh line.
        prefix = ""
        if self.trials_jsonl.is_file() and self.trials_jsonl.stat().st_size:
            with open(self.trials_jsonl, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    prefix = "\n"
        append_line(self.trials_jsonl, prefix + line, sync=True)

    def log_line(self, text: str) -> None:
        append_line(self.log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
