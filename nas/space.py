"""The search-space language: the ``space:`` section of a search YAML and the set of architectures it names.

A :class:`SearchSpace` is the cross product of a layout (block type per stage S1-S4, or the ``ViT_REL``
baseline), per-stage depth and width choices and block-option choices, filtered by the rules
(``monotone``, ``non_decreasing_widths``). Counting and uniform sampling are exact and combinatorial, so
huge spaces cost nothing. ``docs/space.md`` is the YAML reference.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .arch import BLOCK_TYPES, VIT_REL, Architecture, BlockOptions
from .errors import ConfigError, UserError, check_keys, parse_dataclass, yaml_problem
from .yamlio import load_yaml_file
from .limits import MAX_CHOICES, check_value, int_choice_limit

__all__ = ["Budgets", "SearchSpace", "resolve_space_path", "load_yaml", "load_space", "bundled_spaces",
           "TOP_LEVEL_KEYS", "STAGES"]

TOP_LEVEL_KEYS = ("space", "train", "objective", "search")
STAGES = ("S1", "S2", "S3", "S4")
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(BlockOptions))


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
        raise UserError(f"Search-space file {str(path_or_name)!r} is a folder, not a YAML file. Pass a search "
                        f"YAML file (see docs/space.md) or a bundled space: {', '.join(bundled_spaces())}.")
    raise UserError(f"Search-space file {name!r} was not found: it is neither an existing file (relative to "
                    f"{Path.cwd()}) nor a bundled space. Bundled spaces: {', '.join(bundled_spaces())}.")


def load_yaml(path_or_name: str | Path) -> tuple[Path, dict]:
    """Resolve and parse a search YAML; check its top-level keys (``space`` is required)."""
    path = resolve_space_path(path_or_name)
    try:
        data = load_yaml_file(path)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "<top level>", f"is not valid YAML {yaml_problem(err)}",
                          "a YAML mapping with keys " + ", ".join(TOP_LEVEL_KEYS)) from None
    except OSError as err:
        raise UserError(f"Cannot read search-space file {path}: {err.strerror}. Make it readable by this user "
                        f"(e.g. `chmod u+r {path}`) or pass another search YAML.") from None
    if data is None:
        data = {}
    check_keys(data, TOP_LEVEL_KEYS, str(path), "")
    if "space" not in data:
        raise ConfigError(str(path), "space", "is missing", "a mapping with input, stem, stages, rules, vit_rel, "
                          "blocks, budgets (see docs/space.md)")
    return path, dict(data)


def load_space(path_or_name: str | Path) -> "SearchSpace":
    """The :class:`SearchSpace` of the ``space:`` section of a search YAML."""
    path, data = load_yaml(path_or_name)
    return SearchSpace.from_dict(data["space"], file=str(path))


# -------------------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Budgets:
    """Optional upper limits on a candidate's cost; ``None`` means unlimited."""

    max_params: int | None = None
    max_macs: int | None = None

    def excess(self, cost: Any) -> tuple[float, float]:
        """Relative excess of ``cost`` (params, MACs) over each limit: ``value / limit - 1`` (<= 0 is within
        it; -1 for no limit): the constraints the search gives Optuna's samplers."""
        return tuple(-1.0 if limit is None else float(value) / float(limit) - 1.0
                     for limit, value in ((self.max_params, cost.params), (self.max_macs, cost.macs)))

    def allows(self, cost: Any) -> bool:
        """Whether ``cost`` is within every limit."""
        return all(e <= 0 for e in self.excess(cost))

    @property
    def unlimited(self) -> bool:
        return self.max_params is None and self.max_macs is None


@dataclass(frozen=True)
class _Choices:
    depth: tuple[int, ...]
    width: tuple[int, ...]
    block: tuple[str, ...] = ("C",)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_choices(value: Any, file: str | None, key: str, what: str) -> tuple[int, ...]:
    """A scalar, a list of choices or ``{min, max[, step]}`` -> sorted tuple of distinct positive ints."""
    allowed = f"a positive integer, a non-empty list of positive integers, or {{min: a, max: b, step: s}}"
    if isinstance(value, Mapping):
        check_keys(value, ("min", "max", "step"), file, key)
        lo, hi, step = value.get("min"), value.get("max"), value.get("step", 1)
        for k, v in (("min", lo), ("max", hi), ("step", step)):
            if not _is_int(v) or v < 1:
                raise ConfigError(file, f"{key}.{k}", f"must be a positive integer ({what})", allowed, value=v)
        if lo > hi:
            raise ConfigError(file, key, "has min > max", allowed, value=dict(value))
        if (hi - lo) // step + 1 > MAX_CHOICES:
            raise ConfigError(file, key, f"expands to {(hi - lo) // step + 1:,} choices", f"at most "
                              f"{MAX_CHOICES} choices per list or range (raise step, or narrow min..max)",
                              value=dict(value))
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
    allowed = f"a block letter or a non-empty list of them, from {', '.join(BLOCK_TYPES)}"
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError(file, key, "is an empty list of choices", allowed, value=value)
    for v in items:
        if v not in BLOCK_TYPES:
            raise ConfigError(file, key, "has an unknown block letter", allowed, value=v)
    return tuple(b for b in BLOCK_TYPES if b in items)


def _parse_layout(text: Any, file: str | None, key: str) -> str:
    allowed = f"'X-X-X-X' with each X one of {', '.join(BLOCK_TYPES)} (e.g. 'C-C-T-T'), or '{VIT_REL}'"
    if text == VIT_REL:
        return VIT_REL
    if not isinstance(text, str) or len(text.split("-")) != 4 or any(b not in BLOCK_TYPES for b in text.split("-")):
        raise ConfigError(file, key, "is not a layout", allowed, value=text)
    return text


def _option_choices(data: Any, file: str | None, key: str) -> dict[str, tuple]:
    """Each BlockOptions field: fixed (scalar) or searchable (list); validated by ``parse_dataclass``."""
    data = check_keys(data, OPTION_NAMES, file, key)
    defaults = BlockOptions()
    out: dict[str, tuple] = {}
    for name in OPTION_NAMES:
        raw = data.get(name, getattr(defaults, name))
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items:
            raise ConfigError(file, f"{key}.{name}", "is an empty list of choices",
                              "a value or a non-empty list of values", value=raw)
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


class SearchSpace:
    """A set of :class:`Architecture` candidates described by the ``space:`` YAML section. Immutable."""

    def __init__(self, *, image_size: int, in_chans: int, stem: _Choices, stages: dict[str, _Choices],
                 layouts: tuple[str, ...], patch_sizes: tuple[int, ...], options: dict[str, tuple],
                 monotone: bool, non_decreasing_widths: bool, budgets: Budgets, file: str | None = None,
                 stem_stride: int = 2):
        self._image_size, self._in_chans, self._stem_stride = image_size, in_chans, stem_stride
        self._stem, self._stages = stem, dict(stages)
        self._layouts, self._patch_sizes = layouts, patch_sizes
        self._options = dict(options)
        self._monotone, self._nondec = monotone, non_decreasing_widths
        self._budgets, self._file = budgets, file
        self._width_lists = (stem.width, *(stages[s].width for s in STAGES))
        self._chains = self._chain_counts()

    # ------------------------------------------------------------------------------ properties
    image_size = property(lambda self: self._image_size)
    in_chans = property(lambda self: self._in_chans)
    stem_stride = property(lambda self: self._stem_stride, doc="stride of the conv stem (2: 32x in all, 1: 16x)")
    budgets = property(lambda self: self._budgets)
    file = property(lambda self: self._file)
    layouts = property(lambda self: self._layouts, doc="valid layout names, in a fixed order")

    def __repr__(self) -> str:
        return f"SearchSpace(file={self._file!r}, layouts={len(self._layouts)}, size={self.size()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    # ------------------------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data: Any, file: str | None = None) -> "SearchSpace":
        """Parse and validate the ``space:`` section (``data`` is its mapping)."""
        f = str(file) if file is not None else None
        if data is None:
            raise ConfigError(f, "space", "is empty", "a mapping with input, stem, stages, rules, vit_rel, blocks, budgets")
        data = check_keys(data, ("input", "stem", "stages", "rules", "vit_rel", "blocks", "budgets"), f, "space")

        inp = check_keys(data.get("input"), ("image_size", "channels"), f, "space.input")
        image_size, in_chans = inp.get("image_size", 32), inp.get("channels", 3)
        if not _is_int(image_size) or image_size < 32:
            raise ConfigError(f, "space.input.image_size", "is too small for the stem and four stages, which "
                              "halve it 5 times (32x) in total", "an integer >= 32", value=image_size)
        if not _is_int(in_chans) or in_chans < 1:
            raise ConfigError(f, "space.input.channels", "must be a positive integer", "e.g. 1 (grey) or 3 (RGB)",
                              value=in_chans)
        check_value(image_size, "space.input.image_size", f)
        check_value(in_chans, "space.input.channels", f)

        stem_d = check_keys(data.get("stem"), ("width", "depth", "stride"), f, "space.stem")
        if "width" not in stem_d:
            raise ConfigError(f, "space.stem.width", "is missing", "a positive integer or a list of them")
        stem_stride = stem_d.get("stride", 2)
        if isinstance(stem_stride, bool) or stem_stride not in (1, 2):
            raise ConfigError(f, "space.stem.stride", "must be 1 or 2 (one value per space): 2 is the paper's "
                              "stem (32x downsampling in all), 1 keeps twice the resolution in every stage "
                              "(16x), for 32-64 px images", "1, 2", value=stem_stride)
        stem = _Choices(depth=_int_choices(stem_d.get("depth", 2), f, "space.stem.depth", "number of 3x3 convs"),
                        width=_int_choices(stem_d["width"], f, "space.stem.width", "channels"))

        stages_d = check_keys(data.get("stages"), STAGES, f, "space.stages")
        stages = {}
        for s in STAGES:
            key = f"space.stages.{s}"
            if s not in stages_d:
                raise ConfigError(f, key, "is missing", "a mapping with block, depth, width; all of S1-S4 are needed")
            sd = check_keys(stages_d[s], ("block", "depth", "width"), f, key)
            for k in ("depth", "width"):
                if k not in sd:
                    raise ConfigError(f, f"{key}.{k}", "is missing", "a positive integer or a list of them")
            stages[s] = _Choices(block=_block_choices(sd.get("block", ["C", "T"]), f, f"{key}.block"),
                                 depth=_int_choices(sd["depth"], f, f"{key}.depth", "number of blocks"),
                                 width=_int_choices(sd["width"], f, f"{key}.width", "channels"))

        rules = check_keys(data.get("rules"), ("monotone", "non_decreasing_widths", "layouts"), f, "space.rules")
        flags = {}
        for k, default in (("monotone", True), ("non_decreasing_widths", True)):
            v = rules.get(k, default)
            if not isinstance(v, bool):
                raise ConfigError(f, f"space.rules.{k}", "must be true or false", "true, false", value=v)
            flags[k] = v
        fixed = rules.get("layouts")
        if fixed is not None:
            if not isinstance(fixed, (list, tuple)) or not fixed:
                raise ConfigError(f, "space.rules.layouts", "must be a non-empty list of layouts or null",
                                  f"e.g. [C-C-T-T, {VIT_REL}]", value=fixed)
            fixed = [_parse_layout(t, f, f"space.rules.layouts[{i}]") for i, t in enumerate(fixed)]
            fixed = list(dict.fromkeys(fixed))

        vit = check_keys(data.get("vit_rel"), ("include", "patch_size"), f, "space.vit_rel")
        include_vit = vit.get("include", False)
        if not isinstance(include_vit, bool):
            raise ConfigError(f, "space.vit_rel.include", "must be true or false", "true, false", value=include_vit)
        if include_vit and fixed is not None:
            raise ConfigError(f, "space.vit_rel.include", "cannot be used together with space.rules.layouts",
                              f"list '{VIT_REL}' in space.rules.layouts instead", value=include_vit)
        patch_sizes = _int_choices(vit.get("patch_size", 4), f, "space.vit_rel.patch_size", "pixels")
        for p in patch_sizes:
            if image_size % p:
                raise ConfigError(f, "space.vit_rel.patch_size", "does not divide space.input.image_size "
                                  f"({image_size})", f"a divisor of {image_size}", value=p)

        options = _option_choices(data.get("blocks"), f, "space.blocks")

        bud = check_keys(data.get("budgets"), ("max_params", "max_macs"), f, "space.budgets")
        limits = {}
        for k in ("max_params", "max_macs"):
            v = bud.get(k)
            if isinstance(v, str):  # YAML 1.1 reads 5.0e6 (no sign in the exponent) as a string
                try:
                    v = float(v)
                except ValueError:
                    pass
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                  or not math.isfinite(v) or v > 1e18):
                raise ConfigError(f, f"space.budgets.{k}", "must be a positive number or null",
                                  "a number from 1 to 1e18, e.g. 5.0e6, or null", value=v)
            limits[k] = None if v is None else int(v)
        budgets = Budgets(**limits)

        # Attention stages need widths divisible by every head_dim choice.
        for s in STAGES:
            if "T" in stages[s].block or include_vit or (fixed and VIT_REL in fixed):
                for hd in options["head_dim"]:
                    for w in stages[s].width:
                        if w % hd:
                            raise ConfigError(f, f"space.stages.{s}.width", f"has a width not divisible by "
                                              f"head_dim {hd}, but a T block is possible in {s}",
                                              f"multiples of every space.blocks.head_dim choice", value=w)

        layouts = _valid_layouts(stages, fixed, flags["monotone"], f, include_vit)
        space = cls(image_size=image_size, in_chans=in_chans, stem=stem, stages=stages, layouts=tuple(layouts),
                    patch_sizes=patch_sizes, options=options, monotone=flags["monotone"],
                    non_decreasing_widths=flags["non_decreasing_widths"], budgets=budgets, file=f,
                    stem_stride=stem_stride)
        if space._chains[0] and not any(space._chains[0].values()):
            raise ConfigError(f, "space.rules.non_decreasing_widths", "cannot be satisfied: no choice of "
                              "widths S0..S4 is non-decreasing", "widths choices that allow a non-decreasing "
                              "chain, or non_decreasing_widths: false", value=True)
        return space

    # ----------------------------------------------------------------------------- counting
    def _chain_counts(self) -> list[dict[int, int]]:
        """``counts[i][w]``: number of valid width chains for stages i..4 when stage i has width ``w``."""
        lists = self._width_lists
        counts: list[dict[int, int]] = [dict() for _ in lists]
        for i in range(len(lists) - 1, -1, -1):
            for w in lists[i]:
                if i == len(lists) - 1:
                    counts[i][w] = 1
                else:
                    counts[i][w] = sum(c for w2, c in counts[i + 1].items() if not self._nondec or w2 >= w)
        return counts

    def _n_widths(self) -> int:
        return sum(self._chains[0].values())

    def _n_depths(self) -> int:
        n = len(self._stem.depth)
        for s in STAGES:
            n *= len(self._stages[s].depth)
        return n

    def _n_options(self) -> int:
        n = 1
        for vals in self._options.values():
            n *= len(vals)
        return n

    def _layout_weight(self, layout: str) -> int:
        return len(self._patch_sizes) if layout == VIT_REL else 1

    def size(self) -> int:
        """Exact number of valid candidates (rules applied, block options included)."""
        return (sum(self._layout_weight(l) for l in self._layouts) * self._n_widths() * self._n_depths()
                * self._n_options())

    # ----------------------------------------------------------------------------- building
    def _make(self, layout: str, depths, widths, opts: Mapping[str, Any], patch: int | None) -> Architecture:
        options = BlockOptions(**opts)
        if layout == VIT_REL:
            return Architecture(layout=("T",) * 4, depths=tuple(depths), widths=tuple(widths), options=options,
                                stem="patch", patch_size=int(patch))
        return Architecture(layout=tuple(layout.split("-")), depths=tuple(depths), widths=tuple(widths),
                            options=options, stem_stride=self._stem_stride)

    def _depth_lists(self) -> list[tuple[int, ...]]:
        return [self._stem.depth, *(self._stages[s].depth for s in STAGES)]

    def _width_choices_after(self, i: int, prev: int | None) -> list[int]:
        """Widths for position i (0 = stem) that keep a valid chain, given the previous width."""
        return [w for w in self._width_lists[i] if self._chains[i][w] > 0
                and (prev is None or not self._nondec or w >= prev)]

    def sample(self, rng: random.Random) -> Architecture:
        """A candidate drawn uniformly (exactly) from the valid ones."""
        layout = _weighted(rng, [(l, self._layout_weight(l)) for l in self._layouts])
        patch = rng.choice(self._patch_sizes) if layout == VIT_REL else None
        widths, prev = [], None
        for i in range(5):
            ws = self._width_choices_after(i, prev)
            prev = _weighted(rng, [(w, self._chains[i][w]) for w in ws])
            widths.append(prev)
        depths = [rng.choice(d) for d in self._depth_lists()]
        opts = {k: rng.choice(v) for k, v in self._options.items()}
        return self._make(layout, depths, widths, opts, patch)

    def _width_chains(self) -> Iterator[tuple[int, ...]]:
        def rec(i: int, prev: int | None, acc: tuple[int, ...]):
            if i == 5:
                yield acc
                return
            for w in self._width_choices_after(i, prev):
                yield from rec(i + 1, w, acc + (w,))
        yield from rec(0, None, ())

    def enumerate(self, limit: int | None = None) -> Iterator[Architecture]:
        """Every candidate in a deterministic order (layout, patch, widths, depths, options)."""
        names = list(self._options)
        n = 0
        for layout in self._layouts:
            for patch in (self._patch_sizes if layout == VIT_REL else (None,)):
                for widths in self._width_chains():
                    for depths in itertools.product(*self._depth_lists()):
                        for vals in itertools.product(*(self._options[k] for k in names)):
                            if limit is not None and n >= limit:
                                return
                            n += 1
                            yield self._make(layout, depths, widths, dict(zip(names, vals)), patch)

    def minimal_architectures(self) -> list[Architecture]:
        """Per layout (and patch size) and option combination, the smallest depths and widths."""
        names = list(self._options)
        depths = [min(d) for d in self._depth_lists()]
        widths, prev = [], None
        for i in range(5):
            prev = min(self._width_choices_after(i, prev))
            widths.append(prev)
        out = []
        for layout in self._layouts:
            for patch in (self._patch_sizes if layout == VIT_REL else (None,)):
                for vals in itertools.product(*(self._options[k] for k in names)):
                    out.append(self._make(layout, depths, widths, dict(zip(names, vals)), patch))
        return out

    # ---------------------------------------------------------------------------- membership
    def why_invalid(self, arch: Architecture) -> str | None:
        """``None`` if ``arch`` is a candidate of this space, else the first reason it is not."""
        if arch.layout_name not in self._layouts:
            return f"layout {arch.layout_name} is not one of {', '.join(self._layouts)}"
        if arch.is_vit and arch.patch_size not in self._patch_sizes:
            return f"patch_size {arch.patch_size} is not one of {list(self._patch_sizes)}"
        if not arch.is_vit and arch.stem_stride != self._stem_stride:
            return f"stem_stride {arch.stem_stride} is not the space's space.stem.stride {self._stem_stride}"
        names = ("S0", *STAGES)
        for i, (d, ds) in enumerate(zip(arch.depths, self._depth_lists())):
            if d not in ds:
                return f"{names[i]} depth {d} is not one of {list(ds)}"
        for i, (w, ws) in enumerate(zip(arch.widths, self._width_lists)):
            if w not in ws:
                return f"{names[i]} width {w} is not one of {list(ws)}"
        if self._nondec and any(b < a for a, b in zip(arch.widths, arch.widths[1:])):
            return f"widths {list(arch.widths)} decrease, but rules.non_decreasing_widths is true"
        for k, vals in self._options.items():
            v = getattr(arch.options, k)
            if v not in vals:
                return f"block option {k}={v!r} is not one of {list(vals)}"
        return None

    def contains(self, arch: Architecture) -> bool:
        return self.why_invalid(arch) is None

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, Architecture) and self.contains(arch)

    # ------------------------------------------------------------------------------- optuna
    def suggest(self, trial: Any) -> Architecture:
        """Define-by-run sampling with ``trial.suggest_categorical`` only; always returns a valid candidate.

        Every parameter name has one fixed choice list: a width whose choices depend on the previous
        stage's width carries that width in its name (``S2.width|S1=48``).
        """
        layout = trial.suggest_categorical("layout", list(self._layouts)) if len(self._layouts) > 1 \
            else self._layouts[0]
        patch = None
        if layout == VIT_REL:
            patch = (trial.suggest_categorical("vit_rel.patch_size", list(self._patch_sizes))
                     if len(self._patch_sizes) > 1 else self._patch_sizes[0])
        names = ("S0", *STAGES)
        depths = []
        for name, ds in zip(names, self._depth_lists()):
            depths.append(trial.suggest_categorical(f"{name}.depth", list(ds)) if len(ds) > 1 else ds[0])
        widths, prev = [], None
        for i, name in enumerate(names):
            ws = self._width_choices_after(i, prev)
            if len(ws) > 1:
                pname = self._width_param(i, prev)
                prev = trial.suggest_categorical(pname, ws)
            else:
                prev = ws[0]
            widths.append(prev)
        opts = {}
        for k, vals in self._options.items():
            opts[k] = trial.suggest_categorical(f"blocks.{k}", list(vals)) if len(vals) > 1 else vals[0]
        return self._make(layout, depths, widths, opts, patch)

    def _width_param(self, i: int, prev: int | None) -> str:
        """``S2.width``, or ``S2.width|S1=48`` where the choices depend on the previous width (so that
        every name has one fixed choice list); flat names keep a study's parameters few and dense."""
        names = ("S0", *STAGES)
        if i == 0 or not self._nondec:
            return f"{names[i]}.width"
        prevs = [w for w in self._width_lists[i - 1] if self._chains[i - 1][w] > 0]
        if all(self._width_choices_after(i, p) == self._width_choices_after(i, prevs[0]) for p in prevs):
            return f"{names[i]}.width"
        return f"{names[i]}.width|{names[i - 1]}={prev}"

    def encode(self, arch: Architecture) -> dict[str, Any]:
        """The parameters for which ``suggest(optuna.trial.FixedTrial(params))`` returns ``arch``."""
        why = self.why_invalid(arch)
        if why:
            raise ValueError(f"{arch} is not in this search space: {why}")
        params: dict[str, Any] = {}
        if len(self._layouts) > 1:
            params["layout"] = arch.layout_name
        if arch.is_vit and len(self._patch_sizes) > 1:
            params["vit_rel.patch_size"] = arch.patch_size
        names = ("S0", *STAGES)
        for name, d, ds in zip(names, arch.depths, self._depth_lists()):
            if len(ds) > 1:
                params[f"{name}.depth"] = d
        prev = None
        for i, w in enumerate(arch.widths):
            if len(self._width_choices_after(i, prev)) > 1:
                params[self._width_param(i, prev)] = w
            prev = w
        for k, vals in self._options.items():
            if len(vals) > 1:
                params[f"blocks.{k}"] = getattr(arch.options, k)
        return params

    # ------------------------------------------------------------------------------ budgets
    def check_budgets(self, cost_fn: Callable[..., Any], num_classes: int = 10) -> None:
        """Raise :class:`ConfigError` when even the smallest candidate exceeds a budget."""
        if self._budgets.max_params is None and self._budgets.max_macs is None:
            return
        costs = [(a, cost_fn(a, image_size=self._image_size, num_classes=num_classes, in_chans=self._in_chans))
                 for a in self.minimal_architectures()]
        for key, attr, unit in (("max_params", "params", "parameters"), ("max_macs", "macs", "MACs")):
            limit = getattr(self._budgets, key)
            if limit is None:
                continue
            arch, cost = min(costs, key=lambda ac: getattr(ac[1], attr))
            smallest = int(getattr(cost, attr))
            if smallest > limit:
                raise ConfigError(self._file, f"space.budgets.{key}", f"is below the cost of the smallest "
                                  f"candidate ({arch}: {smallest:,} {unit}), so no candidate fits",
                                  f"a value >= {smallest:,}, or null for no limit", value=limit)
        if all((self._budgets.max_params is not None and c.params > self._budgets.max_params)
               or (self._budgets.max_macs is not None and c.macs > self._budgets.max_macs) for _, c in costs):
            raise ConfigError(self._file, "space.budgets", "no minimal candidate fits both max_params and "
                              "max_macs at once", "larger limits, or null for no limit",
                              value=dataclasses.asdict(self._budgets))

    # ---------------------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """Resolved canonical form (every choice list explicit and sorted)."""
        return {
            "input": {"image_size": self._image_size, "channels": self._in_chans},
            "stem": {"depth": list(self._stem.depth), "width": list(self._stem.width),
                     **({"stride": self._stem_stride} if self._stem_stride != 2 else {})},
            "stages": {s: {"block": list(c.block), "depth": list(c.depth), "width": list(c.width)}
                       for s, c in self._stages.items()},
            "rules": {"monotone": self._monotone, "non_decreasing_widths": self._nondec,
                      "layouts": list(self._layouts)},
            "vit_rel": {"patch_size": list(self._patch_sizes)},
            "blocks": {k: list(v) for k, v in self._options.items()},
            "budgets": dataclasses.asdict(self._budgets),
        }

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def diff(self, other: "SearchSpace") -> list[str]:
        """Changed keys in words, e.g. ``space.stages.S2.width: [64, 96] -> [64, 128]``."""
        a, b = _flatten(self.to_dict(), "space"), _flatten(other.to_dict(), "space")
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{k}: removed (was {a[k]!r})")
            elif k not in a:
                out.append(f"{k}: added ({b[k]!r})")
            elif a[k] != b[k]:
                out.append(f"{k}: {a[k]!r} -> {b[k]!r}")
        return out


# --------------------------------------------------------------------------------------- helpers
def _weighted(rng: random.Random, items: list[tuple[Any, int]]) -> Any:
    total = sum(w for _, w in items)
    r = rng.randrange(total)
    for value, w in items:
        if r < w:
            return value
        r -= w
    raise AssertionError("unreachable")


def _flatten(d: Mapping, prefix: str) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _valid_layouts(stages: Mapping[str, _Choices], fixed: list[str] | None, monotone: bool,
                   file: str | None, include_vit: bool = False) -> list[str]:
    """Layouts allowed by the stage block choices and the rules; error when none (or a fixed one) is."""
    def ok(layout: str) -> str | None:
        if layout == VIT_REL:
            bad = [s for s in STAGES if "T" not in stages[s].block]
            verb = "allows" if len(bad) == 1 else "allow"
            return f"{VIT_REL} needs T allowed in every stage, but {', '.join(bad)} {verb} only C" if bad else None
        blocks = layout.split("-")
        for s, b in zip(STAGES, blocks):
            if b not in stages[s].block:
                return f"{s} is {b} but space.stages.{s}.block allows only {list(stages[s].block)}"
        if monotone and any(a == "T" and b == "C" for a, b in zip(blocks, blocks[1:])):
            return "it puts a C stage after a T stage, but rules.monotone is true"
        return None

    if fixed is not None:
        for i, layout in enumerate(fixed):
            why = ok(layout)
            if why:
                raise ConfigError(file, f"space.rules.layouts[{i}]", f"contradicts the stage choices: {why}",
                                  "layouts whose stages use allowed block letters"
                                  + (" and, with rules.monotone, no C stage after a T stage" if monotone else ""),
                                  value=layout)
        return fixed
    out = ["-".join(p) for p in itertools.product(*(stages[s].block for s in STAGES))]
    out = [l for l in out if ok(l) is None]
    if include_vit:
        why = ok(VIT_REL)
        if why:
            raise ConfigError(file, "space.vit_rel.include", f"cannot be satisfied: {why}",
                              "T in every stage's block choices, or include: false", value=True)
        out.append(VIT_REL)
    if not out:
        raise ConfigError(file, "space.rules.monotone", "cannot be satisfied by the stage block choices: every "
                          "combination puts a C stage after a T stage", "block choices that allow C stages "
                          "before T stages, or monotone: false", value=True)
    return out
