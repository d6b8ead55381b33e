"""Architecture / ModelConfig contracts: canonical string, stable id, round trips, validation."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from nas.errors import ConfigError
from nas.export.model_config import load_model_config, save_model_config
from nas.model.arch import Architecture, BlockOptions, ModelConfig

C0 = "C-C-T-T L=2,2,3,5,2 D=64,96,192,384,768"


def test_string_form_and_parse_round_trip():
    arch = Architecture.parse(C0)
    assert str(arch) == C0
    assert arch.layout == ("C", "C", "T", "T")
    assert arch.depths == (2, 2, 3, 5, 2) and arch.widths == (64, 96, 192, 384, 768)
    assert Architecture.parse(str(arch)) == arch


def test_non_default_options_enter_the_string_and_the_id():
    base = Architecture.parse(C0)
    post = dataclasses.replace(base, options=BlockOptions(rel_attn="post", se_ratio=0.0))
    assert "rel_attn=post" in str(post) and "se_ratio=0.0" in str(post)
    assert post.id != base.id
    assert Architecture.parse(str(post)) == post


def test_id_is_stable_and_depends_only_on_content():
    a = Architecture(layout=["C", "C", "T", "T"], depths=[2, 2, 3, 5, 2], widths=[64, 96, 192, 384, 768])
    b = Architecture.parse(C0)
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert len(a.id) == 12 and int(a.id, 16) >= 0
    assert Architecture.parse("C-C-T-T L=2,2,3,5,2 D=64,96,192,384,512").id != a.id


def test_vit_rel_round_trip():
    vit = Architecture.parse("ViT_REL L=1,2,2,2,2 D=64,64,64,64,64 patch=4")
    assert vit.is_vit and vit.layout == ("T",) * 4 and vit.patch_size == 4
    assert Architecture.from_dict(vit.to_dict()) == vit
    assert Architecture.from_dict(yaml.safe_load(yaml.safe_dump(vit.to_dict()))).id == vit.id


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"layout": "C-X-T-T", "depths": [1] * 5, "widths": [8] * 5}, "architecture.layout"),
        ({"layout": "C-C-T", "depths": [1] * 5, "widths": [8] * 5}, "architecture.layout"),
        ({"layout": "C-C-T-T", "depths": [1] * 4, "widths": [8] * 5}, "architecture.depths"),
        ({"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8, 8, 8, 8, 0]}, "architecture.widths"),
        ({"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8] * 5, "colour": 1}, "architecture.colour"),
        (
            {"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8] * 5, "options": {"rel_attn": "mid"}},
            "architecture.options.rel_attn",
        ),
        (
            {"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8] * 5, "options": {"se_ratio": 2}},
            "architecture.options.se_ratio",
        ),
        ({"depths": [1] * 5, "widths": [8] * 5}, "architecture.layout"),
    ],
)
def test_from_dict_errors_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as info:
        Architecture.from_dict(data, file="m.yaml")
    assert "m.yaml" in str(info.value) and fragment in str(info.value)


def test_model_config_yaml_round_trip(tmp_path):
    cfg = ModelConfig(
        Architecture.parse(C0), num_classes=10, image_size=32, in_chans=1, provenance={"run": "r1", "trial": 3}
    )
    path = save_model_config(cfg, tmp_path / "sub" / "model.yaml")
    back = load_model_config(path)
    assert back == cfg and back.provenance == {"run": "r1", "trial": 3}
    assert not list(tmp_path.glob("sub/*.tmp"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "architecture: {layout: C-C-T-T, depths: [1,1,1,1,1], widths: [8,8,8,8,8]}\nimage_size: 4\n"
            "num_classes: 10\n",
            "image_size",
        ),
        ("architecture: {layout: C-C-T-T, depths: [1,1,1,1,1], widths: [8,8,8,8,8]}\nimage_size: 32\n", "num_classes"),
        ("image_size: 32\nnum_classes: 10\n", "architecture"),
        ("architecture: [1, 2]\nimage_size: 32\nnum_classes: 10\n", "architecture"),
        ("[unclosed\n", "not valid YAML"),
    ],
)
def test_model_config_errors(tmp_path, text, fragment):
    from nas.errors import UserError

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_model_config(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_model_config_file(tmp_path):
    from nas.errors import UserError

    with pytest.raises(UserError, match="no such model config"):
        load_model_config(tmp_path / "nope.yaml")


def test_stem_stride_enters_string_id_dict_and_parse():
    base = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64")
    one = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64 stem_stride=1")
    assert one.stem_stride == 1 and base.stem_stride == 2
    assert str(one).endswith("stem_stride=1") and "stem_stride" not in str(base)
    assert one.id != base.id
    assert Architecture.from_dict(one.to_dict()) == one and "stem_stride" not in base.to_dict()
    assert Architecture.parse(str(one)) == one
    with pytest.raises(ConfigError, match="stem_stride"):
        Architecture.from_dict({**one.to_dict(), "stem_stride": 4})
    with pytest.raises(ConfigError, match="2 for ViT_REL"):
        Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=8 stem_stride=1")


def test_stage_strides_enter_string_id_dict_and_parse():
    base = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64")
    s3 = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64 strides=2,2,1,2")
    assert s3.strides == (2, 2, 1, 2) and base.strides == (2, 2, 2, 2)
    assert str(s3).endswith("strides=2,2,1,2") and "strides" not in str(base) and "strides" not in base.to_dict()
    assert s3.id != base.id and Architecture.parse(str(s3)) == s3 and Architecture.from_dict(s3.to_dict()) == s3
    for bad in ([2, 2, 3, 2], [2, 2, 1], "2,2,1,2", [True, 2, 2, 2], [2.0, 2, 1.0, 2]):
        with pytest.raises(ConfigError, match="strides"):
            Architecture.from_dict({**s3.to_dict(), "strides": bad})
    with pytest.raises(ConfigError, match="stem_stride"):
        Architecture.from_dict({**s3.to_dict(), "stem_stride": 1.0})
    with pytest.raises(ValueError, match="strides"):
        dataclasses.replace(s3, strides=(2.0, 2, 1, 2))
    with pytest.raises(ConfigError, match="all 2 for ViT_REL"):
        Architecture.from_dict(
            {**Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=8").to_dict(), "strides": [2, 2, 1, 2]}
        )


@pytest.mark.parametrize(
    "text, why",
    [
        ("C-C-C-C L=+2,1,1,2,1 D=16,32,64,96,192", "whole numbers"),
        ("C-C-C-C L=2,1,1,2,1 D=16,32,64,96,1_92", "whole numbers"),
        ("C-C-C-C L=2,1,1,2,1 D=16,32,64,96,192 strides=2,2,1,2 strides=2,2,2,2", "given twice"),
        ("C-C-C-C L=2,1,1,2,1 D=16,32,64,96,192 patch=8", "ViT_REL only"),
        ("ViT_REL L=2,1,1,2,1 D=16,32,64,96,192 patch=8.0", "one whole number"),
        ("C-C-C-C L=2,1,1,2,1 D=16,32,64,96,192 stem_stride=1,1", "one whole number"),
    ],
)
def test_the_string_form_is_read_strictly(text, why):
    """What str(arch) never writes is refused, not read as something near it."""
    with pytest.raises(ValueError, match=why):
        Architecture.parse(text)
