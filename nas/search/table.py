"""``search.trainer: table:PATH``: check that a tabulated benchmark can stand in for the trainings of a
search YAML (same space, same protocol) before any worker starts. The replay itself is
``trainers.training.tabular.replay``, called by the trial worker."""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path

from nas.errors import ConfigError
from nas.search.config import Experiment, protocol_of

__all__ = ["check_table", "resolve_table"]


def resolve_table(path: str, file: str | None) -> Path | None:
    """The table file: ``path`` as given (relative to the current folder), next to the YAML ``file``, or
    bundled in the ``search_spaces`` package; ``None`` when none exists."""
    cands = [Path(path).expanduser()]
    if file is not None and not Path(path).is_absolute():
        cands.append(Path(file).parent / path)
    cands.append(Path(str(importlib.resources.files("search_spaces"))) / path)
    return next((c.absolute() for c in cands if c.is_file()), None)


def check_table(exp: Experiment) -> Experiment:
    """``exp`` with ``search.trainer`` pointing at the table's absolute path and its number of classes;
    :class:`ConfigError` when the file is missing or not a table, or when its space or protocol differ
    from the YAML's (a replay would then answer another question than the search asks)."""
    from trainers.training.tabular import TABLE_PREFIX, protocol_mismatch

    file = exp.file
    path, table = _read_table(exp)
    _check_space(exp, table, path)
    _check_replayable(exp)
    replay = dataclasses.replace(
        exp, search=dataclasses.replace(exp.search, trainer=f"{TABLE_PREFIX}{path}"), classes=table.num_classes
    )
    diff = protocol_mismatch(table, protocol_of(replay))
    if diff:
        raise ConfigError(
            file,
            "train",
            f"differs from the protocol the table {path.name} was trained with "
            f"({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''}), so a replay would not be "
            "what this YAML asks for",
            "the table's train: section and objective mode, "
            "subset_fraction and train_eval_limit (gap_penalty, capacity_metric and the weights "
            "may differ: they are recomputed from the recorded measurements)",
        )
    return replay


def _read_table(exp: Experiment):
    """(absolute path, loaded table) of the table ``search.trainer`` names."""
    from trainers.training.tabular import load_table, table_path

    file, key = exp.file, "search.trainer"
    given = table_path(exp.search.trainer)
    path = resolve_table(given, file)
    if path is None:
        raise ConfigError(
            file,
            key,
            f"names the table {given!r}, which is neither a file (relative to the "
            "current folder or to this YAML) nor bundled",
            "table:PATH to a table file written by scripts/make_table.py, e.g. table:benchmarks/bench-cifar-v1.json",
            exp.search.trainer,
        )
    try:
        table = load_table(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            file,
            key,
            f"names {path}, which could not be read as a table ({err})",
            "a table file written by scripts/make_table.py",
            exp.search.trainer,
        ) from None
    return path, table


def _check_space(exp: Experiment, table, path: Path) -> None:
    """The YAML's space must be the table's (else most candidates would have no recorded training)."""
    from nas.space.search_space import SearchSpace

    recorded = SearchSpace.from_dict(table.search_yaml["space"], file=str(path))
    if recorded != exp.space:
        diff = "; ".join(recorded.diff(exp.space)[:5])
        raise ConfigError(
            exp.file,
            "space",
            f"differs from the space of the table {path} ({diff}), so most candidates would have no recorded training",
            "the table's own space (copy its `space:` section), or a real trainer in search.trainer",
        )


def _check_replayable(exp: Experiment) -> None:
    """Nothing the YAML asks for may need the data or a built model (a replay has neither)."""
    file = exp.file
    if exp.search.prescreen.proxy is not None:
        raise ConfigError(
            file,
            "search.prescreen.proxy",
            "needs the training data, which a replay on a table does not load",
            "null with search.trainer: table:...",
            exp.search.prescreen.proxy,
        )
    from trainers.objectives.registry import measured_objectives

    measured = [o.name for o in measured_objectives(exp.objective)]
    if measured:
        raise ConfigError(
            file,
            "objective.axes",
            f"asks for {', '.join(measured)}, which a worker measures on a "
            "built model, and a replay on a table builds none",
            "axes the table records (generalization, capacity) and no objective budget with search.trainer: table:...",
            list(exp.objective.axes),
        )
