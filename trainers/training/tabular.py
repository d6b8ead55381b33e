"""A tabulated benchmark: every candidate of a small space trained once, replayed instead of trained.

A table file (JSON, ``format: coatnas-table/2``) holds the search YAML it was built from (space and
protocol), the code version, hardware and seeds that produced it, and one entry per candidate: the raw
measurements of the proxy training (the accuracies and losses the objective is computed from), its
per-round history, the zero-cost proxies and, for a sample, the reference training.

``search.trainer: table:PATH`` in a search YAML replays a search on the table with the real driver, Optuna
and Ray: :func:`replay` reports the recorded rounds to the scheduler and returns the recorded result, with
the two axes and the score recomputed from the raw measurements under the YAML's own ``objective:``
(so gap penalty, capacity metric and weights can be explored on the table). Building one:
``nas-fidelity`` with ``architectures: all``, then ``scripts/make_table.py`` (docs/benchmark.md).

**The one reader and writer.** :func:`load_table` reads a table through :func:`nas.fsio.read_json` and
:func:`parse_table`, which validates every field into a frozen :class:`Table` of :class:`TableEntry`
(types, finiteness, ranges, required and unknown keys, the protocol against the objective, each
candidate against the table's own space); anything else is one paragraph naming the file.
:func:`dump_table` is what ``scripts/make_table.py`` writes through (validated the same way first).

**Format versions.** ``coatnas-table/2`` (written since issue 19) records, per entry, the proxy protocol
and seed it was trained with (room for several of each), and the complete objective. ``coatnas-table/1``
(the shipped ``search_spaces/benchmarks/*.json``) is read through :func:`migrate`: each entry gets the
table's one proxy seed and protocol name, and an objective recorded before ``axes`` and ``latency``
existed gets their defaults (what it meant). The files themselves are never rewritten.

This module imports neither torch nor Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import trainers.objectives.registry as obj
from nas.errors import ConfigError, UserError, parse_dataclass
from nas.fsio import Invalid, read_json
from nas.limits import RANGES, SEED_MAX, check_ranges
from nas.model.arch import Architecture
from nas.space.search_space import SearchSpace
from trainers.training.config import default_protocol, flat
from trainers.training.result import FAILED_STATUSES, TrialResult

TABLE_PREFIX = "table:"
TABLE_FORMAT = "coatnas-table/2"  # what dump_table writes
TABLE_FORMATS = ("coatnas-table/1", TABLE_FORMAT)  # what load_table reads (/1 through migrate)
STATUSES = ("ok", *FAILED_STATUSES)
REGIMES = ("generalization", "full")
FIX = (
    "Rebuild it from its study with scripts/make_table.py (docs/benchmark.md), or point search.trainer at "
    "another table, e.g. table:benchmarks/bench-cifar-v1.json."
)
# the keys of a table, and of one entry, by format 2
TABLE_KEYS = (
    "format",
    "name",
    "version",
    "created",
    "study",
    "code",
    "hardware",
    "search_yaml",
    "num_classes",
    "seeds",
    "protocol",
    "objective",
    "reference_protocol",
    "entries",
)
ENTRY_KEYS = ("id", "arch", "arch_str", "layout", "status", "reason", "metrics", "history", "seed", "proxy")
ENTRY_OPTIONAL = ("zero_cost", "reference")
# the measurements the objective is computed from (an ok entry has them all), and per round
OK_METRICS = ("gen_val_acc", "gen_train_acc", "cap_train_acc", "cap_train_loss")
OK_ROUND = ("train_acc", "train_loss", "val_acc")
# the objective keys a format-2 table records (a later field of ObjectiveConfig takes its default)
OBJECTIVE_KEYS = (
    "mode",
    "subset_fraction",
    "gap_penalty",
    "capacity_metric",
    "weight_generalization",
    "weight_capacity",
    "train_eval_limit",
    "axes",
    "latency",
)
# train:/objective: keys that do not change a recorded training (where it ran, how it is scored)
_FREE_KEYS = {
    "train.device",
    "train.precision",
    "train.data.path",
    "objective.gap_penalty",
    "objective.capacity_metric",
    "objective.weight_generalization",
    "objective.weight_capacity",
}


def is_table(trainer: object) -> bool:
    """Whether ``search.trainer`` names a table (``table:PATH``) rather than a ``module:function``: the one
    test of it, wherever a command decides."""
    return isinstance(trainer, str) and trainer.startswith(TABLE_PREFIX)


def table_path(trainer: str) -> str:
    """The PATH of ``table:PATH``."""
    return trainer[len(TABLE_PREFIX) :]


# ------------------------------------------------------------------------------------------ the records
@dataclass(frozen=True, eq=False)
class TableEntry:
    """One candidate of a table: its architecture and the recorded outcome of its proxy training (the
    protocol ``proxy`` with seed ``seed``), its zero-cost scores and reference trainings (by seed)."""

    id: str
    arch: Architecture
    status: str
    reason: str
    metrics: Mapping[str, float | None]
    history: tuple[Mapping[str, Any], ...]
    seed: int
    proxy: str
    zero_cost: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))
    reference: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def arch_str(self) -> str:
        return str(self.arch)

    @property
    def layout(self) -> str:
        return self.arch.layout_name

    @classmethod
    def from_json(cls, data: Any, where: str) -> TableEntry:
        """A format-2 entry (``where``: ``entries[3]``, for messages); :class:`Invalid` names what is wrong."""
        _keys(data, ENTRY_KEYS, ENTRY_OPTIONAL, where)
        status = _choice(data["status"], STATUSES, f"{where}.status")
        ok = status == "ok"
        ident = _text(data["id"], f"{where}.id")
        try:
            arch = Architecture.from_dict(data["arch"], None, f"{where}.arch")
        except ConfigError as err:
            raise Invalid(_plain(err)) from None
        if arch.id != ident:
            raise Invalid(f"{where}: its id {ident!r} is not the id of its architecture ({arch.id})")
        for key, want in (("arch_str", str(arch)), ("layout", arch.layout_name)):
            if data[key] != want:
                raise Invalid(f"{where}.{key} is {_short(data[key])}, but its architecture is {want!r}")
        metrics = _mapping(data["metrics"], f"{where}.metrics")
        if ok:
            missing = [k for k in OK_METRICS if k not in metrics]
            if missing:
                raise Invalid(f"{where}.metrics lacks {', '.join(missing)}, which an ok entry's objective needs")
        history = data["history"]
        if not isinstance(history, list):
            raise Invalid(f"{where}.history must be a list of rounds, got {_short(history)}")
        zero_cost = _mapping(data.get("zero_cost", {}), f"{where}.zero_cost")
        for name, v in zero_cost.items():
            if name not in obj.ZERO_COST:
                raise Invalid(f"{where}.zero_cost names {name!r}, which is not a zero-cost proxy")
            _number(v, f"{where}.zero_cost.{name}", strict=False)
        reference = _mapping(data.get("reference", {}), f"{where}.reference")
        return cls(
            id=ident,
            arch=arch,
            status=status,
            reason=_text(data["reason"], f"{where}.reason", empty=True),
            metrics=MappingProxyType({k: _metric(k, v, f"{where}.metrics.{k}", ok) for k, v in metrics.items()}),
            history=tuple(_round(r, f"{where}.history[{i}]", ok) for i, r in enumerate(history)),
            seed=_int(data["seed"], f"{where}.seed", 0, SEED_MAX),
            proxy=_text(data["proxy"], f"{where}.proxy"),
            zero_cost=MappingProxyType(dict(zero_cost)),
            reference=MappingProxyType({s: _reference(s, r, f"{where}.reference") for s, r in reference.items()}),
        )


@dataclass(frozen=True, eq=False)
class Table:
    """A loaded table: what produced it and its entries by architecture id.

    ``meta`` is the whole header (read-only; provenance: ``created``, ``study``, ``code``, ``hardware``,
    ``reference_protocol``); ``migrated_from`` the format it was read in when that was an older one.
    """

    path: str
    name: str
    version: int
    num_classes: int
    space: SearchSpace
    search_yaml: Mapping[str, Any]
    protocol: Mapping[str, Any]
    objective: obj.ObjectiveConfig
    seeds: Mapping[str, tuple[int, ...]]
    meta: Mapping[str, Any] = field(repr=False)
    entries: Mapping[str, TableEntry] = field(repr=False)
    migrated_from: str | None = None

    def get(self, arch_id: str) -> TableEntry | None:
        return self.entries.get(arch_id)

    def best(self, key: str = "score", cfg: obj.ObjectiveConfig | None = None) -> float:
        """The best ``generalization``/``capacity``/``score`` of the ok entries under ``cfg`` (default:
        the objective the table was built with)."""
        return max(axes(e, cfg or self.objective, self.num_classes)[key] for e in self.entries.values() if e.ok)


# --------------------------------------------------------------------------------------------- reading
_CACHE: dict[tuple[str, str], Table] = {}


def load_table(path: str | os.PathLike) -> Table:
    """Read and validate a table file (cached per process by path and content: a worker replays many
    trials from one table). A file that is missing, damaged, foreign or of an unknown format is a
    :class:`~nas.errors.UserError`: one paragraph naming the file, what is wrong and what to do."""
    p = Path(path)
    key = None
    try:
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 28:  # else read_json says why
            key = (os.path.realpath(p), hashlib.sha256(p.read_bytes()).hexdigest())
    except OSError:
        pass  # read_json says why
    if key is not None and key in _CACHE:
        return _CACHE[key]
    table = read_json(p, lambda data: parse_table(data, str(p)), what="The table", fix=FIX)
    if key is not None:
        _CACHE.clear()
        _CACHE[key] = table
    return table


def migrate(data: Any) -> tuple[dict[str, Any], str | None]:
    """A decoded table in the current format, and the format it was migrated from (``None``: it already
    was current). :class:`Invalid` for a JSON value that is no table or of an unknown format."""
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string"}.get(type(data), f"a {type(data).__name__}")
        raise Invalid(f"it is {kind} in JSON, not a table (an object whose `format` is {TABLE_FORMAT})")
    fmt = data.get("format")
    if fmt == TABLE_FORMAT:
        return data, None
    if fmt != "coatnas-table/1":
        shown = "no `format` key" if "format" not in data else f"the `format` {_short(fmt)}"
        raise Invalid(f"it has {shown}, not one of {', '.join(TABLE_FORMATS)}, so it is not a coatnas table")
    seeds, study, entries = data.get("seeds"), data.get("study"), data.get("entries")
    proxy_seeds = seeds.get("proxy") if isinstance(seeds, dict) else None
    if not isinstance(proxy_seeds, list) or len(proxy_seeds) != 1:
        raise Invalid(f"`seeds.proxy` must list the one seed of a format-1 table, got {_short(proxy_seeds)}")
    proxy = study.get("proxy") if isinstance(study, dict) else None
    if not isinstance(entries, list):
        raise Invalid(f"`entries` must be a list, got {_short(entries)}")
    for i, e in enumerate(entries):
        if isinstance(e, dict) and ("seed" in e or "proxy" in e):
            raise Invalid(f"entries[{i}] has a `seed` or `proxy` key, which a format-1 entry does not have")
    out = {
        **data,
        "format": TABLE_FORMAT,
        "entries": [{**e, "seed": proxy_seeds[0], "proxy": proxy} if isinstance(e, dict) else e for e in entries],
    }
    objective = data.get("objective")
    if isinstance(objective, dict):  # recorded before objective.axes and objective.latency existed
        latency = dataclasses.asdict(obj.LatencyConfig())
        out["objective"] = {"axes": list(obj.DEFAULT_AXES), "latency": latency, **objective}
    return out, "coatnas-table/1"


def parse_table(data: Any, path: str = "") -> Table:
    """The :class:`Table` of a decoded table file (any format of :data:`TABLE_FORMATS`); :class:`Invalid`
    names the first thing wrong."""
    data, migrated_from = migrate(data)
    _keys(data, TABLE_KEYS, (), "the table")
    version = _int(data["version"], "version", 1, 1_000_000)
    name = _text(data["name"], "name")
    _text(data["created"], "created")
    for key in ("study", "code", "hardware"):
        _scalars(_mapping(data[key], key), key)
    lo, hi = RANGES["num_classes"]
    num_classes = _int(data["num_classes"], "num_classes", max(2, int(lo)), int(hi))
    seeds = _mapping(data["seeds"], "seeds")
    _keys(seeds, ("proxy", "reference"), (), "seeds")
    seed_lists = {k: _seed_list(seeds[k], f"seeds.{k}", empty=k == "reference") for k in ("proxy", "reference")}
    objective = _objective(data["objective"])
    protocol = _protocol(data["protocol"], "protocol", objective)
    _protocol(data["reference_protocol"], "reference_protocol", None)
    search_yaml = _mapping(data["search_yaml"], "search_yaml")
    _keys(search_yaml, ("space",), ("train", "objective"), "search_yaml")
    try:
        space = SearchSpace.from_dict(search_yaml["space"], None)
    except ConfigError as err:
        raise Invalid(f"its search_yaml.space is not a valid space: {_plain(err)}") from None
    entries = _entries(data["entries"], space, seed_lists["proxy"])
    return Table(
        path=path,
        name=name,
        version=version,
        num_classes=num_classes,
        space=space,
        search_yaml=_frozen(search_yaml),
        protocol=_frozen(protocol),
        objective=objective,
        seeds=MappingProxyType(seed_lists),
        meta=_frozen({k: v for k, v in data.items() if k != "entries"}),
        entries=MappingProxyType(entries),
        migrated_from=migrated_from,
    )


def _entries(items: Any, space: SearchSpace, proxy_seeds: tuple[int, ...]) -> dict[str, TableEntry]:
    """Every entry, each a candidate of the table's own space, once; with no budgets, all of them."""
    if not isinstance(items, list) or not items:
        raise Invalid(f"`entries` must be a non-empty list of candidates, got {_short(items)}")
    out: dict[str, TableEntry] = {}
    for i, item in enumerate(items):
        where = f"entries[{i}]"
        e = TableEntry.from_json(item, where)
        if e.id in out:
            raise Invalid(f"{where} repeats the candidate {e.id} ({e.arch})")
        why = space.why_invalid(e.arch)
        if why is not None:
            raise Invalid(f"{where} ({e.arch}) is not a candidate of the table's own space: {why}")
        if e.seed not in proxy_seeds:
            raise Invalid(f"{where}.seed is {e.seed}, which is not among seeds.proxy {list(proxy_seeds)}")
        out[e.id] = e
    b = space.budgets
    if b.max_params is None and b.max_macs is None and len(out) != space.size():
        raise Invalid(
            f"it holds {len(out)} candidates, but its space has {space.size()} and no budgets: a table "
            "records every candidate"
        )
    return out


def _objective(data: Any) -> obj.ObjectiveConfig:
    data = _mapping(data, "objective")
    missing = [k for k in OBJECTIVE_KEYS if k not in data]
    if missing:
        raise Invalid(f"`objective` lacks {', '.join(missing)}")
    try:
        objective = parse_dataclass(obj.ObjectiveConfig, data, None, "objective")
        check_ranges(objective, "objective", None)
        return objective
    except ConfigError as err:
        raise Invalid(_plain(err)) from None


def _protocol(data: Any, where: str, objective: obj.ObjectiveConfig | None) -> dict[str, Any]:
    """A flat protocol (``train.epochs``: 5, ...) of scalars; the recorded trainer is not itself a table;
    the ``objective.*`` keys agree with ``objective``."""
    data = _mapping(data, where)
    for k, v in data.items():
        if not k.startswith(("train.", "objective.", "search.")):
            raise Invalid(f"{where} has the key {k!r}; a protocol has train.*, objective.* and search.* keys")
        items = v if isinstance(v, list) else [v]
        if any(not _scalar(x) for x in items):
            raise Invalid(f"{where}.{k} must be a number, text, true/false or null, got {_short(v)}")
    trainer = data.get("search.trainer")
    if not isinstance(trainer, str) or not trainer or is_table(trainer):
        raise Invalid(f"{where}.search.trainer must name the trainer the table recorded, got {_short(trainer)}")
    if objective is not None:
        recorded = flat(dataclasses.asdict(objective), "objective")
        for k, v in data.items():
            if k in recorded and recorded[k] != v:
                raise Invalid(f"{where}.{k} is {_short(v)}, but the table's objective says {_short(recorded[k])}")
    return data


def _round(data: Any, where: str, ok: bool) -> Mapping[str, Any]:
    """One recorded round: its regime and measurements (an ok entry's finite and in range)."""
    data = _mapping(data, where)
    out: dict[str, Any] = {"regime": _choice(data.get("regime"), REGIMES, f"{where}.regime")}
    if ok:
        missing = [k for k in OK_ROUND if k not in data]
        if missing:
            raise Invalid(f"{where} lacks {', '.join(missing)}, which a replayed round reports")
    for k, v in data.items():
        if k != "regime":
            out[k] = _metric(k, v, f"{where}.{k}", ok)
    return MappingProxyType(out)


def _reference(seed: str, data: Any, where: str) -> Mapping[str, Any]:
    where = f"{where}.{seed}"
    if not seed.isdigit():
        raise Invalid(f"{where}: a reference is keyed by its seed (digits), not {seed!r}")
    data = _mapping(data, where)
    status = _choice(data.get("status"), STATUSES, f"{where}.status")
    out: dict[str, Any] = {"status": status}
    for k, v in data.items():
        if k != "status":
            out[k] = None if v is None else _metric(k, v, f"{where}.{k}", status == "ok")
    return MappingProxyType(out)


# ------------------------------------------------------------------------------------------ checks
def _metric(key: str, v: Any, where: str, strict: bool) -> float | None:
    """A measurement: in an ok record a finite number in its range (accuracies and axes in [0, 1],
    losses, counts and seconds >= 0); in a failed one any number or null."""
    if key.endswith("_acc") or key in ("generalization", "capacity", "score"):
        lo, hi = 0.0, 1.0
    elif key == "gen_gap":
        lo, hi = -1.0, 1.0
    else:
        lo, hi = 0.0, math.inf
    return _number(v, where, lo, hi, strict=strict)


def _number(v: Any, where: str, lo: float = -math.inf, hi: float = math.inf, *, strict: bool) -> float | None:
    if v is None and not strict:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Invalid(f"{where} must be a number, got {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise Invalid(f"{where} is too large for a number, got {_short(v)}") from None
    if strict and not math.isfinite(f):
        raise Invalid(f"{where} must be finite in an ok record, got {v}")
    if strict and not lo <= f <= hi:
        raise Invalid(f"{where} is {v}, outside [{lo:g}, {hi:g}]")
    return v if isinstance(v, int) else f  # a count stays an integer


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise Invalid(f"{where} must be an integer from {lo} to {hi}, got {_short(v)}")
    return v


def _seed_list(v: Any, where: str, *, empty: bool) -> tuple[int, ...]:
    if not isinstance(v, list) or (not v and not empty):
        raise Invalid(f"{where} must be a {'' if empty else 'non-empty '}list of seeds, got {_short(v)}")
    return tuple(_int(s, f"{where}[{i}]", 0, SEED_MAX) for i, s in enumerate(v))


def _text(v: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(v, str) or (not v and not empty):
        raise Invalid(f"{where} must be {'a' if empty else 'a non-empty'} text, got {_short(v)}")
    return v


def _choice(v: Any, allowed: tuple[str, ...], where: str) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise Invalid(f"{where} is {_short(v)}, not one of {', '.join(allowed)}")
    return v


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise Invalid(f"{where} must be a JSON object, got {_short(v)}")
    return v


def _keys(data: Any, required: tuple[str, ...], optional: tuple[str, ...], where: str) -> None:
    data = _mapping(data, where)
    missing = [k for k in required if k not in data]
    if missing:
        raise Invalid(f"{where} lacks the key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    unknown = [k for k in data if k not in required and k not in optional]
    if unknown:
        raise Invalid(f"{where} has the unknown key {unknown[0]!r}")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def _scalars(data: dict[str, Any], where: str) -> None:
    for k, v in data.items():
        if not _scalar(v):
            raise Invalid(f"{where}.{k} must be a number, text, true/false or null, got {_short(v)}")


def _frozen(v: Any) -> Any:
    """A decoded JSON value, read-only (objects as mappings, lists as tuples)."""
    if isinstance(v, dict):
        return MappingProxyType({k: _frozen(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    return v


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(err: ConfigError) -> str:
    return str(err).rstrip(".")


# --------------------------------------------------------------------------------------------- writing
def _no_nan(v: Any) -> Any:
    """JSON has no NaN: an undefined measurement (a proxy of a constant Jacobian) is written as null."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    return v


def dump_table(table: dict[str, Any]) -> str:
    """The text of ``table`` (a decoded table of any format of :data:`TABLE_FORMATS`, migrated) in the
    current format, one entry per line so diffs stay readable; validated by :func:`parse_table` first: a
    :class:`~nas.errors.UserError` says what would make it unreadable."""
    try:
        table, _ = migrate(_no_nan(table))
        parse_table(json.loads(json.dumps(table)))
    except Invalid as err:
        raise UserError(f"The table would not be readable ({err}); nothing was written.") from None
    entries = table.pop("entries")
    head = json.dumps(table, indent=1)[:-2]
    body = ",\n".join(json.dumps(e, separators=(",", ":")) for e in entries)
    return f'{head},\n "entries": [\n{body}\n]\n}}\n'


# ---------------------------------------------------------------------------------------------- replay
def protocol_mismatch(table: Table, protocol: dict[str, Any]) -> list[str]:
    """Differences between a run's flat protocol (``nas.search.config.protocol_of``) and the table's, except
    the keys that do not change a recorded training (device, precision, data path, and the objective's
    scoring: gap penalty, capacity metric and weights are recomputed)."""
    rec, defaults = table.protocol, default_protocol()  # a key the table lacks meant its default
    keys = {
        k
        for k in set(rec) | set(protocol)
        if k.startswith(("train.", "objective.")) and k not in _FREE_KEYS and k != "train.data.files"
    }
    return [
        f"{k}: table {rec.get(k, '(none)')!r}, YAML {protocol.get(k, '(none)')!r}"
        for k in sorted(keys)
        if _plain_json(rec.get(k, defaults.get(k))) != _plain_json(protocol.get(k))
    ]


def _plain_json(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def axes(entry: TableEntry, cfg: obj.ObjectiveConfig, num_classes: int) -> dict[str, float]:
    """generalization, capacity and score of an ok entry, from its raw measurements under ``cfg``."""
    m = entry.metrics
    g = obj.generalization(m["gen_val_acc"], m["gen_train_acc"], cfg)
    c = obj.capacity(m["cap_train_acc"], m["cap_train_loss"], num_classes, cfg)
    return {"generalization": g, "capacity": c, "score": obj.score(g, c, cfg)}


def _rounds(entry: TableEntry, cfg: obj.ObjectiveConfig, num_classes: int) -> list[dict[str, Any]]:
    """The recorded per-round history with the running axes recomputed as the trainer computes them."""
    out, gen = [], None
    for row in entry.history:
        a = obj.round_axes(row, gen, cfg, num_classes)
        if row["regime"] == "generalization":
            gen = a["generalization"]
        out.append({**row, **a})
    return out


def replay(
    arch: Any,
    table: Table,
    objective: obj.ObjectiveConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrialResult:
    """The recorded outcome of ``arch`` (an :class:`~nas.model.arch.Architecture`): its rounds reported to
    ``on_epoch`` as a training would report them (a scheduler may stop it), then its result. The metric
    ``table_train_s`` is the recorded training's cost, so a replayed search can count the compute it
    would have spent."""
    entry = table.get(arch.id)
    if entry is None:
        return TrialResult.failed("error", f"{arch} (id {arch.id}) is not in the table {table.path}")
    m = entry.metrics

    def num(key: str, default: float) -> float:
        v = m.get(key)
        return default if v is None else float(v)

    base = {"params": num("params", 0.0), "macs": num("macs", 0.0), "table_train_s": num("wall_s", math.nan)}
    if not entry.ok:
        return TrialResult(status=entry.status, reason=entry.reason, metrics=base)
    k = table.num_classes
    rounds = _rounds(entry, objective, k)
    for i, row in enumerate(rounds, start=1):
        if on_epoch is not None:
            on_epoch(
                i,
                {
                    **{k2: float(v) for k2, v in row.items() if isinstance(v, (int, float))},
                    "epoch_total": float(i),
                    "rounds_total": float(len(rounds)),
                },
            )
    a = axes(entry, objective, k)
    metrics = {
        **{k2: float(v) for k2, v in m.items() if isinstance(v, (int, float))},
        **base,
        **a,
        "num_classes": float(k),
    }
    return TrialResult(status="ok", metrics=metrics, history=rounds, **a)
