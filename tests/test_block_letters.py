"""Block letters come from one table (nas.model.arch.BLOCKS); the torch-free rooms stay torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nas
from nas.errors import ConfigError
from nas.export.model_config import load_model_config
from nas.model.arch import BLOCKS, BlockKind, ModelConfig, check_block_table, known_blocks
from nas.model.blocks import BLOCK_MODULES, MBConvBlock, TransformerBlock
from nas.model.builder import build_model
from nas.model.cost import BLOCK_COSTS, count_cost
from nas.space.search_space import SearchSpace

GOOD = {"layout": "C-C-T-T", "depths": [1] * 5, "widths": [8, 8, 16, 32, 32]}
SPACE = {
    "input": {"image_size": 32, "channels": 1},
    "stem": {"width": 8},
    "stages": {s: {"block": ["C", "T"], "depth": 1, "width": 32} for s in ("S1", "S2", "S3", "S4")},
}


def stages(**blocks: object) -> dict:
    """SPACE with the given stages' ``block`` choices replaced."""
    return {**SPACE, "stages": {s: {**c, "block": blocks.get(s, c["block"])} for s, c in SPACE["stages"].items()}}


def test_builder_and_cost_model_cover_exactly_the_table():
    assert set(BLOCK_MODULES) == set(BLOCKS) == set(BLOCK_COSTS)
    assert list(BLOCKS) == ["C", "T"] and known_blocks().startswith("C, T (C = MBConv")
    with pytest.raises(RuntimeError, match=r"missing \['T'\], not in BLOCKS \['X'\]"):
        check_block_table({"C": 1, "X": 2}, "a table")


@pytest.mark.parametrize(
    "layout, problem",
    [
        ("C-X-T-T", "unknown block letter 'X'"),
        (["C", "C", "T", 7], "unknown block letter 7"),
        (["C", ["T"], "T", "T"], "unknown block letter ['T']"),
        ("C-C-T", "not a layout of four stages"),
        (5, "not a layout of four stages"),
    ],
)
def test_unknown_letter_in_from_dict_is_a_config_error_listing_the_known_ones(layout, problem):
    with pytest.raises(ConfigError, match="architecture.layout") as err:
        nas.Architecture.from_dict({**GOOD, "layout": layout})
    assert problem in str(err.value) and known_blocks() in str(err.value)


def test_unknown_letter_in_the_string_form_and_the_constructor_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown block letter 'M'"):
        build_model("C-M-T-T L=1,1,1,1,1 D=8,8,16,32,32")
    with pytest.raises(ValueError, match="C = MBConv, T = relative-attention transformer"):
        nas.Architecture(("C", "C", "T", "Q"), (1,) * 5, (8,) * 5)


def test_unknown_letter_in_a_model_config_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "architecture: {layout: C-C-X-T, depths: [1, 1, 1, 1, 1], widths: [8, 8, 16, 32, 32]}\n"
        "image_size: 32\nnum_classes: 4\nin_chans: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    text = str(err.value)
    assert str(path) in text and "`architecture.layout`" in text and "'X'" in text and known_blocks() in text


@pytest.mark.parametrize(
    "space, key, fragment",
    [
        (stages(S2=["C", "X"]), "space.stages.S2.block", "(got 'X')"),
        (stages(S2=[["C"]]), "space.stages.S2.block", "(got ['C'])"),
        ({**SPACE, "rules": {"layouts": ["C-C-T-T", "C-Z-T-T"]}}, "space.rules.layouts[1]", "unknown block letter 'Z'"),
    ],
)
def test_unknown_letter_in_a_space_is_a_config_error_listing_the_known_ones(space, key, fragment):
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(space)
    assert f"`{key}`" in str(err.value) and fragment in str(err.value) and known_blocks() in str(err.value)


def test_a_new_letter_is_one_entry_per_table(monkeypatch):
    """Register ``X`` (a convolution block ordered with C): the space, the builder and the cost model take it
    from the tables, and the stage it names is built of MBConv blocks, not transformers."""
    monkeypatch.setitem(
        BLOCKS,
        "X",
        BlockKind("X", "test conv", "an MBConv under another letter", attention=False, order=0, default_choice=False),
    )
    monkeypatch.setitem(BLOCK_MODULES, "X", BLOCK_MODULES["C"])
    monkeypatch.setitem(BLOCK_COSTS, "X", BLOCK_COSTS["C"])
    space = SearchSpace.from_dict(stages(S1=["C", "X"], S2=["X"], S3=["T"], S4=["T"]))
    assert space.layouts == ("C-X-T-T", "X-X-T-T")
    arch = next(a for a in space.enumerate() if a.layout_name == "X-X-T-T")
    model = build_model(arch, num_classes=4, image_size=32, in_chans=1)
    assert all(isinstance(b, MBConvBlock) for s in model.stages[:2] for b in s.blocks)
    assert all(isinstance(b, TransformerBlock) for s in model.stages[2:] for b in s.blocks)
    assert count_cost(ModelConfig(arch, 4, 32, 1)).params == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="X stage after a T stage"):  # order 0 after order 1
        SearchSpace.from_dict({**stages(S3=["T"], S4=["X"]), "rules": {"layouts": ["C-C-T-X"]}})


def test_torch_free_rooms_do_not_import_torch():
    code = (
        "import sys, nas, nas.model.cost, nas.space.search_space, nas.space.reading, nas.model.arch\n"
        "import nas.model.geometry, nas.model.presets\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "nas.count_cost(nas.model.presets.get('coatnet-0'), 224)\n"
        "assert 'torch' not in sys.modules, 'torch imported by count_cost'\n"
        "assert {'build_model', 'load_space', 'count_cost', 'SearchSpace'} <= set(dir(nas))\n"
        "assert nas.build_model('coatnet-0', image_size=32).num_classes == 1000\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
