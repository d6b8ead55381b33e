"""Reading a search YAML's ``space:`` section: the file, its keys and values, and the layouts it allows.

:func:`parse_space` validates the section once, at the edge, and returns the arguments of
``nas.space.SearchSpace``; every mistake is a :class:`ConfigError` naming the file, the key and what is allowed.
Block letters and their properties come from ``nas.arch.BLOCKS``. ``docs/space.md`` is the YAML reference.
Everything public here is re-exported from ``nas.space``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .arch import BLOCKS, VIT_BLOCK, VIT_REL, BlockOptions, check_layout, is_block_letter, known_blocks
from .errors import ConfigError, UserError, check_keys, parse_dataclass, yaml_problem
from .limits import MAX_CHOICES, check_value, int_choice_limit
from .yamlio import load_yaml_file

__all__ = [
    "TOP_LEVEL_KEYS",
    "SPACE_KEYS",
    "STAGES",
    "Budgets",
    "StageChoices",
    "bundled_spaces",
    "resolve_space_path",
    "load_yaml",
    "parse_space",
]

TOP_LEVEL_KEYS = ("space", "train", "objective", "search")
SPACE_KEYS = ("input", "stem", "stages", "rules", "vit_rel", "blocks", "budgets")
STAGES = ("S1", "S2", "S3", "S4")
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(BlockOptions))
DEFAULT_BLOCKS = tuple(b for b, kind in BLOCKS.items() if kind.default_choice)


# ------------------------------------------------------------------------------------------- files
def bundled_spaces() -> list[str]:
    """Names of the YAML files shipped in the ``search_spaces`` package."""
    root = importlib.resources.files("search_spaces")
    return sorted(p.name for p in root.iterdir() if p.name.endswith((".yaml", ".yml")))


def resolve_space_path(path_or_name: str | Path) -> Path:
    """The file itself if it exists (relative to cwd), else the bundled ``search_spaces/<name>``."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    root = importlib.resources.files("search_spaces")
    name = str(path_or_name)
    for cand in (name, name + ".yaml", name + ".yml"):
        if "/" in cand or "\\" in cand:
            continue
        res = root / cand
        if res.is_file():
            return Path(str(res))
    if path.is_dir():
        raise UserError(
            f"Search-space file {str(path_or_name)!r} is a folder, not a YAML file. Pass a search "
            f"YAML file (see docs/space.md) or a bundled space: {', '.join(bundled_spaces())}."
        )
    raise UserError(
        f"Search-space file {name!r} was not found: it is neither an existing file (relative to "
        f"{Path.cwd()}) nor a bundled space. Bundled spaces: {', '.join(bundled_spaces())}."
    )


def load_yaml(path_or_name: str | Path) -> tuple[Path, dict]:
    """Resolve and parse a search YAML; check its top-level keys (``space`` is required)."""
    path = resolve_space_path(path_or_name)
    try:
        data = load_yaml_file(path)
    except yaml.YAMLError as err:
        raise ConfigError(
            str(path),
            "<top level>",
            f"is not valid YAML {yaml_problem(err)}",
            "a YAML mapping with keys " + ", ".join(TOP_LEVEL_KEYS),
        ) from None
    except OSError as err:
        raise UserError(
            f"Cannot read search-space file {path}: {err.strerror}. Make it readable by this user "
            f"(e.g. `chmod u+r {path}`) or pass another search YAML."
        ) from None
    if data is None:
        data = {}
    check_keys(data, TOP_LEVEL_KEYS, str(path), "")
    if "space" not in data:
        raise ConfigError(
            str(path),
            "space",
            "is missing",
            "a mapping with input, stem, stages, rules, vit_rel, blocks, budgets (see docs/space.md)",
        )
    return path, dict(data)


# ---------------------------------------------------------------------------------- parsed values
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


# ---------------------------------------------------------------------------------- the section
def parse_space(data: Any, file: str | None = None) -> dict[str, Any]:
    """Validate the ``space:`` section (``data`` is its mapping): the keyword arguments of ``SearchSpace``."""
    f = str(file) if file is not None else None
    if data is None:
        raise ConfigError(f, "space", "is empty", f"a mapping with {', '.join(SPACE_KEYS)}")
    data = check_keys(data, SPACE_KEYS, f, "space")
    image_size, in_chans = _parse_input(data.get("input"), f)
    stem, stem_stride = _parse_stem(data.get("stem"), f)
    stages = _parse_stages(data.get("stages"), f)
    flags, fixed = _parse_rules(data.get("rules"), f)
    include_vit, patch_sizes = _parse_vit_rel(data.get("vit_rel"), fixed, image_size, f)
    options = _option_choices(data.get("blocks"), f, "space.blocks")
    budgets = _parse_budgets(data.get("budgets"), f)
    _check_head_dims(stages, options["head_dim"], include_vit or (fixed is not None and VIT_REL in fixed), f)
    layouts = _valid_layouts(stages, fixed, flags["monotone"], f, include_vit)
    return dict(
        image_size=image_size,
        in_chans=in_chans,
        stem=stem,
        stages=stages,
        layouts=tuple(layouts),
        patch_sizes=patch_sizes,
        options=options,
        monotone=flags["monotone"],
        non_decreasing_widths=flags["non_decreasing_widths"],
        budgets=budgets,
        file=f,
        stem_stride=stem_stride,
    )


def _parse_input(data: Any, f: str | None) -> tuple[int, int]:
    inp = check_keys(data, ("image_size", "channels"), f, "space.input")
    image_size, in_chans = inp.get("image_size", 32), inp.get("channels", 3)
    if not _is_int(image_size) or image_size < 32:
        raise ConfigError(
            f,
            "space.input.image_size",
            "is too small for the stem and four stages, which halve it 5 times (32x) in total",
            "an integer >= 32",
            value=image_size,
        )
    if not _is_int(in_chans) or in_chans < 1:
        raise ConfigError(
            f, "space.input.channels", "must be a positive integer", "e.g. 1 (grey) or 3 (RGB)", value=in_chans
        )
    check_value(image_size, "space.input.image_size", f)
    check_value(in_chans, "space.input.channels", f)
    return image_size, in_chans


def _parse_stem(data: Any, f: str | None) -> tuple[StageChoices, int]:
    stem_d = check_keys(data, ("width", "depth", "stride"), f, "space.stem")
    if "width" not in stem_d:
        raise ConfigError(f, "space.stem.width", "is missing", "a positive integer or a list of them")
    stem_stride = stem_d.get("stride", 2)
    if isinstance(stem_stride, bool) or stem_stride not in (1, 2):
        raise ConfigError(
            f,
            "space.stem.stride",
            "must be 1 or 2 (one value per space): 2 is the paper's "
            "stem (32x downsampling in all), 1 keeps twice the resolution in every stage "
            "(16x), for 32-64 px images",
            "1, 2",
            value=stem_stride,
        )
    stem = StageChoices(
        depth=_int_choices(stem_d.get("depth", 2), f, "space.stem.depth", "number of 3x3 convs"),
        width=_int_choices(stem_d["width"], f, "space.stem.width", "channels"),
    )
    return stem, stem_stride


def _parse_stages(data: Any, f: str | None) -> dict[str, StageChoices]:
    stages_d = check_keys(data, STAGES, f, "space.stages")
    stages = {}
    for s in STAGES:
        key = f"space.stages.{s}"
        if s not in stages_d:
            raise ConfigError(f, key, "is missing", "a mapping with block, depth, width; all of S1-S4 are needed")
        sd = check_keys(stages_d[s], ("block", "depth", "width"), f, key)
        for k in ("depth", "width"):
            if k not in sd:
                raise ConfigError(f, f"{key}.{k}", "is missing", "a positive integer or a list of them")
        stages[s] = StageChoices(
            block=_block_choices(sd.get("block", list(DEFAULT_BLOCKS)), f, f"{key}.block"),
            depth=_int_choices(sd["depth"], f, f"{key}.depth", "number of blocks"),
            width=_int_choices(sd["width"], f, f"{key}.width", "channels"),
        )
    return stages


def _parse_rules(data: Any, f: str | None) -> tuple[dict[str, bool], list[str] | None]:
    """The two flags and the fixed layout list (``None`` when not given), each layout checked alone."""
    rules = check_keys(data, ("monotone", "non_decreasing_widths", "layouts"), f, "space.rules")
    flags = {}
    for k, default in (("monotone", True), ("non_decreasing_widths", True)):
        v = rules.get(k, default)
        if not isinstance(v, bool):
            raise ConfigError(f, f"space.rules.{k}", "must be true or false", "true, false", value=v)
        flags[k] = v
    fixed = rules.get("layouts")
    if fixed is not None:
        if not isinstance(fixed, (list, tuple)) or not fixed:
            raise ConfigError(
                f,
                "space.rules.layouts",
                "must be a non-empty list of layouts or null",
                f"e.g. [C-C-T-T, {VIT_REL}]",
                value=fixed,
            )
        fixed = [_parse_layout(t, f, f"space.rules.layouts[{i}]") for i, t in enumerate(fixed)]
        fixed = list(dict.fromkeys(fixed))
    return flags, fixed


def _parse_vit_rel(data: Any, fixed: list[str] | None, image_size: int, f: str | None) -> tuple[bool, tuple[int, ...]]:
    vit = check_keys(data, ("include", "patch_size"), f, "space.vit_rel")
    include_vit = vit.get("include", False)
    if not isinstance(include_vit, bool):
        raise ConfigError(f, "space.vit_rel.include", "must be true or false", "true, false", value=include_vit)
    if include_vit and fixed is not None:
        raise ConfigError(
            f,
            "space.vit_rel.include",
            "cannot be used together with space.rules.layouts",
            f"list '{VIT_REL}' in space.rules.layouts instead",
            value=include_vit,
        )
    patch_sizes = _int_choices(vit.get("patch_size", 4), f, "space.vit_rel.patch_size", "pixels")
    for p in patch_sizes:
        if image_size % p:
            raise ConfigError(
                f,
                "space.vit_rel.patch_size",
                f"does not divide space.input.image_size ({image_size})",
                f"a divisor of {image_size}",
                value=p,
            )
    return include_vit, patch_sizes


def _parse_budgets(data: Any, f: str | None) -> Budgets:
    bud = check_keys(data, ("max_params", "max_macs"), f, "space.budgets")
    limits = {}
    for k in ("max_params", "max_macs"):
        v = bud.get(k)
        if isinstance(v, str):  # YAML 1.1 reads 5.0e6 (no sign in the exponent) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v) or v > 1e18
        ):
            raise ConfigError(
                f,
                f"space.budgets.{k}",
                "must be a positive number or null",
                "a number from 1 to 1e18, e.g. 5.0e6, or null",
                value=v,
            )
        limits[k] = None if v is None else int(v)
    return Budgets(**limits)


def _check_head_dims(stages: Mapping[str, StageChoices], head_dims: tuple[int, ...], vit: bool, f: str | None) -> None:
    """Stages where an attention block is possible need widths divisible by every head_dim choice."""
    for s in STAGES:
        letters = [b for b in stages[s].block if BLOCKS[b].attention] or ([VIT_BLOCK] if vit else [])
        if not letters:
            continue
        for hd in head_dims:
            for w in stages[s].width:
                if w % hd:
                    raise ConfigError(
                        f,
                        f"space.stages.{s}.width",
                        f"has a width not divisible by head_dim {hd}, "
                        f"but a {'/'.join(letters)} block is possible in {s}",
                        "multiples of every space.blocks.head_dim choice",
                        value=w,
                    )


# --------------------------------------------------------------------------------------- choices
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_choices(value: Any, file: str | None, key: str, what: str) -> tuple[int, ...]:
    """A scalar, a list of choices or ``{min, max[, step]}`` -> sorted tuple of distinct positive ints."""
    allowed = "a positive integer, a non-empty list of positive integers, or {min: a, max: b, step: s}"
    if isinstance(value, Mapping):
        check_keys(value, ("min", "max", "step"), file, key)
        lo, hi, step = value.get("min"), value.get("max"), value.get("step", 1)
        for k, v in (("min", lo), ("max", hi), ("step", step)):
            if not _is_int(v) or v < 1:
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
        if not _is_int(v) or v < 1:
            sub = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
            raise ConfigError(file, sub, f"must be a positive integer ({what})", allowed, value=v)
        _check_int_limit(v, file, f"{key}[{i}]" if isinstance(value, (list, tuple)) else key)
    return tuple(sorted(set(items)))


def _check_int_limit(v: int, file: str | None, key: str) -> None:
    """The documented maximum of a depth, width or patch size (nas.limits)."""
    limit = int_choice_limit(key[:-4] if key.endswith(".max") else key.split("[")[0])
    if limit is not None and v > limit[1]:
        raise ConfigError(file, key, "is above its sane maximum", f"at most {limit[1]:,}", value=v)


def _block_choices(value: Any, file: str | None, key: str) -> tuple[str, ...]:
    """A letter or a list of letters of ``nas.arch.BLOCKS`` -> the distinct ones in the table's order."""
    allowed = f"a block letter or a non-empty list of them, from {known_blocks()}"
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(file, key, "is an empty list of choices", allowed, value=value)
    for v in items:
        if not is_block_letter(v):
            raise ConfigError(file, key, "has an unknown block letter", allowed, value=v)
    return tuple(b for b in BLOCKS if b in items)


def _parse_layout(text: Any, file: str | None, key: str) -> str:
    if text == VIT_REL:
        return VIT_REL
    letters = text.split("-") if isinstance(text, str) else ()
    return "-".join(check_layout(letters, file, key, text))


def _option_choices(data: Any, file: str | None, key: str) -> dict[str, tuple]:
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


# --------------------------------------------------------------------------------------- layouts
def _block_order() -> str:
    """``C before T``: the order ``rules.monotone`` keeps along S1..S4 (letters of equal order joined by /)."""
    orders = sorted({k.order for k in BLOCKS.values()})
    return " before ".join("/".join(b for b, k in BLOCKS.items() if k.order == o) for o in orders)


def _layout_problem(layout: str, stages: Mapping[str, StageChoices], monotone: bool) -> str | None:
    """Why the stage block choices or ``rules.monotone`` exclude ``layout``; ``None`` when they allow it."""
    if layout == VIT_REL:
        bad = [s for s in STAGES if VIT_BLOCK not in stages[s].block]
        return (
            (
                f"{VIT_REL} needs {VIT_BLOCK} allowed in every stage, but "
                + "; ".join(f"{s} allows only {', '.join(stages[s].block)}" for s in bad)
            )
            if bad
            else None
        )
    blocks = layout.split("-")
    for s, b in zip(STAGES, blocks):
        if b not in stages[s].block:
            return f"{s} is {b} but space.stages.{s}.block allows only {list(stages[s].block)}"
    for a, b in zip(blocks, blocks[1:]):
        if monotone and BLOCKS[a].order > BLOCKS[b].order:
            return f"it puts a {b} stage after a {a} stage, but rules.monotone is true"
    return None


def _valid_layouts(
    stages: Mapping[str, StageChoices],
    fixed: list[str] | None,
    monotone: bool,
    file: str | None,
    include_vit: bool = False,
) -> list[str]:
    """Layouts allowed by the stage block choices and the rules; error when none (or a fixed one) is."""
    if fixed is not None:
        for i, layout in enumerate(fixed):
            why = _layout_problem(layout, stages, monotone)
            if why:
                raise ConfigError(
                    file,
                    f"space.rules.layouts[{i}]",
                    f"contradicts the stage choices: {why}",
                    "layouts whose stages use allowed block letters"
                    + (f" and, with rules.monotone, keep the order {_block_order()}" if monotone else ""),
                    value=layout,
                )
        return fixed
    combos = ["-".join(p) for p in itertools.product(*(stages[s].block for s in STAGES))]
    out = [l for l in combos if _layout_problem(l, stages, monotone) is None]
    if include_vit:
        why = _layout_problem(VIT_REL, stages, monotone)
        if why:
            raise ConfigError(
                file,
                "space.vit_rel.include",
                f"cannot be satisfied: {why}",
                f"{VIT_BLOCK} in every stage's block choices, or include: false",
                value=True,
            )
        out.append(VIT_REL)
    if not out:
        raise ConfigError(
            file,
            "space.rules.monotone",
            "cannot be satisfied by the stage block choices: every "
            f"combination breaks the order {_block_order()} (e.g. {combos[0]}: "
            f"{_layout_problem(combos[0], stages, monotone)})",
            f"block choices that allow stages in the order {_block_order()}, or monotone: false",
            value=True,
        )
    return out
