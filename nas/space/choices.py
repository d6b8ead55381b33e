"""The values of a ``space:`` section: one value or a list of choices (depths, widths, block letters, block
options), each checked and normalised, and the parsed forms :class:`StageChoices` and :class:`Budgets`.

The section parsers of ``nas.space.reading`` call these; ``STAGES``, ``Budgets`` and ``StageChoices`` are
re-exported there (and ``STAGES``, ``Budgets`` from ``nas.space.search_space``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError, check_keys, parse_dataclass
from nas.limits import MAX_CHOICES, int_choice_limit
from nas.model.arch import BLOCKS, BlockOptions, is_block_letter, known_blocks

STAGES = ("S1", "S2", "S3", "S4")
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(BlockOptions))
DEFAULT_BLOCKS = tuple(b for b, kind in BLOCKS.items() if kind.default_choice)


@dataclass(frozen=True)
class Budgets:
    """Optional upper limits on a candidate's cost; ``None`` means unlimited."""

    max_params: int | None = None
    max_macs: int | None = None

    def excess(self, cost: Any) -> tuple[float, float]:
        """Relative excess of ``cost`` (params, MACs) over each limit: ``value / limit - 1`` (<= 0 is within
        it; -1 for no limit): the constraints the search gives Optuna's samplers."""
        return tuple(
            -1.0 if limit is None else float(value) / float(limit) - 1.0
            for limit, value in ((self.max_params, cost.params), (self.max_macs, cost.macs))
        )

    def allows(self, cost: Any) -> bool:
        """Whether ``cost`` is within every limit."""
        return all(e <= 0 for e in self.excess(cost))

    @property
    def unlimited(self) -> bool:
        return self.max_params is None and self.max_macs is None


@dataclass(frozen=True)
class StageChoices:
    """The choices of the stem or of one stage: depths, widths and (stages only) block letters."""

    depth: tuple[int, ...]
    width: tuple[int, ...]
    block: tuple[str, ...] = DEFAULT_BLOCKS


def is_int(v: Any) -> bool:
    """Whether ``v`` is an integer (``True``/``False`` are not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def int_choices(value: Any, file: str | None, key: str, what: str) -> tuple[int, ...]:
    """A scalar, a list of choices or ``{min, max[, step]}`` -> sorted tuple of distinct positive ints."""
    allowed = "a positive integer, a non-empty list of positive integers, or {min: a, max: b, step: s}"
    if isinstance(value, Mapping):
        check_keys(value, ("min", "max", "step"), file, key)
        lo, hi, step = value.get("min"), value.get("max"), value.get("step", 1)
        for k, v in (("min", lo), ("max", hi), ("step", step)):
            if not is_int(v) or v < 1:
                raise ConfigError(file, f"{key}.{k}", f"must be a positive integer ({what})", allowed, value=v)
        if lo > hi:
            raise ConfigError(file, key, "has min > max", allowed, value=dict(value))
        if (hi - lo) // step + 1 > MAX_CHOICES:
            raise ConfigError(
                file,
                key,
                f"expands to {(hi - lo) // step + 1:,} choices",
                f"at most {MAX_CHOICES} choices per list or range (raise step, or narrow min..max)",
                value=dict(value),
            )
        _check_int_limit(hi, file, f"{key}.max")
        return tuple(range(lo, hi + 1, step))
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) > MAX_CHOICES:
        raise ConfigError(file, key, f"lists {len(items):,} choices", f"at most {MAX_CHOICES} choices per list")
    if not items:
        raise ConfigError(file, key, "is an empty list of choices", allowed, value=value)
    for i, v in enumerate(items):
        if not is_int(v) or v < 1:
            sub = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
            raise ConfigError(file, sub, f"must be a positive integer ({what})", allowed, value=v)
        _check_int_limit(v, file, f"{key}[{i}]" if isinstance(value, (list, tuple)) else key)
    return tuple(sorted(set(items)))


def _check_int_limit(v: int, file: str | None, key: str) -> None:
    """The documented maximum of a depth, width or patch size (nas.limits)."""
    limit = int_choice_limit(key[:-4] if key.endswith(".max") else key.split("[")[0])
    if limit is not None and v > limit[1]:
        raise ConfigError(file, key, "is above its sane maximum", f"at most {limit[1]:,}", value=v)


def block_choices(value: Any, file: str | None, key: str) -> tuple[str, ...]:
    """A letter or a list of letters of ``nas.model.arch.BLOCKS`` -> the distinct ones in the table's order."""
    allowed = f"a block letter or a non-empty list of them, from {known_blocks()}"
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(file, key, "is an empty list of choices", allowed, value=value)
    for v in items:
        if not is_block_letter(v):
            raise ConfigError(file, key, "has an unknown block letter", allowed, value=v)
    return tuple(b for b in BLOCKS if b in items)


def option_choices(data: Any, file: str | None, key: str) -> dict[str, tuple]:
    """Each BlockOptions field: fixed (scalar) or searchable (list); validated by ``parse_dataclass``."""
    data = check_keys(data, OPTION_NAMES, file, key)
    defaults = BlockOptions()
    out: dict[str, tuple] = {}
    for name in OPTION_NAMES:
        raw = data.get(name, getattr(defaults, name))
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items:
            raise ConfigError(
                file, f"{key}.{name}", "is an empty list of choices", "a value or a non-empty list of values", value=raw
            )
        vals = []
        for i, v in enumerate(items):
            sub = f"{key}.{name}[{i}]" if isinstance(raw, (list, tuple)) else f"{key}.{name}"
            try:
                val = getattr(parse_dataclass(BlockOptions, {name: v}, file, key), name)
            except ConfigError as err:
                raise ConfigError(file, sub, err.problem, err.allowed, value=err.value) from None
            if val not in vals:
                vals.append(val)
        out[name] = tuple(vals)
    return out
