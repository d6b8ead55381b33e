"""Cost model: exact against the real module and the flop counter; caching; round trips."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas import Architecture, BlockOptions, build_model
from nas.model.arch import ModelConfig
from nas.model.cost import count_cost
from nas.model.geometry import feature_sizes

torch.set_num_threads(1)


def tiny(layout: str, options: BlockOptions = BlockOptions()) -> Architecture:
    return dataclasses.replace(Architecture.parse(f"{layout} L=2,1,2,1,1 D=16,16,32,32,64"), options=options)


@pytest.mark.parametrize(
    "arch",
    [
        tiny("C-C-T-T"),
        Architecture.parse("C-C-C-T L=3,1,1,1,1 D=8,8,16,16,32"),
        Architecture.parse("C-C-C-T L=1,1,1,1,1 D=8,8,16,16,32"),
        tiny("C-T-T-T", BlockOptions(rel_attn="post", downsample="dwconv", se_ratio=0.0)),
        tiny("C-C-C-C"),
        Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,64,64 patch=4"),
        Architecture.parse("C-C-T-T L=2,1,1,2,1 D=16,16,32,32,64 strides=2,2,1,2"),
        Architecture.parse("C-T-T-T L=2,1,1,1,2 D=16,16,32,32,64 strides=1,2,2,1", BlockOptions(downsample="dwconv")),
    ],
    ids=str,
)
def test_cost_matches_real_module(arch):
    model = build_model(arch, num_classes=10, image_size=32, in_chans=1).eval()
    cost = count_cost(arch, image_size=32, num_classes=10, in_chans=1)
    assert cost.params == sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 1, 32, 32))
    assert cost.macs == counter.get_total_flops() // 2


def test_cost_accepts_model_config_and_grows_with_size():
    arch = tiny("C-C-T-T")
    assert count_cost(ModelConfig(arch, 10, 64, 1)) == count_cost(arch, 64, 10, 1)
    assert count_cost(arch, 64, 10, 1).macs > count_cost(arch, 32, 10, 1).macs
    assert count_cost(arch, 64, 10, 1).params > count_cost(arch, 32, 10, 1).params  # bigger bias tables


def test_cost_is_cached():
    arch = tiny("C-T-T-T")
    assert count_cost(arch, 32, 10, 1) is count_cost(arch, 32, 10, 1)


def test_round_trip_preserves_id_and_params():
    arch = tiny("C-T-T-T", BlockOptions(rel_attn="post"))
    back = Architecture.from_dict(arch.to_dict())
    assert back.id == arch.id
    assert count_cost(back, 32, 10).params == sum(p.numel() for p in build_model(back, 10, 32).parameters())
    assert count_cost(back, 32, 10) == count_cost(arch, 32, 10)


def test_yaml_round_trip_preserves_id_and_params(tmp_path):
    from nas.export.model_config import load_model_config, save_model_config

    cfg = ModelConfig(tiny("C-C-T-T", BlockOptions(downsample="dwconv", se_ratio=0.0)), 10, 32, 1)
    back = load_model_config(save_model_config(cfg, tmp_path / "m.yaml"))
    assert back.arch.id == cfg.arch.id
    assert count_cost(back) == count_cost(cfg)
    assert sum(p.numel() for p in build_model(back).parameters()) == count_cost(cfg).params


def test_stride_one_stem_keeps_twice_the_resolution_and_the_cost_model_follows():
    arch = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64 stem_stride=1")
    assert feature_sizes(arch, 32) == [32, 16, 8, 4, 2]
    assert feature_sizes(dataclasses.replace(arch, stem_stride=2), 32) == [16, 8, 4, 2, 1]
    test_cost_matches_real_module(arch)
    assert count_cost(arch, 32, 10, 1).macs > 3 * count_cost(dataclasses.replace(arch, stem_stride=2), 32, 10, 1).macs


def test_a_stride_one_stage_keeps_its_map_and_the_cost_model_follows():
    """``strides=2,2,1,2``: S3 keeps S2's 4x4 map at 32 px, so a T there attends over 16 tokens; the network's
    maps are those the geometry says, and the MACs grow (S3 and S4 run on 4x the positions)."""
    arch = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64 strides=2,2,1,2")
    base = dataclasses.replace(arch, strides=(2, 2, 2, 2))
    assert feature_sizes(arch, 32) == [16, 8, 4, 4, 2] and feature_sizes(base, 32) == [16, 8, 4, 2, 1]
    model = build_model(arch, num_classes=10, image_size=32, in_chans=1).eval()
    x, sides = model.stem(torch.randn(1, 1, 32, 32)), []
    for stage in model.stages:
        x = stage(x)
        sides.append(x.shape[-1])
    assert sides == feature_sizes(arch, 32)[1:]
    assert count_cost(arch, 32, 10, 1).macs > 1.2 * count_cost(base, 32, 10, 1).macs
    assert count_cost(arch, 32, 10, 1).params > count_cost(base, 32, 10, 1).params  # larger bias tables
