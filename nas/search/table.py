"""``search.trainer: table:PATH``: check that a tabulated benchmark can stand in for the trainings of a
search YAML (same space, same protocol) before any worker starts. The replay itself is
``trainers.training.tabular.replay``, called by the trial worker.

``nas.search.config`` calls these checks while it validates a YAML (``_on_table``); they take the parts
of the experiment they check, so this module does not import the config layer (no import circle).
Every refusal is a :class:`~nas.errors.ConfigError` naming the YAML, the key and the table file.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from nas.errors import ConfigError, UserError
from trainers.objectives.registry import measured_objectives
from trainers.training.tabular import TABLE_FORMATS, Table, load_table, protocol_mismatch, table_path

_KEY = "search.trainer"
_ALLOWED = (
    "table:PATH to a table file written by scripts/make_table.py (format "
    f"{' or '.join(TABLE_FORMATS)}), e.g. table:benchmarks/bench-cifar-v1.json"
)


def resolve_table(path: str, file: str | None) -> Path | None:
    """The table file: ``path`` as given (relative to the current folder), next to the YAML ``file``, or
    bundled in the ``search_spaces`` package; the first regular file of these, else the first thing that
    exists there (a folder, a device: refused by :func:`read_table`, naming it), else ``None``."""
    given = Path(path).expanduser()
    cands = [given]
    if file is not None and not given.is_absolute():
        cands.append(Path(file).parent / given)
    if not given.is_absolute():
        cands.append(Path(str(importlib.resources.files("search_spaces"))) / given)
    found = []
    for c in cands:
        try:
            if c.is_file():
                return c.absolute()
            if c.exists():
                found.append(c.absolute())
        except (OSError, ValueError):  # a name too long, a NUL byte: nothing there
            continue
    return found[0] if found else None


def read_table(trainer: str, file: str | None) -> tuple[Path, Table]:
    """(absolute path, loaded table) of the table ``search.trainer`` (``trainer``) names in the YAML
    ``file``; a :class:`ConfigError` naming both when it is missing, unreadable, damaged or foreign."""
    given = table_path(trainer)
    path = resolve_table(given, file) if given.strip() else None
    if path is None:
        raise ConfigError(
            file,
            _KEY,
            f"names the table {given!r}, which is neither a file (relative to the current folder or to this "
            "YAML) nor bundled",
            _ALLOWED,
            trainer,
        )
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, a FIFO or a socket)"
        raise ConfigError(file, _KEY, f"names {path}, which is {kind}, not a table file", _ALLOWED, trainer)
    try:
        table = load_table(path)
    except UserError as err:  # one paragraph naming the table file and what is wrong with it
        why = str(err)
        raise ConfigError(file, _KEY, f"cannot be replayed: {why[:1].lower()}{why[1:]}") from None
    return path, table


def check_space(table: Table, path: Path, space: Any, file: str | None) -> None:
    """The YAML's space must be the table's (else most candidates would have no recorded training)."""
    if table.space != space:
        diff = "; ".join(table.space.diff(space)[:5])
        raise ConfigError(
            file,
            "space",
            f"differs from the space of the table {path} ({diff}), so most candidates would have no recorded training",
            "the table's own space (copy its `search_yaml.space` section), or a real trainer in search.trainer",
        )


def check_replayable(search: Any, objective: Any, file: str | None) -> None:
    """Nothing the YAML asks for may need the data or a built model (a replay has neither)."""
    if search.prescreen.proxy is not None:
        raise ConfigError(
            file,
            "search.prescreen.proxy",
            "needs the training data, which a replay on a table does not load",
            "null with search.trainer: table:...",
            search.prescreen.proxy,
        )
    measured = [o.name for o in measured_objectives(objective)]
    if measured:
        raise ConfigError(
            file,
            "objective.axes",
            f"asks for {', '.join(measured)}, which a worker measures on a "
            "built model, and a replay on a table builds none",
            "axes the table records (generalization, capacity) and no objective budget with search.trainer: table:...",
            list(objective.axes),
        )


def check_protocol(table: Table, path: Path, protocol: dict[str, Any], file: str | None) -> None:
    """The run's flat protocol must be the table's (except the scoring, which is recomputed)."""
    diff = protocol_mismatch(table, protocol)
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


def check_finalists_data(table: Table, path: Path, data: Any, files: str, chosen: bool, file: str | None) -> None:
    """A replay's finalists are verified by training on the YAML's ``train.data`` (``data``, whose files are
    ``files``: ``nas.search.config.data_identity``): it must be the data the table was built on (the files'
    identity the table records), else the verification would train on other data than the table scored.
    ``chosen``: ``finalists.train.data`` names the data explicitly (the user's choice: allowed)."""
    built_on = table.protocol.get("train.data.files")
    if chosen or built_on is None or files == built_on:  # a table that does not record it cannot be compared
        return
    recorded = ((table.search_yaml.get("train") or {}).get("data") or {}).get("path")
    where = f"{data.path}: {files}" if getattr(data, "path", None) else f"the built-in `{data.name}` source"
    raise ConfigError(
        file,
        "train.data",
        f"is not the data the table {path} was built on ({built_on}"
        + (f", from {recorded}" if recorded else "")
        + f"), but {where}; the finalists (`finalists:`) are verified by training on `train.data`, so they "
        "would be trained on other data than the table scored",
        "the table's data (its `search_yaml.train.data`), or an explicit `finalists.train.data` to verify the "
        "finalists on other data on purpose",
    )
