"""`build_model`: turn an :class:`Architecture` into a CoAtNet-style ``nn.Module``.

Layer names double as state-dict keys: ``stem.conv1``, ``stem.conv2`` (``stem.proj`` for ViT_REL),
``stages.{i}.blocks.{j}`` (``.attn`` inside transformer blocks) and ``head.fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.model.arch import Architecture, BlockOptions, ModelConfig
from nas.model.blocks import BLOCK_MODULES, ConvStem, PatchStem
from nas.model.geometry import BlockSlot, block_plan, check_buildable


class Stage(nn.Module):
    """One stage: its blocks (``slots`` from :func:`nas.model.geometry.block_plan`), the first changing width (and
    resolution); each block made by ``nas.model.blocks.BLOCK_MODULES`` for its letter."""

    def __init__(self, slots: list[BlockSlot], options: BlockOptions, drop_path: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                BLOCK_MODULES[s.letter](s.in_chs, s.out_chs, s.stride, s.size_out, options, rate)
                for s, rate in zip(slots, drop_path)
            )
        )

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
    """Stem S0, four stages S1-S4 (each of one block letter of ``nas.model.arch.BLOCKS``), pooled linear head."""

    def __init__(
        self,
        arch: Architecture,
        num_classes: int = 1000,
        image_size: int = 224,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.arch, self.num_classes, self.image_size, self.in_chans = arch, num_classes, image_size, in_chans
        check_buildable(arch, image_size)
        widths, depths = arch.widths, arch.depths
        if arch.is_vit:
            self.stem = PatchStem(in_chans, widths[0], arch.patch_size)
        else:
            self.stem = ConvStem(in_chans, widths[0], depths[0], arch.stem_stride)
        plan, stages = block_plan(arch, image_size), []
        for i in range(4):
            slots = [s for s in plan if s.stage == i]
            rates = [drop_path_rate * s.number / max(1, len(plan) - 1) for s in slots]
            stages.append(Stage(slots, arch.options, rates))
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


def build_model(
    arch: Architecture | ModelConfig | str,
    num_classes: int = 1000,
    image_size: int = 224,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
) -> CoAtNet:
    """Build the network for ``arch``: an :class:`Architecture`, a preset name (``"coatnet-0"``), the short
    string form (``"C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768"``) or a :class:`ModelConfig`, which supplies its
    own classes, size and channels."""
    if isinstance(arch, str):
        import nas.model.presets as presets

        arch = presets.get(arch) if arch in presets.names() or "=" not in arch else Architecture.parse(arch)
    if isinstance(arch, ModelConfig):
        arch, num_classes, image_size, in_chans = arch.arch, arch.num_classes, arch.image_size, arch.in_chans
    return CoAtNet(
        arch, num_classes=num_classes, image_size=image_size, in_chans=in_chans, drop_path_rate=drop_path_rate
    )
