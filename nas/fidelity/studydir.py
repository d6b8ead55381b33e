"""A fidelity study's directory: its files, the records of finished jobs, a first start or a checked rerun.

The study directory holds all state::

    STUDY_DIR/
      study.json          the resolved study (settings, search YAML, every protocol) and its fingerprint
      architectures.json  the sampled architectures, fixed at the first start
      jobs.jsonl          one line per finished job (training or zero-cost), appended and fsync'd
      driver.lock         held by the running driver
      fidelity.md/.json, scatter.png   derived by nas.fidelity.report
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.fidelity.config import Study, study_from_dict
from nas.fidelity.plan import plan_jobs, sample_architectures
from nas.fsio import append_line, atomic_write
from nas.model.arch import Architecture

__all__ = ["StudyDir", "prepare", "pending"]

FORMAT = 1


class StudyDir:
    """The files of one study directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.study_json = self.path / "study.json"
        self.archs_json = self.path / "architectures.json"
        self.jobs = self.path / "jobs.jsonl"

    def exists(self) -> bool:
        return self.study_json.is_file()

    def read_study(self) -> Study:
        """The study as saved at the first start (no source file needed)."""
        try:
            saved = json.loads(self.study_json.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(
                f"{self.study_json} cannot be read ({err}); it is the study's own record. Restore "
                "it, or start the study again from its YAML under a new --name."
            ) from None
        study = study_from_dict(saved["source"], saved.get("file"))
        if study.fingerprint() != saved.get("fingerprint"):
            raise UserError(
                f"The search YAML {study.experiment.file} of the study in {self.path} changed since "
                "the study started, so new jobs would train under another protocol than the "
                "recorded ones. Restore that file, or start a new study under another --name."
            )
        return study

    def read_architectures(self) -> list[Architecture]:
        return [Architecture.from_dict(a, str(self.archs_json)) for a in json.loads(self.archs_json.read_text())]

    def read_records(self) -> list[dict[str, Any]]:
        """Recorded jobs; a torn last line (a crash mid-write) is dropped and the file repaired."""
        if not self.jobs.is_file():
            return []
        lines = self.jobs.read_text().splitlines()
        out, bad = [], 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise UserError(
                        f"{self.jobs} line {i + 1} is damaged (not JSON). Remove that line to re-run "
                        "its job; every other recorded job is kept."
                    ) from None
                bad += 1
        if bad:  # rewrite without the fragment so the next append starts on a clean line
            atomic_write(self.jobs, "".join(json.dumps(r) + "\n" for r in out))
        return out

    def append(self, record: dict[str, Any]) -> None:
        append_line(self.jobs, json.dumps(record) + "\n", sync=True)


def prepare(sdir: StudyDir, study: Study | None) -> tuple[Study, list[Architecture]]:
    """Create the study directory at the first start, or check that a rerun asks for the same study."""
    if sdir.exists():
        saved = json.loads(sdir.study_json.read_text())
        if study is not None and saved.get("fingerprint") != study.fingerprint():
            raise UserError(
                f"{sdir.path} holds a study with other settings (the study YAML, its search YAML "
                "or a protocol changed since it started). Resume it as it was with "
                f"`nas-fidelity --resume {sdir.path}`, or give this study another --name."
            )
        return sdir.read_study(), sdir.read_architectures()
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
    sdir.path.mkdir(parents=True, exist_ok=True)
    atomic_write(sdir.archs_json, json.dumps([a.to_dict() for a in archs], indent=1))
    atomic_write(
        sdir.study_json,
        json.dumps(
            {"format": FORMAT, "fingerprint": study.fingerprint(), "file": study.file, "source": _source(study)},
            indent=1,
        ),
    )
    return study, archs


def _source(study: Study) -> dict[str, Any]:
    """The study YAML with its search YAML inlined (content and path), so the study reloads from study.json
    alone, whatever happens to the search YAML file later."""
    import yaml

    data = yaml.safe_load(Path(study.file).read_text()) if study.file else {}
    data = dict(data or {})
    data["study"] = {
        **(data.get("study") or {}),
        "space": {"file": str(Path(study.experiment.file).resolve()), "yaml": study.experiment.raw},
    }
    return data


def pending(
    sdir: StudyDir, study: Study, archs: list[Architecture], max_jobs: int | None
) -> tuple[set[str], list[dict[str, Any]], int]:
    """The recorded job keys, the jobs to run now (at most ``max_jobs``) and how many are left after them."""
    records = sdir.read_records()
    done = {r["key"] for r in records}
    todo = [j for j in plan_jobs(study, archs) if j["key"] not in done]
    left_after = max(0, len(todo) - max_jobs) if max_jobs is not None else 0
    if max_jobs is not None:
        todo = todo[:max_jobs]
    return done, todo, left_after
