"""Parameters and multiply-accumulates (MACs) of an architecture, counted analytically.

No module is built and no tensor is allocated, so screening thousands of candidates takes milliseconds
(figures in ``docs/model.md``). Counted MACs are those of convolutions, linear layers and the two attention
matmuls (QK^T and AV), as ``torch.utils.flop_counter`` counts them (flops = 2 x MACs); norms, activations,
pooling and softmax are not counted. Tests check both numbers against the real module.

``BLOCK_COSTS`` maps each block letter of ``nas.model.arch.BLOCKS`` to its cost function; the blocks and their sizes
come from ``nas.model.geometry.block_plan``, the plan the builder follows too. Torch-free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from nas.model.arch import Architecture, BlockOptions, ModelConfig, check_block_table
from nas.model.geometry import block_plan, feature_sizes


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)

    def __str__(self) -> str:
        return f"{self.params / 1e6:.2f}M params, {self.macs / 1e6:.1f}M MACs"


def _conv(cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = True) -> Cost:
    weights = cout * (cin // groups) * k * k
    return Cost(weights + (cout if bias else 0), weights * hw)


def _linear(cin: int, cout: int, tokens: int) -> Cost:
    return Cost(cin * cout + cout, cin * cout * tokens)


def _mbconv(cin: int, cout: int, stride: int, size_in: int, size_out: int, o: BlockOptions) -> Cost:
    """``C``: nas.model.blocks.MBConvBlock."""
    mid = max(1, int(round(cout * o.mbconv_expansion)))
    hw_out = size_out * size_out
    hw1 = hw_out if (o.downsample == "conv1x1" or stride == 1) else size_in * size_in
    cost = Cost(2 * cin, 0)  # pre-norm BN
    if cin != cout:
        cost += _conv(cin, cout, 1, hw_out)
    cost += _conv(cin, mid, 1, hw1, bias=False) + Cost(2 * mid, 0)  # convs before a BN have no bias
    cost += _conv(mid, mid, 3, hw_out, groups=mid, bias=False) + Cost(2 * mid, 0)
    rd = int(round(cin * o.se_ratio))
    if o.se_ratio > 0 and rd > 0:
        cost += _conv(mid, rd, 1, 1) + _conv(rd, mid, 1, 1)
    return cost + _conv(mid, cout, 1, hw_out)


def _transformer(cin: int, cout: int, stride: int, size_in: int, size_out: int, o: BlockOptions) -> Cost:
    """``T``: nas.model.blocks.TransformerBlock (the stride only pools, so it adds no cost)."""
    n = size_out * size_out
    heads = max(1, cout // o.head_dim)
    hidden = max(1, int(round(cout * o.ffn_expansion)))
    cost = Cost(2 * cin + 2 * cout, 0)  # two LayerNorms
    if cin != cout:
        cost += _conv(cin, cout, 1, n)
    cost += _linear(cin, 3 * cout, n) + _linear(cout, cout, n)
    cost += Cost(0, 2 * n * n * cout)  # QK^T and AV over all heads
    if o.rel_attn != "none":
        cost += Cost(heads * (2 * size_out - 1) ** 2, 0)
    return cost + _linear(cout, hidden, n) + _linear(hidden, cout, n)


BlockCost = Callable[[int, int, int, int, int, BlockOptions], Cost]
"""``(cin, cout, stride, size_in, size_out, options) -> Cost`` of one block."""

BLOCK_COSTS: dict[str, BlockCost] = {"C": _mbconv, "T": _transformer}
"""Block letter -> its cost function; exactly the letters of ``nas.model.arch.BLOCKS`` (checked at import)."""
check_block_table(BLOCK_COSTS, "nas.model.cost.BLOCK_COSTS")


def _stem(arch: Architecture, size: int, in_chans: int) -> Cost:
    """S0: the conv stem (3x3 convs with BN between them) or ViT_REL's patchify conv."""
    w = arch.widths[0]
    if arch.is_vit:
        return _conv(in_chans, w, arch.patch_size, size**2)
    d = arch.depths[0]
    cost = _conv(in_chans, w, 3, size**2, bias=d == 1)  # a conv right before a BN has no bias
    for k in range(2, d + 1):
        cost += Cost(2 * w, 0) + _conv(w, w, 3, size**2, bias=k == d)
    return cost


@functools.lru_cache(maxsize=65536)
def _count(arch: Architecture, image_size: int, num_classes: int, in_chans: int) -> Cost:
    cost = _stem(arch, feature_sizes(arch, image_size)[0], in_chans)
    for s in block_plan(arch, image_size):
        cost += BLOCK_COSTS[s.letter](s.in_chs, s.out_chs, s.stride, s.size_in, s.size_out, arch.options)
    cost += Cost(2 * arch.widths[4], 0)
    if num_classes > 0:
        cost += _linear(arch.widths[4], num_classes, 1)
    return cost


def count_cost(
    arch: Architecture | ModelConfig, image_size: int = 224, num_classes: int = 1000, in_chans: int = 3
) -> Cost:
    """Parameters and MACs of ``arch`` at ``image_size`` (a ModelConfig brings its own sizes). Cached."""
    if isinstance(arch, ModelConfig):
        arch, image_size, num_classes, in_chans = arch.arch, arch.image_size, arch.num_classes, arch.in_chans
    return _count(arch, image_size, num_classes, in_chans)


def clear_cost_cache() -> None:
    """Forget the cached costs (benchmarks time a cold count)."""
    _count.cache_clear()
