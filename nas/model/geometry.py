"""The shapes of a network without building it: feature-map sizes and the plan of its blocks. Torch-free.

The builder (``nas.model.builder``) and the cost model (``nas.model.cost``) both walk :func:`block_plan`, so
they agree on every block's letter, widths, stride and map sizes by construction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from nas.errors import UserError
from nas.model.arch import BLOCKS, Architecture


def downsampled(size: int, stride: int) -> int:
    """Spatial size after a stride-``stride`` op with 'same'-style padding."""
    return size if stride == 1 else math.ceil(size / stride)


def feature_sizes(arch: Architecture, image_size: int) -> list[int]:
    """Spatial size after S0, S1, .., S4 for a square ``image_size`` input."""
    if arch.is_vit:
        return [image_size // arch.patch_size] * 5
    sizes = [downsampled(image_size, arch.stem_stride)]
    for stride in arch.strides:
        sizes.append(downsampled(sizes[-1], stride))
    return sizes


def token_grid(arch: Architecture, image_size: int) -> str:
    """The feature map of each stage S1..S4, its side as text, ``/``-separated (``16/8/4/2``): what a transformer
    stage attends over (a ``T`` at side 2 attends over 4 tokens)."""
    return "/".join(str(s) for s in stage_sides(arch, image_size))


def stage_sides(arch: Architecture, image_size: int) -> list[int]:
    """The side of each stage's (S1..S4) output feature map for a square ``image_size`` input."""
    return feature_sizes(arch, image_size)[1:]


def small_attention(arch: Architecture, image_size: int, min_side: int = 4) -> list[tuple[int, int]]:
    """``(stage number 1..4, side)`` of each attention stage whose map is narrower than ``min_side``."""
    return [
        (i + 1, side)
        for i, (letter, side) in enumerate(zip(arch.layout, stage_sides(arch, image_size)))
        if BLOCKS[letter].attention and side < min_side
    ]


class BlockSlot(NamedTuple):
    """One block of stages S1-S4: ``stage`` 0..3 (S1..S4), ``index`` within the stage, ``number`` over all."""

    stage: int
    index: int
    number: int
    letter: str
    in_chs: int
    out_chs: int
    stride: int
    size_in: int
    size_out: int


def block_plan(arch: Architecture, image_size: int) -> list[BlockSlot]:
    """Every block of S1..S4 in order: the first of a stage changes width and has the stage's stride
    (``arch.strides``; 1 for ViT_REL)."""
    sizes = feature_sizes(arch, image_size)
    w, plan = arch.widths, []
    for i, letter in enumerate(arch.layout):
        for j in range(arch.depths[i + 1]):
            first = j == 0
            plan.append(
                BlockSlot(
                    stage=i,
                    index=j,
                    number=len(plan),
                    letter=letter,
                    in_chs=w[i] if first else w[i + 1],
                    out_chs=w[i + 1],
                    stride=(1 if arch.is_vit else arch.strides[i]) if first else 1,
                    size_in=sizes[i] if first else sizes[i + 1],
                    size_out=sizes[i + 1],
                )
            )
    return plan


def check_buildable(arch: Architecture, image_size: int) -> None:
    """Raise :class:`UserError` when ``arch`` cannot be built at ``image_size``: a map below 1x1, or an attention
    stage whose width does not split into heads."""
    sizes = feature_sizes(arch, image_size)
    if min(sizes) < 1:
        raise UserError(
            f"image size {image_size} is too small for {arch}: the feature map would shrink "
            f"below 1x1 (sizes after S0..S4: {sizes}). Use a larger image_size"
            + (" or a smaller patch size." if arch.is_vit else " (at least 16 px).")
        )
    head_dim = arch.options.head_dim
    for i, letter in enumerate(arch.layout):
        width = arch.widths[i + 1]
        heads = max(1, width // head_dim)
        if BLOCKS[letter].attention and width % heads:
            raise UserError(
                f"architecture {arch}: stage S{i + 1} width {width} does not split "
                f"into {heads} attention heads (width // head_dim {head_dim}); "
                f"use a width that is a multiple of head_dim or smaller than it."
            )
