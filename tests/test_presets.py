"""Presets: CoAtNet-0..4 as in the paper's Table 3, built on the meta device."""

from __future__ import annotations

import pytest
import torch

from nas import build_model
from nas.errors import UserError
from nas.model.cost import count_cost
from nas.model.presets import PRESETS, get, names

# Paper, Table 3 (params M, FLOPs G at 224) - "FLOPs" there are multiply-adds.
PAPER = {
    "coatnet-0": (25, 4.2),
    "coatnet-1": (42, 8.4),
    "coatnet-2": (75, 15.7),
    "coatnet-3": (168, 34.7),
    "coatnet-4": (275, 62.4),
}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_match_the_paper(name):
    arch = get(name)
    assert arch.layout == ("C", "C", "T", "T")
    cost = count_cost(arch, 224, 1000, 3)
    params, macs = PAPER[name]
    assert abs(cost.params / 1e6 - params) / params < 0.05
    assert abs(cost.macs / 1e9 - macs) / macs < 0.06
    with torch.device("meta"):
        model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == cost.params


def test_names_and_lookup():
    assert names() == [f"coatnet-{i}" for i in range(5)]
    assert get("CoAtNet_2") is PRESETS["coatnet-2"]
    with pytest.raises(UserError, match="coatnet-0"):
        get("coatnet-9")


def test_build_model_takes_a_preset_name_or_the_string_form():
    from nas.model.arch import Architecture

    by_name = build_model("coatnet_0", num_classes=10, image_size=64)
    by_text = build_model(str(get("coatnet-0")), num_classes=10, image_size=64)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(by_name) == count(by_text) == count(build_model(get("coatnet-0"), 10, 64))
    assert Architecture.parse(str(get("coatnet-0"))) == get("coatnet-0")
    with pytest.raises(UserError, match="coatnet-0"):
        build_model("coatnet-9")
