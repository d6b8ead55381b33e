"""Reading a search YAML's ``space:`` section: the file, its keys and values, and the layouts it allows.

:func:`parse_space` validates the section once, at the edge, and returns the arguments of
``nas.space.search_space.SearchSpace``; every mistake is a :class:`ConfigError` naming the file, the key and
what is allowed.
Block letters and their properties come from ``nas.model.arch.BLOCKS``. ``docs/space.md`` is the YAML reference.
The choice lists and parsed values are ``nas.space.choices``, the allowed layouts ``nas.space.layouts``.
Everything public here is re-exported from ``nas.space.search_space``.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError, UserError, check_keys, yaml_problem
from nas.limits import check_value
from nas.model.arch import BLOCKS, VIT_BLOCK, VIT_REL
from nas.space.choices import (
    DEFAULT_BLOCKS,
    STAGES,
    Budgets,
    StageChoices,
    block_choices,
    int_choices,
    is_int,
    option_choices,
)
from nas.space.layouts import parse_layout, valid_layouts
from nas.yamlio import load_yaml_file

TOP_LEVEL_KEYS = ("space", "train", "objective", "search", "finalists")
SPACE_KEYS = ("input", "stem", "stages", "rules", "vit_rel", "blocks", "budgets")


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
    if os.path.lexists(path):  # a FIFO, a device, a socket or a dangling link: never read (it could block)
        kind = "a dangling symbolic link" if path.is_symlink() and not path.exists() else "not a regular file"
        raise UserError(
            f"Search-space file {name!r} is {kind} (a FIFO, a device or a socket is never read as a YAML). "
            f"Pass a search YAML file (see docs/space.md) or a bundled space: {', '.join(bundled_spaces())}."
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


# ---------------------------------------------------------------------------------- the section
def parse_space(data: Any, file: str | None = None) -> dict[str, Any]:
    """Validate the ``space:`` section (``data`` is its mapping): the keyword arguments of ``SearchSpace``."""
    f = str(file) if file is not None else None
    if data is None:
        raise ConfigError(f, "space", "is empty", f"a mapping with {', '.join(SPACE_KEYS)}")
    data = check_keys(data, SPACE_KEYS, f, "space")
    image_size, in_chans = _parse_input(data.get("input"), f)
    stem, stem_stride = _parse_stem(data.get("stem"), f)
    stages, strides = _parse_stages(data.get("stages"), f)
    flags, fixed = _parse_rules(data.get("rules"), f)
    include_vit, patch_sizes = _parse_vit_rel(data.get("vit_rel"), fixed, image_size, f)
    options = option_choices(data.get("blocks"), f, "space.blocks")
    budgets = _parse_budgets(data.get("budgets"), f)
    _check_head_dims(stages, options["head_dim"], include_vit or (fixed is not None and VIT_REL in fixed), f)
    layouts = valid_layouts(stages, fixed, flags["monotone"], f, include_vit)
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
        strides=strides,
    )


def _parse_input(data: Any, f: str | None) -> tuple[int, int]:
    inp = check_keys(data, ("image_size", "channels"), f, "space.input")
    image_size, in_chans = inp.get("image_size", 32), inp.get("channels", 3)
    if not is_int(image_size) or image_size < 32:
        raise ConfigError(
            f,
            "space.input.image_size",
            "is too small for the stem and four stages, which halve it 5 times (32x) in total",
            "an integer >= 32",
            value=image_size,
        )
    if not is_int(in_chans) or in_chans < 1:
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
    if type(stem_stride) is not int or stem_stride not in (1, 2):  # not 2.0, not True
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
        depth=int_choices(stem_d.get("depth", 2), f, "space.stem.depth", "number of 3x3 convs"),
        width=int_choices(stem_d["width"], f, "space.stem.width", "channels"),
    )
    return stem, stem_stride


def _parse_stages(data: Any, f: str | None) -> tuple[dict[str, StageChoices], tuple[int, ...]]:
    """Each stage's choices, and the stride of each stage's first block (``stride``, default 2)."""
    stages_d = check_keys(data, STAGES, f, "space.stages")
    stages, strides = {}, []
    for s in STAGES:
        key = f"space.stages.{s}"
        if s not in stages_d:
            raise ConfigError(f, key, "is missing", "a mapping with block, depth, width; all of S1-S4 are needed")
        sd = check_keys(stages_d[s], ("block", "depth", "width", "stride"), f, key)
        stride = sd.get("stride", 2)
        if type(stride) is not int or stride not in (1, 2):  # not 2.0, not True
            raise ConfigError(
                f,
                f"{key}.stride",
                "must be 1 or 2 (one value per stage): 2 halves the map at the stage's first block (the paper), "
                "1 keeps it, e.g. S3 at 4x4 tokens for 32 px images",
                "1, 2",
                value=stride,
            )
        strides.append(stride)
        for k in ("depth", "width"):
            if k not in sd:
                raise ConfigError(f, f"{key}.{k}", "is missing", "a positive integer or a list of them")
        stages[s] = StageChoices(
            block=block_choices(sd.get("block", list(DEFAULT_BLOCKS)), f, f"{key}.block"),
            depth=int_choices(sd["depth"], f, f"{key}.depth", "number of blocks"),
            width=int_choices(sd["width"], f, f"{key}.width", "channels"),
        )
    return stages, tuple(strides)


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
        fixed = [parse_layout(t, f, f"space.rules.layouts[{i}]") for i, t in enumerate(fixed)]
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
    patch_sizes = int_choices(vit.get("patch_size", 4), f, "space.vit_rel.patch_size", "pixels")
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
