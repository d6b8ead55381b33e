"""`build_model`: turn an :class:`Architecture` into a CoAtNet-style ``nn.Module``.

Layer names double as state-dict keys: ``stem.conv1``, ``stem.conv2`` (``stem.proj`` for ViT_REL),
``stages.{i}.blocks.{j}`` (``.attn`` inside transformer blocks) and ``head.fc``.
"""
from __future__ import annotations

import torch
from torch import nn

from .arch import Architecture, ModelConfig
from .errors import UserError
from .blocks import ConvStem, MBConvBlock, PatchStem, TransformerBlock, downsampled

__all__ = ["CoAtNet", "build_model", "feature_sizes"]


def feature_sizes(arch: Architecture, image_size: int) -> list[int]:
    """Spatial size after S0, S1, .., S4 for a square ``image_size`` input."""
    if arch.is_vit:
        return [image_size // arch.patch_size] * 5
    sizes = [downsampled(image_size, arch.stem_stride)]
    for _ in range(4):
        sizes.append(downsampled(sizes[-1], 2))
    return sizes


class Stage(nn.Module):
    """One stage: ``depth`` blocks of one type, the first changing width (and resolution)."""

    def __init__(self, block: str, in_chs: int, out_chs: int, depth: int, stride: int, feat_size: int,
                 arch: Architecture, drop_path: list[float]):
        super().__init__()
        opts = arch.options
        blocks = []
        for j in range(depth):
            chs, s = (in_chs, stride) if j == 0 else (out_chs, 1)
            if block == "C":
                blocks.append(MBConvBlock(chs, out_chs, s, opts.mbconv_expansion, opts.se_ratio, opts.downsample,
                                          drop_path[j]))
            else:
                blocks.append(TransformerBlock(chs, out_chs, (feat_size, feat_size), s, opts.head_dim,
                                               opts.ffn_expansion, opts.rel_attn, drop_path[j]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Head(nn.Module):
    """Global average pooling, LayerNorm, linear classifier."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_chs)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


class CoAtNet(nn.Module):
    """Stem S0, four stages S1-S4 (MBConv ``C`` or transformer ``T``), pooled linear head."""

    def __init__(self, arch: Architecture, num_classes: int = 1000, image_size: int = 224, in_chans: int = 3,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.arch, self.num_classes, self.image_size, self.in_chans = arch, num_classes, image_size, in_chans
        sizes = feature_sizes(arch, image_size)
        if min(sizes) < 1:
            raise UserError(f"image size {image_size} is too small for {arch}: the feature map would shrink "
                            f"below 1x1 (sizes after S0..S4: {sizes}). Use a larger image_size"
                            + (" or a smaller patch size." if arch.is_vit else " (at least 16 px)."))
        for i, block in enumerate(arch.layout):
            heads = max(1, arch.widths[i + 1] // arch.options.head_dim)
            if block == "T" and arch.widths[i + 1] % heads:
                raise UserError(f"architecture {arch}: stage S{i + 1} width {arch.widths[i + 1]} does not split "
                                f"into {heads} attention heads (width // head_dim {arch.options.head_dim}); "
                                f"use a width that is a multiple of head_dim or smaller than it.")
        widths, depths = arch.widths, arch.depths
        if arch.is_vit:
            self.stem = PatchStem(in_chans, widths[0], arch.patch_size)
        else:
            self.stem = ConvStem(in_chans, widths[0], depths[0], arch.stem_stride)
        total = sum(depths[1:])
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        stages, k = [], 0
        for i, block in enumerate(arch.layout):
            stride = 1 if arch.is_vit else 2
            stages.append(Stage(block, widths[i], widths[i + 1], depths[i + 1], stride, sizes[i + 1], arch,
                                rates[k:k + depths[i + 1]]))
            k += depths[i + 1]
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head = Head(self.num_features, num_classes)
        self._init_weights()
        # channels-last weights: convolutions then produce channels-last activations, 1.1-1.5x faster training
        # steps on CPU (docs/model.md; the trainer's CUDA default already); `model.to(memory_format=
        # torch.contiguous_format)` goes back to NCHW
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(arch: Architecture | ModelConfig | str, num_classes: int = 1000, image_size: int = 224,
                in_chans: int = 3, drop_path_rate: float = 0.0) -> CoAtNet:
    """Build the network for ``arch``: an :class:`Architecture`, a preset name (``"coatnet-0"``), the short
    string form (``"C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768"``) or a :class:`ModelConfig`, which supplies its
    own classes, size and channels."""
    if isinstance(arch, str):
        from . import presets
        arch = presets.get(arch) if arch in presets.names() or "=" not in arch else Architecture.parse(arch)
    if isinstance(arch, ModelConfig):
        arch, num_classes, image_size, in_chans = arch.arch, arch.num_classes, arch.image_size, arch.in_chans
    return CoAtNet(arch, num_classes=num_classes, image_size=image_size, in_chans=in_chans,
                   drop_path_rate=drop_path_rate)
