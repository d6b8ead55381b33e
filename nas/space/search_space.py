"""The set of architectures a search YAML's ``space:`` section names: count, sample, enumerate, encode.

A :class:`SearchSpace` is the cross product of a layout (block letter per stage S1-S4, or the ``ViT_REL``
baseline), per-stage depth and width choices and block-option choices, filtered by the rules
(``monotone``, ``non_decreasing_widths``). Counting and uniform sampling are exact and combinatorial, so
huge spaces cost nothing. Reading and validating the YAML is ``nas.space.reading``'s job; ``docs/space.md``
is the YAML reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.model.arch import DEFAULT_STRIDES, VIT_BLOCK, VIT_REL, Architecture, BlockOptions
from nas.space.choices import STAGES, Budgets, StageChoices
from nas.space.reading import load_yaml, parse_space


def load_space(path_or_name: str | Path) -> SearchSpace:
    """The :class:`SearchSpace` of the ``space:`` section of a search YAML."""
    path, data = load_yaml(path_or_name)
    return SearchSpace.from_dict(data["space"], file=str(path))


class SearchSpace:
    """A set of :class:`Architecture` candidates described by the ``space:`` YAML section. Immutable.

    Counting, sampling, enumeration, membership, budgets and identity, and (at the end) the Optuna side:
    define-by-run parameters (``suggest``) and their inverse (``encode``). Every Optuna parameter is categorical
    and each name has one fixed choice list, so any sampler (and a study resumed later) sees the same
    parameters; a width whose choices depend on the previous stage's width carries that width in its name
    (``S2.width|S1=48``).
    """

    def __init__(
        self,
        *,
        image_size: int,
        in_chans: int,
        stem: StageChoices,
        stages: dict[str, StageChoices],
        layouts: tuple[str, ...],
        patch_sizes: tuple[int, ...],
        options: dict[str, tuple],
        monotone: bool,
        non_decreasing_widths: bool,
        budgets: Budgets,
        file: str | None = None,
        stem_stride: int = 2,
        strides: tuple[int, int, int, int] = DEFAULT_STRIDES,
    ):
        self._image_size, self._in_chans, self._stem_stride = image_size, in_chans, stem_stride
        self._strides = tuple(strides)
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
    strides = property(lambda self: self._strides, doc="stride of each stage S1..S4 (``space.stages.S3.stride``)")
    budgets = property(lambda self: self._budgets)
    file = property(lambda self: self._file)
    layouts = property(lambda self: self._layouts, doc="valid layout names, in a fixed order")

    def choices(self) -> dict[str, Any]:
        """What a weight-sharing supernet must hold (``nas.model.supernet.SupernetSpec`` without the classes):
        the stem's and each stage's choices, the ViT_REL patch sizes (empty without ViT_REL) and every
        combination of block options."""
        layouts = [l for l in self._layouts if l != VIT_REL]
        keys = list(self._options)
        return {
            "image_size": self._image_size,
            "in_chans": self._in_chans,
            "stem_widths": tuple(self._stem.width),
            "stem_depths": tuple(self._stem.depth),
            "stem_stride": self._stem_stride,
            "blocks": tuple(tuple(sorted({l.split("-")[i] for l in layouts})) for i in range(4)),
            "depths": tuple(tuple(self._stages[s].depth) for s in STAGES),
            "widths": tuple(tuple(self._stages[s].width) for s in STAGES),
            "strides": self._strides,
            "patch_sizes": tuple(self._patch_sizes) if VIT_REL in self._layouts else (),
            "options": tuple(
                BlockOptions(**dict(zip(keys, combo))) for combo in itertools.product(*self._options.values())
            ),
        }

    def __repr__(self) -> str:
        return f"SearchSpace(file={self._file!r}, layouts={len(self._layouts)}, size={self.size()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    # ------------------------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data: Any, file: str | None = None) -> SearchSpace:
        """Parse and validate the ``space:`` section (``data`` is its mapping; see ``nas.space.reading``)."""
        space = cls(**parse_space(data, file))
        if space._chains[0] and not any(space._chains[0].values()):
            raise ConfigError(
                space.file,
                "space.rules.non_decreasing_widths",
                "cannot be satisfied: no choice of widths S0..S4 is non-decreasing",
                "widths choices that allow a non-decreasing chain, or non_decreasing_widths: false",
                value=True,
            )
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
        return (
            sum(self._layout_weight(l) for l in self._layouts) * self._n_widths() * self._n_depths() * self._n_options()
        )

    # ----------------------------------------------------------------------------- building
    def _make(self, layout: str, depths, widths, opts: Mapping[str, Any], patch: int | None) -> Architecture:
        options = BlockOptions(**opts)
        if layout == VIT_REL:
            return Architecture(
                layout=(VIT_BLOCK,) * 4,
                depths=tuple(depths),
                widths=tuple(widths),
                options=options,
                stem="patch",
                patch_size=int(patch),
            )
        return Architecture(
            layout=tuple(layout.split("-")),
            depths=tuple(depths),
            widths=tuple(widths),
            options=options,
            stem_stride=self._stem_stride,
            strides=self._strides,
        )

    def _depth_lists(self) -> list[tuple[int, ...]]:
        return [self._stem.depth, *(self._stages[s].depth for s in STAGES)]

    def _width_choices_after(self, i: int, prev: int | None) -> list[int]:
        """Widths for position i (0 = stem) that keep a valid chain, given the previous width."""
        return [
            w
            for w in self._width_lists[i]
            if self._chains[i][w] > 0 and (prev is None or not self._nondec or w >= prev)
        ]

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
            for patch in self._patch_sizes if layout == VIT_REL else (None,):
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
            for patch in self._patch_sizes if layout == VIT_REL else (None,):
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
        if not arch.is_vit and arch.strides != self._strides:
            return f"strides {list(arch.strides)} are not the space's stage strides {list(self._strides)}"
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

    # ------------------------------------------------------------------------------ budgets
    def check_budgets(self, cost_fn: Callable[..., Any], num_classes: int = 10) -> None:
        """Raise :class:`ConfigError` when even the smallest candidate exceeds a budget."""
        if self._budgets.max_params is None and self._budgets.max_macs is None:
            return
        costs = [
            (a, cost_fn(a, image_size=self._image_size, num_classes=num_classes, in_chans=self._in_chans))
            for a in self.minimal_architectures()
        ]
        for key, attr, unit in (("max_params", "params", "parameters"), ("max_macs", "macs", "MACs")):
            limit = getattr(self._budgets, key)
            if limit is None:
                continue
            arch, cost = min(costs, key=lambda ac: getattr(ac[1], attr))
            smallest = int(getattr(cost, attr))
            if smallest > limit:
                raise ConfigError(
                    self._file,
                    f"space.budgets.{key}",
                    f"is below the cost of the smallest candidate ({arch}: {smallest:,} {unit}), so no candidate fits",
                    f"a value >= {smallest:,}, or null for no limit",
                    value=limit,
                )
        if all(
            (self._budgets.max_params is not None and c.params > self._budgets.max_params)
            or (self._budgets.max_macs is not None and c.macs > self._budgets.max_macs)
            for _, c in costs
        ):
            raise ConfigError(
                self._file,
                "space.budgets",
                "no minimal candidate fits both max_params and max_macs at once",
                "larger limits, or null for no limit",
                value=dataclasses.asdict(self._budgets),
            )

    # ---------------------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """Resolved canonical form (every choice list explicit and sorted)."""
        return {
            "input": {"image_size": self._image_size, "channels": self._in_chans},
            "stem": {
                "depth": list(self._stem.depth),
                "width": list(self._stem.width),
                **({"stride": self._stem_stride} if self._stem_stride != 2 else {}),
            },
            "stages": {
                s: {
                    "block": list(c.block),
                    "depth": list(c.depth),
                    "width": list(c.width),
                    **({"stride": stride} if stride != 2 else {}),  # the identity of earlier spaces holds
                }
                for (s, c), stride in zip(self._stages.items(), self._strides)
            },
            "rules": {
                "monotone": self._monotone,
                "non_decreasing_widths": self._nondec,
                "layouts": list(self._layouts),
            },
            "vit_rel": {"patch_size": list(self._patch_sizes)},
            "blocks": {k: list(v) for k, v in self._options.items()},
            "budgets": dataclasses.asdict(self._budgets),
        }

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def diff(self, other: SearchSpace) -> list[str]:
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

    # ------------------------------------------------------------------ the Optuna side: suggest, encode

    def suggest(self, trial: Any) -> Architecture:
        """Define-by-run sampling with ``trial.suggest_categorical`` only; always returns a valid candidate.

        Every parameter name has one fixed choice list: a width whose choices depend on the previous
        stage's width carries that width in its name (``S2.width|S1=48``).
        """
        layout = (
            trial.suggest_categorical("layout", list(self._layouts)) if len(self._layouts) > 1 else self._layouts[0]
        )
        patch = None
        if layout == VIT_REL:
            patch = (
                trial.suggest_categorical("vit_rel.patch_size", list(self._patch_sizes))
                if len(self._patch_sizes) > 1
                else self._patch_sizes[0]
            )
        names = ("S0", *STAGES)
        depths = []
        for name, ds in zip(names, self._depth_lists()):
            depths.append(trial.suggest_categorical(f"{name}.depth", list(ds)) if len(ds) > 1 else ds[0])
        widths, prev = [], None
        for i in range(len(names)):
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
