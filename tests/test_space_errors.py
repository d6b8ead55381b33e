"""Bad search-space YAML: each mistake gives one ConfigError naming the file, the key path and what is allowed."""

from __future__ import annotations

import pytest

from nas.errors import ConfigError, UserError
from nas.space.search_space import load_space

STAGES = """\
  stages:
    S1: {block: [C], depth: [1, 2], width: [32, 64]}
    S2: {block: [C, T], depth: 2, width: [64]}
    S3: {block: [C, T], depth: [1, 3], width: [64, 128]}
    S4: {block: [T], depth: [1], width: [128, 256]}
"""
GOOD = "space:\n  input: {image_size: 32, channels: 3}\n  stem: {width: [16, 32]}\n" + STAGES


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# (id, yaml text, fragments the message must contain besides the file name)
CASES = [
    ("yaml_syntax", "space:\n  stem: {width: [16, 32}\n", ["not valid YAML", "line 2"]),
    ("top_level_typo", GOOD + "serach: {}\n", ["`serach`", "Did you mean `search`", "space, train, objective, search"]),
    ("space_missing", "train: {epochs: 1}\n", ["`space`", "is missing"]),
    ("top_level_not_mapping", "- 1\n- 2\n", ["must be a mapping", "space"]),
    ("space_key_typo", GOOD + "  budget: {max_params: 1}\n", ["space.budget", "Did you mean `budgets`"]),
    ("stage_typo", edit("    S4: {", "    S5: {"), ["space.stages.S5", "S1, S2, S3, S4"]),
    (
        "stage_missing",
        edit("    S4: {block: [T], depth: [1], width: [128, 256]}\n", ""),
        ["space.stages.S4", "is missing"],
    ),
    (
        "stage_key_typo",
        edit("S2: {block: [C, T], depth: 2", "S2: {blocks: [C, T], depth: 2"),
        ["space.stages.S2.blocks", "Did you mean `block`"],
    ),
    ("empty_choices", edit("depth: [1, 3]", "depth: []"), ["space.stages.S3.depth", "empty list", "positive integer"]),
    ("zero_depth", edit("depth: [1, 2]", "depth: [1, 0]"), ["space.stages.S1.depth[1]", "(got 0)", "positive integer"]),
    ("negative_width", edit("stem: {width: [16, 32]}", "stem: {width: -16}"), ["space.stem.width", "-16"]),
    ("string_width", edit("width: [64]}", "width: [wide]}"), ["space.stages.S2.width[0]", "'wide'"]),
    ("range_min_gt_max", edit("depth: [1, 3]", "depth: {min: 3, max: 1}"), ["space.stages.S3.depth", "min > max"]),
    (
        "range_typo",
        edit("depth: [1, 3]", "depth: {min: 1, maxi: 3}"),
        ["space.stages.S3.depth.maxi", "Did you mean `max`"],
    ),
    (
        "bad_block_letter",
        edit("block: [C, T], depth: 2", "block: [C, X], depth: 2"),
        ["space.stages.S2.block", "'X'", "C, T"],
    ),
    ("empty_block_list", edit("block: [C, T], depth: 2", "block: [], depth: 2"), ["space.stages.S2.block", "empty"]),
    (
        "width_vs_head_dim",
        edit(
            "S3: {block: [C, T], depth: [1, 3], width: [64, 128]}",
            "S3: {block: [C, T], depth: [1, 3], width: [64, 100]}",
        ),
        ["space.stages.S3.width", "(got 100)", "head_dim 32", "T block is possible"],
    ),
    ("head_dim_choice_vs_width", GOOD + "  blocks: {head_dim: [32, 48]}\n", ["space.stages.S2.width", "head_dim 48"]),
    (
        "monotone_unsatisfiable",
        edit("S1: {block: [C]", "S1: {block: [T]")
        .replace("S4: {block: [T]", "S4: {block: [C]")
        .replace("S2: {block: [C, T]", "S2: {block: [T]")
        .replace("S3: {block: [C, T]", "S3: {block: [T]"),
        ["space.rules.monotone", "C stage after a T stage", "monotone: false"],
    ),
    (
        "layout_contradicts_stage",
        GOOD + "  rules: {layouts: [C-C-T-T, T-T-T-T]}\n",
        ["space.rules.layouts[1]", "'T-T-T-T'", "S1", "allows only ['C']"],
    ),
    (
        "layout_not_monotone",
        GOOD.replace("S4: {block: [T]", "S4: {block: [C, T]") + "  rules: {layouts: [C-T-C-T]}\n",
        ["space.rules.layouts[0]", "rules.monotone"],
    ),
    ("layout_malformed", GOOD + "  rules: {layouts: [C-C-T]}\n", ["space.rules.layouts[0]", "'C-C-T'", "ViT_REL"]),
    (
        "vit_needs_t_everywhere",
        GOOD + "  rules: {layouts: [ViT_REL]}\n",
        ["space.rules.layouts[0]", "ViT_REL needs T", "S1 allows only C"],
    ),
    ("vit_include_needs_t", GOOD + "  vit_rel: {include: true}\n", ["space.vit_rel.include", "S1"]),
    (
        "vit_include_with_layouts",
        GOOD + "  vit_rel: {include: true}\n  rules: {layouts: [C-C-T-T]}\n",
        ["space.vit_rel.include", "rules.layouts"],
    ),
    (
        "patch_not_divisor",
        GOOD + "  vit_rel: {patch_size: [4, 5]}\n",
        ["space.vit_rel.patch_size", "(got 5)", "divisor"],
    ),
    ("rule_not_bool", GOOD + "  rules: {monotone: yes please}\n", ["space.rules.monotone", "true, false"]),
    (
        "widths_unsatisfiable",
        edit("S4: {block: [T], depth: [1], width: [128, 256]}", "S4: {block: [T], depth: [1], width: [32]}"),
        ["space.rules.non_decreasing_widths", "non-decreasing"],
    ),
    ("image_too_small", edit("image_size: 32", "image_size: 16"), ["space.input.image_size", "(got 16)", ">= 32"]),
    ("channels_bad", edit("channels: 3", "channels: 0"), ["space.input.channels", "(got 0)"]),
    ("option_typo", GOOD + "  blocks: {se_raito: 0.25}\n", ["space.blocks.se_raito", "Did you mean `se_ratio`"]),
    (
        "option_bad_choice",
        GOOD + "  blocks: {rel_attn: [pre, sideways]}\n",
        ["`space.blocks.rel_attn[1]`", "sideways", "'pre' | 'post' | 'none'"],
    ),
    (
        "option_out_of_range",
        GOOD + "  blocks: {se_ratio: [0.25, 2.0]}\n",
        ["`space.blocks.se_ratio[1]`", "2.0", "0..1"],
    ),
    ("option_scalar_bad", GOOD + "  blocks: {downsample: maxpool}\n", ["`space.blocks.downsample`", "'conv1x1'"]),
    ("option_empty", GOOD + "  blocks: {se_ratio: []}\n", ["space.blocks.se_ratio", "empty"]),
    ("budget_negative", GOOD + "  budgets: {max_params: -5}\n", ["space.budgets.max_params", "positive number"]),
    ("budget_typo", GOOD + "  budgets: {max_param: 5}\n", ["space.budgets.max_param", "Did you mean `max_params`"]),
    ("stem_width_missing", edit("stem: {width: [16, 32]}", "stem: {depth: 2}"), ["space.stem.width", "is missing"]),
    ("space_null", "space:\n", ["`space`", "is empty"]),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_yaml_gives_one_paragraph_naming_file_key_and_allowed(tmp_path, text, fragments):
    f = tmp_path / "my-space.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(str(f))
    msg = str(err.value)
    assert "my-space.yaml" in msg
    assert "\n" not in msg.strip() and "Traceback" not in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert "Allowed:" in msg or "not valid YAML" in msg or "is missing" in msg


def test_good_base_is_valid(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text(GOOD)
    assert load_space(str(f)).size() > 0


def test_unknown_file_lists_bundled_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_space("coatnte.yaml")
    assert "coatnte.yaml" in str(err.value) and "coatnet.yaml" in str(err.value)
