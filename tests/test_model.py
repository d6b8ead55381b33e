"""Model builder: every layout/option builds and trains a step; attention maths; state-dict behaviour."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from nas import Architecture, BlockOptions, build_model
from nas.errors import UserError
from nas.model.arch import ModelConfig
from nas.model.blocks import RelPosAttention, rel_pos_index

torch.set_num_threads(1)

LAYOUTS = ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "T-T-T-T", "T-C-T-C"]
OPTIONS = [
    BlockOptions(),
    BlockOptions(rel_attn="post"),
    BlockOptions(rel_attn="none"),
    BlockOptions(downsample="dwconv"),
    BlockOptions(se_ratio=0.0),
    BlockOptions(mbconv_expansion=2.0, ffn_expansion=2.0, head_dim=8),
]


def tiny(layout: str, options: BlockOptions = BlockOptions()) -> Architecture:
    return dataclasses.replace(Architecture.parse(f"{layout} L=2,1,2,1,1 D=16,16,32,32,64"), options=options)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize(
    "arch",
    [tiny(l) for l in LAYOUTS]
    + [tiny("C-C-T-T", o) for o in OPTIONS]
    + [Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,64,64 patch=8")],
    ids=str,
)
def test_builds_and_trains_a_step(arch, size):
    model = build_model(arch, num_classes=7, image_size=size, in_chans=1)
    x = torch.randn(2, 1, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features == arch.widths[-1]
    assert model.forward_head(feats, pre_logits=True).shape == (2, arch.widths[-1])


def test_state_dict_names():
    keys = build_model(tiny("C-C-T-T"), num_classes=3, image_size=32).state_dict().keys()
    for expected in (
        "stem.conv1.weight",
        "stem.conv2.weight",
        "stages.0.blocks.0.conv1.weight",
        "stages.2.blocks.0.attn.qkv.weight",
        "stages.2.blocks.0.attn.rel_bias",
        "head.fc.weight",
    ):
        assert expected in keys
    three = build_model(Architecture.parse("C-C-C-T L=3,1,1,1,1 D=8,8,16,16,32"), 3, 32).state_dict()
    assert "stem.conv3.weight" in three and "stem.norm2.weight" in three
    one = build_model(Architecture.parse("C-C-C-T L=1,1,1,1,1 D=8,8,16,16,32"), 3, 32).state_dict()
    assert not any(k.startswith(("stem.conv2", "stem.norm1")) for k in one)
    vit = build_model(Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=4"), 3, 32)
    assert "stem.proj.weight" in vit.state_dict()


def test_relative_bias_depends_only_on_offset():
    attn = RelPosAttention(32, 32, (4, 5), head_dim=8)
    bias = attn.bias().detach()  # heads, N, N
    assert bias.shape == (4, 20, 20)
    pos = list(itertools.product(range(4), range(5)))
    for h in range(4):
        for (i, (ai, aj)), (j, (bi, bj)) in itertools.product(enumerate(pos), repeat=2):
            assert bias[h, i, j] == attn.rel_bias[h, ai - bi + 3, aj - bj + 4]
    # Heads and layers have their own tables.
    assert not torch.equal(bias[0], bias[1])
    other = RelPosAttention(32, 32, (4, 5), head_dim=8)
    assert not torch.equal(other.rel_bias, attn.rel_bias)


def test_translation_property_of_index():
    idx = rel_pos_index(3, 3)
    # positions (0,0)->(1,1) and (1,1)->(2,2) share an offset, so share the table entry
    assert idx[0, 4] == idx[4, 8] and idx[0, 4] != idx[4, 0]


def test_rel_attn_variants_differ_for_same_weights():
    torch.manual_seed(0)
    base = tiny("C-C-T-T")
    models = {
        v: build_model(dataclasses.replace(base, options=BlockOptions(rel_attn=v)), 5, 32).eval()
        for v in ("pre", "post", "none")
    }
    state = models["pre"].state_dict()
    for v in ("post", "none"):
        models[v].load_state_dict(state, strict=(v != "none"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = {v: m(x) for v, m in models.items()}
    assert not torch.allclose(outs["pre"], outs["post"], atol=1e-5)
    assert not torch.allclose(outs["pre"], outs["none"], atol=1e-5)
    # With a zero table, pre and none must agree exactly: the bias is the only difference.
    with torch.no_grad():
        for m in models["pre"].modules():
            if isinstance(m, RelPosAttention):
                m.rel_bias.zero_()
        assert torch.allclose(models["pre"](x), models["none"](x), atol=1e-5)


def test_pre_bias_matches_explicit_softmax():
    attn = RelPosAttention(16, 16, (3, 3), head_dim=8)
    x = torch.randn(2, 9, 16)
    q, k, v = attn.qkv(x).reshape(2, 9, 3, 2, 8).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-2, -1)) / 8**0.5 + attn.bias()).softmax(-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(2, 9, 16))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_state_dict_from_other_resolution_resizes_tables():
    arch = tiny("C-C-T-T")
    small, large = build_model(arch, 5, 32), build_model(arch, 5, 64)
    key = "stages.2.blocks.0.attn.rel_bias"
    assert small.state_dict()[key].shape != large.state_dict()[key].shape
    large.load_state_dict(small.state_dict())
    table = large.state_dict()[key]
    assert table.shape == (1, 7, 7)
    # Bilinear with aligned corners keeps the corner entries of the source table.
    src = small.state_dict()[key]
    assert torch.allclose(table[:, 0, 0], src[:, 0, 0]) and torch.allclose(table[:, -1, -1], src[:, -1, -1])
    assert large(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_model_config_is_accepted():
    cfg = ModelConfig(tiny("C-T-T-T"), num_classes=4, image_size=64, in_chans=1)
    model = build_model(cfg)
    assert (model.num_classes, model.image_size, model.in_chans) == (4, 64, 1)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 4)


def test_too_small_image_is_refused():
    with pytest.raises(UserError, match="too small"):
        build_model(Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=16"), 3, 8)
    with pytest.raises(UserError, match="attention heads"):
        build_model(Architecture.parse("C-C-T-T L=1,1,1,1,1 D=16,16,32,100,32"), 3, 32)


def test_32px_reaches_a_1x1_map():
    model = build_model(tiny("C-C-T-T"), 3, 32)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 1, 1)
