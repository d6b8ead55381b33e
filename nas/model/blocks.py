"""CoAtNet building blocks: stems, MBConv, relative-attention transformer block; ``BLOCK_MODULES`` maps each
block letter of ``nas.model.arch.BLOCKS`` to the module that implements it.

Shapes are NCHW between blocks. Every stride-2 op uses kernel 3 / padding 1 (or kernel 1 / padding 0),
so an H x H map becomes ceil(H / 2) on both the residual and the shortcut path, odd sizes included.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.model.arch import BlockOptions, check_block_table


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


def fold_conv_bias(state_dict: dict, prefix: str, conv: str, norm: str) -> None:
    """Fold ``{conv}.bias`` of an older checkpoint into the running mean of the BatchNorm after it.

    ``BN(conv(x) + b)`` equals ``BN'(conv(x))`` with ``running_mean' = running_mean - b`` (in training the
    batch mean absorbs ``b``), so a state dict saved before the conv lost its bias loads exactly.
    """
    bias = state_dict.pop(prefix + conv + ".bias", None)
    mean = prefix + norm + ".running_mean"
    if bias is not None and mean in state_dict:
        state_dict[mean] = state_dict[mean] - bias.to(state_dict[mean].dtype)


class ConvStem(nn.Module):
    """S0: ``depth`` 3x3 convs (the paper: two), the first with stride ``stride`` (the paper: 2), BN + GELU
    between them.

    Layers are ``conv1``, ``norm1``, ``act1``, ``conv2``, ... so a two-conv stem has the usual
    ``stem.conv1`` / ``stem.conv2`` keys.
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int = 2, stride: int = 2):
        super().__init__()
        self.depth = depth
        for k in range(1, depth + 1):
            # a conv followed by BatchNorm needs no bias (BN's shift absorbs it); the last one keeps its bias
            self.add_module(
                f"conv{k}",
                nn.Conv2d(
                    in_chs if k == 1 else out_chs,
                    out_chs,
                    3,
                    stride=stride if k == 1 else 1,
                    padding=1,
                    bias=k == depth,
                ),
            )
            if k < depth:
                self.add_module(f"norm{k}", nn.BatchNorm2d(out_chs))
                self.add_module(f"act{k}", nn.GELU())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for k in range(1, self.depth):
            fold_conv_bias(state_dict, prefix, f"conv{k}", f"norm{k}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, self.depth + 1):
            x = getattr(self, f"conv{k}")(x)
            if k < self.depth:
                x = getattr(self, f"act{k}")(getattr(self, f"norm{k}")(x))
        return x


class PatchStem(nn.Module):
    """ViT stem: non-overlapping ``patch_size`` x ``patch_size`` patches projected to ``out_chs``."""

    def __init__(self, in_chs: int, out_chs: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample2d(nn.Module):
    """Shortcut ``Proj(Pool(x))``: optional stride-2 pool, then a 1x1 projection when widths differ."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, pool: str = "max"):
        super().__init__()
        if stride == 1:
            self.pool = nn.Identity()
        elif pool == "max":
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.proj = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation on ``chs`` channels with a ``rd_chs`` bottleneck."""

    def __init__(self, chs: int, rd_chs: int):
        super().__init__()
        self.fc1 = nn.Conv2d(chs, rd_chs, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(rd_chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (identity at eval or rate 0)."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype) >= self.rate
        return x * keep / (1 - self.rate)


class MBConvBlock(nn.Module):
    """Pre-activation MBConv: ``x + Conv1x1(SE(DWConv3x3(Conv1x1(BN(x)))))``.

    A stride-2 block is ``Proj(Pool(x)) + Conv(DepthConv(Conv(Norm(x), stride=2)))`` (paper Eq. 5), with the
    stride on the first 1x1 conv (``downsample="conv1x1"``) or on the depthwise conv (``"dwconv"``).
    The expanded width is ``out_chs * expansion``; the SE bottleneck is ``in_chs * se_ratio``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        expansion: float = 4.0,
        se_ratio: float = 0.25,
        downsample: str = "conv1x1",
        drop_path: float = 0.0,
    ):
        super().__init__()
        mid = max(1, int(round(out_chs * expansion)))
        s1, s2 = (stride, 1) if downsample == "conv1x1" else (1, stride)
        self.shortcut = Downsample2d(in_chs, out_chs, stride, pool="avg")
        self.norm = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid, 1, stride=s1, bias=False)  # no bias before BN (as timm)
        self.norm1 = nn.BatchNorm2d(mid)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=s2, padding=1, groups=mid, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.act2 = nn.GELU()
        rd = int(round(in_chs * se_ratio))
        self.se = SqueezeExcite(mid, rd) if se_ratio > 0 and rd > 0 else nn.Identity()
        self.conv3 = nn.Conv2d(mid, out_chs, 1)
        self.drop_path = DropPath(drop_path)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        fold_conv_bias(state_dict, prefix, "conv1", "norm1")
        fold_conv_bias(state_dict, prefix, "conv2", "norm2")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(self.norm(x))))
        y = self.se(self.act2(self.norm2(self.conv2(y))))
        return self.shortcut(x) + self.drop_path(self.conv3(y))


def rel_pos_index(height: int, width: int) -> torch.Tensor:
    """(N, N) index into a flattened (2H-1) x (2W-1) table: the offset between positions i and j."""
    coords = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    return (rel[0] + height - 1) * (2 * width - 1) + (rel[1] + width - 1)


class RelPosAttention(nn.Module):
    """Multi-head self-attention with a learned 2-D relative position bias (paper Eq. 3).

    The bias is a per-head table of (2H-1) x (2W-1) entries indexed by the offset between two positions.
    ``rel_attn="pre"`` adds it to the logits before softmax (through ``scaled_dot_product_attention`` with
    the bias as ``attn_mask``), ``"post"`` adds it to the attention weights after softmax, ``"none"`` drops it.
    Loading a state dict made for another feature size resizes the table bilinearly.
    """

    def __init__(
        self, in_chs: int, out_chs: int, feat_size: tuple[int, int], head_dim: int = 32, rel_attn: str = "pre"
    ):
        super().__init__()
        self.num_heads = max(1, out_chs // head_dim)
        self.head_dim = out_chs // self.num_heads
        if self.head_dim * self.num_heads != out_chs:
            raise ValueError(f"width {out_chs} is not divisible into {self.num_heads} heads")
        self.rel_attn = rel_attn
        self.feat_size = tuple(feat_size)
        self.qkv = nn.Linear(in_chs, 3 * out_chs)
        self.proj = nn.Linear(out_chs, out_chs)
        if rel_attn != "none":
            h, w = self.feat_size
            self.rel_bias = nn.Parameter(torch.zeros(self.num_heads, 2 * h - 1, 2 * w - 1))
            nn.init.trunc_normal_(self.rel_bias, std=0.02)
            self.register_buffer("rel_index", rel_pos_index(h, w), persistent=False)

    def bias(self) -> torch.Tensor:
        """The (heads, N, N) bias matrix gathered from the table."""
        return self.rel_bias.flatten(1)[:, self.rel_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, N, C_in) tokens in row-major order of the feature map."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.rel_attn == "pre" and q.device.type == "cpu":
            # on CPU the plain matmul-softmax is faster than SDPA with a float bias (docs/model.md)
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + self.bias().to(q.dtype)
            out = attn.softmax(-1) @ v
        elif self.rel_attn == "pre":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias().to(q.dtype))
        elif self.rel_attn == "post":
            attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            out = (attn.softmax(-1) + self.bias().to(q.dtype)) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "rel_bias"
        if key in state_dict and hasattr(self, "rel_bias") and state_dict[key].shape != self.rel_bias.shape:
            table = state_dict[key]
            state_dict[key] = F.interpolate(
                table[None].float(), size=self.rel_bias.shape[1:], mode="bilinear", align_corners=True
            )[0].to(table.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Mlp(nn.Module):
    """Transformer FFN: Linear, GELU, Linear."""

    def __init__(self, chs: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(chs, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over a feature map.

    Stride 2: ``Proj(Pool(x)) + Attention(Pool(Norm(x)))`` with 3x3/2 max pooling, then ``x + FFN(Norm(x))``.
    ``feat_size`` is the map size after the stride.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        feat_size: tuple[int, int],
        stride: int = 1,
        head_dim: int = 32,
        ffn_expansion: float = 4.0,
        rel_attn: str = "pre",
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.shortcut = Downsample2d(in_chs, out_chs, stride, pool="max")
        self.norm1 = LayerNorm2d(in_chs)
        self.pool = nn.MaxPool2d(3, stride=stride, padding=1) if stride > 1 else nn.Identity()
        self.attn = RelPosAttention(in_chs, out_chs, feat_size, head_dim, rel_attn)
        self.norm2 = nn.LayerNorm(out_chs)
        self.mlp = Mlp(out_chs, max(1, int(round(out_chs * ffn_expansion))))
        self.drop_path1 = DropPath(drop_path)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.norm1(x))
        b, _, h, w = y.shape
        y = self.attn(y.flatten(2).transpose(1, 2))  # B, N, C_out
        x = self.shortcut(x) + self.drop_path1(y.transpose(1, 2).reshape(b, -1, h, w))
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path2(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(b, -1, h, w)


# ----------------------------------------------------------------------------------------- block letters
BlockFactory = Callable[[int, int, int, int, BlockOptions, float], nn.Module]
"""``(in_chs, out_chs, stride, feat_size, options, drop_path) -> block``; ``feat_size`` is the map size after
the stride."""


def _mbconv(in_chs: int, out_chs: int, stride: int, feat_size: int, o: BlockOptions, drop_path: float) -> nn.Module:
    return MBConvBlock(in_chs, out_chs, stride, o.mbconv_expansion, o.se_ratio, o.downsample, drop_path)


def _transformer(
    in_chs: int, out_chs: int, stride: int, feat_size: int, o: BlockOptions, drop_path: float
) -> nn.Module:
    return TransformerBlock(
        in_chs, out_chs, (feat_size, feat_size), stride, o.head_dim, o.ffn_expansion, o.rel_attn, drop_path
    )


BLOCK_MODULES: dict[str, BlockFactory] = {"C": _mbconv, "T": _transformer}
"""Block letter -> the factory of its module; exactly the letters of ``nas.model.arch.BLOCKS`` (checked at import)."""
check_block_table(BLOCK_MODULES, "nas.model.blocks.BLOCK_MODULES")
