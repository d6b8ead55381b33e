"""The layouts a ``space:`` section allows: a block letter per stage S1-S4 (or the ``ViT_REL`` baseline), as
the stage block choices and ``rules`` (``monotone``, a fixed ``layouts`` list) permit. Called by
``nas.space.reading.parse_space``."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from nas.errors import ConfigError
from nas.model.arch import BLOCKS, VIT_BLOCK, VIT_REL, check_layout
from nas.space.choices import STAGES, StageChoices


def parse_layout(text: Any, file: str | None, key: str) -> str:
    """One layout of ``rules.layouts`` (``C-C-T-T`` or ``ViT_REL``), each letter checked."""
    if text == VIT_REL:
        return VIT_REL
    letters = text.split("-") if isinstance(text, str) else ()
    return "-".join(check_layout(letters, file, key, text))


def block_order() -> str:
    """``C before T``: the order ``rules.monotone`` keeps along S1..S4 (letters of equal order joined by /)."""
    orders = sorted({k.order for k in BLOCKS.values()})
    return " before ".join("/".join(b for b, k in BLOCKS.items() if k.order == o) for o in orders)


def layout_problem(layout: str, stages: Mapping[str, StageChoices], monotone: bool) -> str | None:
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


def valid_layouts(
    stages: Mapping[str, StageChoices],
    fixed: list[str] | None,
    monotone: bool,
    file: str | None,
    include_vit: bool = False,
) -> list[str]:
    """Layouts allowed by the stage block choices and the rules; error when none (or a fixed one) is."""
    if fixed is not None:
        for i, layout in enumerate(fixed):
            why = layout_problem(layout, stages, monotone)
            if why:
                raise ConfigError(
                    file,
                    f"space.rules.layouts[{i}]",
                    f"contradicts the stage choices: {why}",
                    "layouts whose stages use allowed block letters"
                    + (f" and, with rules.monotone, keep the order {block_order()}" if monotone else ""),
                    value=layout,
                )
        return fixed
    combos = ["-".join(p) for p in itertools.product(*(stages[s].block for s in STAGES))]
    out = [l for l in combos if layout_problem(l, stages, monotone) is None]
    if include_vit:
        why = layout_problem(VIT_REL, stages, monotone)
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
            f"combination breaks the order {block_order()} (e.g. {combos[0]}: "
            f"{layout_problem(combos[0], stages, monotone)})",
            f"block choices that allow stages in the order {block_order()}, or monotone: false",
            value=True,
        )
    return out
