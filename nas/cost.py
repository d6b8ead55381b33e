"""Parameters and multiply-accumulates (MACs) of an architecture, counted analytically.

No module is built and no tensor is allocated, so screening thousands of candidates takes milliseconds
(figures in ``docs/model.md``). Counted MACs are those of convolutions, linear layers and the two attention
matmuls (QK^T and AV), as ``torch.utils.flop_counter`` counts them (flops = 2 x MACs); norms, activations,
pooling and softmax are not counted. Tests check both numbers against the real module.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .arch import Architecture, ModelConfig

__all__ = ["Cost", "count_cost"]


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)

    def __str__(self) -> str:
        return f"{self.params / 1e6:.2f}M params, {self.macs / 1e6:.1f}M MACs"


def _conv(cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = True) -> Cost:
    weights = cout * (cin // groups) * k * k
    return Cost(weights + (cout if bias else 0), weights * hw)


def _linear(cin: int, cout: int, tokens: int) -> Cost:
    return Cost(cin * cout + cout, cin * cout * tokens)


def _mbconv(cin: int, cout: int, stride: int, size_in: int, size_out: int, arch: Architecture) -> Cost:
    o = arch.options
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


def _transformer(cin: int, cout: int, size_out: int, arch: Architecture) -> Cost:
    o = arch.options
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


@functools.lru_cache(maxsize=65536)
def _count(arch: Architecture, image_size: int, num_classes: int, in_chans: int) -> Cost:
    from .model import feature_sizes  # pure arithmetic; no module is built

    sizes = feature_sizes(arch, image_size)
    w, d = arch.widths, arch.depths
    if arch.is_vit:
        cost = _conv(in_chans, w[0], arch.patch_size, sizes[0] ** 2)
    else:
        cost = _conv(in_chans, w[0], 3, sizes[0] ** 2, bias=d[0] == 1)  # a conv before a BN has no bias
        for k in range(2, d[0] + 1):
            cost += Cost(2 * w[0], 0) + _conv(w[0], w[0], 3, sizes[0] ** 2, bias=k == d[0])
    for i, block in enumerate(arch.layout):
        stride = 1 if arch.is_vit else 2
        for j in range(d[i + 1]):
            cin, s = (w[i], stride) if j == 0 else (w[i + 1], 1)
            size_in = sizes[i] if j == 0 else sizes[i + 1]
            if block == "C":
                cost += _mbconv(cin, w[i + 1], s, size_in, sizes[i + 1], arch)
            else:
                cost += _transformer(cin, w[i + 1], sizes[i + 1], arch)
    cost += Cost(2 * w[4], 0)
    if num_classes > 0:
        cost += _linear(w[4], num_classes, 1)
    return cost


def count_cost(arch: Architecture | ModelConfig, image_size: int = 224, num_classes: int = 1000,
               in_chans: int = 3) -> Cost:
    """Parameters and MACs of ``arch`` at ``image_size`` (a ModelConfig brings its own sizes). Cached."""
    if isinstance(arch, ModelConfig):
        arch, image_size, num_classes, in_chans = arch.arch, arch.image_size, arch.num_classes, arch.in_chans
    return _count(arch, image_size, num_classes, in_chans)
