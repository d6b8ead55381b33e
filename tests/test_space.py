"""SearchSpace: exact counting, uniform sampling, Optuna round trips, shipped spaces, budgets, models."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from nas.errors import ConfigError, UserError
from nas.model.arch import VIT_REL, Architecture, BlockOptions
from nas.model.cost import count_cost
from nas.space.choices import Budgets
from nas.space.reading import bundled_spaces, load_yaml, resolve_space_path
from nas.space.search_space import SearchSpace, load_space

TINY = {
    "input": {"image_size": 32, "channels": 1},
    "stem": {"width": [8, 16]},
    "stages": {
        "S1": {"block": ["C"], "depth": [1, 2], "width": [16, 32]},
        "S2": {"block": ["C", "T"], "depth": 1, "width": [16, 32]},
        "S3": {"block": ["C", "T"], "depth": [1], "width": [32, 64]},
        "S4": {"block": ["T"], "depth": {"min": 1, "max": 2}, "width": [32, 64]},
    },
    "blocks": {"head_dim": 16, "se_ratio": [0.0, 0.25]},
}


def variant(**changes) -> dict:
    """TINY with dotted-path changes, e.g. ``variant(**{"rules.monotone": False})``."""
    data = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


SPACES = {
    "tiny": TINY,
    "no_rules": variant(**{"rules.monotone": False, "rules.non_decreasing_widths": False}),
    "monotone_only": variant(**{"rules.non_decreasing_widths": False}),
    "widths_only": variant(**{"rules.monotone": False}),
    "with_vit": variant(
        **{
            "stages.S1.block": ["C", "T"],
            "vit_rel": {"include": True, "patch_size": [2, 4]},
            "blocks.rel_attn": ["pre", "post"],
        }
    ),
    "fixed_layouts": variant(**{"stages.S1.block": ["C", "T"], "rules.layouts": ["C-C-T-T", VIT_REL, "C-T-T-T"]}),
    "single": {
        "stem": {"width": 8},
        "stages": {s: {"depth": 1, "width": 16, "block": "C"} for s in ("S1", "S2", "S3", "S4")},
    },
}


def brute_force(data: dict) -> set[Architecture]:
    """Every architecture the raw dict allows, enumerated naively with the rules applied by hand."""
    space = SearchSpace.from_dict(data)
    spec = space.to_dict()  # resolved choice lists (rules.layouts already resolved: recompute below)
    stages = [spec["stages"][s] for s in ("S1", "S2", "S3", "S4")]
    rules = data.get("rules", {})
    monotone, nondec = rules.get("monotone", True), rules.get("non_decreasing_widths", True)
    layouts = rules.get("layouts")
    if layouts is None:
        layouts = ["-".join(p) for p in itertools.product("CT", repeat=4)]
        layouts = [l for l in layouts if all(b in st["block"] for b, st in zip(l.split("-"), stages))]
        if monotone:
            layouts = [l for l in layouts if "T-C" not in l]
        if data.get("vit_rel", {}).get("include"):
            layouts.append(VIT_REL)
    names = list(spec["blocks"])
    out = set()
    for layout in layouts:
        for patch in spec["vit_rel"]["patch_size"] if layout == VIT_REL else [16]:
            for widths in itertools.product(spec["stem"]["width"], *(st["width"] for st in stages)):
                if nondec and list(widths) != sorted(widths):
                    continue
                for depths in itertools.product(spec["stem"]["depth"], *(st["depth"] for st in stages)):
                    for vals in itertools.product(*(spec["blocks"][k] for k in names)):
                        opts = BlockOptions(**dict(zip(names, vals)))
                        if layout == VIT_REL:
                            arch = Architecture(("T",) * 4, depths, widths, opts, stem="patch", patch_size=patch)
                        else:
                            arch = Architecture(tuple(layout.split("-")), depths, widths, opts)
                        out.add(arch)
    return out


@pytest.mark.parametrize("name", sorted(SPACES))
def test_size_equals_brute_force_and_enumerate(name):
    space = SearchSpace.from_dict(SPACES[name])
    expected = brute_force(SPACES[name])
    listed = list(space.enumerate())
    assert space.size() == len(expected) > 0
    assert len(listed) == len(set(listed)) and set(listed) == expected
    assert listed == list(space.enumerate())  # deterministic order
    assert list(space.enumerate(limit=3)) == listed[:3]
    assert all(space.contains(a) for a in listed)


def test_rules_change_the_count():
    sizes = {n: SearchSpace.from_dict(SPACES[n]).size() for n in ("tiny", "no_rules", "monotone_only", "widths_only")}
    assert sizes["tiny"] < sizes["monotone_only"] < sizes["no_rules"]
    assert sizes["tiny"] < sizes["widths_only"] < sizes["no_rules"]


def test_huge_space_is_counted_instantly():
    wide = list(range(32, 32 * 200, 32))
    data = {
        "stem": {"width": wide},
        "blocks": {"head_dim": 32, "se_ratio": [0.0, 0.1, 0.2, 0.25]},
        "stages": {s: {"depth": {"min": 1, "max": 30}, "width": wide} for s in ("S1", "S2", "S3", "S4")},
    }
    space = SearchSpace.from_dict(data)
    # 5 monotone layouts x non-decreasing 5-chains from 199 widths (multisets) x 30^4 depths x 4 se_ratios
    assert space.size() == 5 * math.comb(199 + 5 - 1, 5) * 30**4 * 4 > 10**16
    arch = space.sample(random.Random(1))
    assert space.contains(arch)


@pytest.mark.parametrize("name", ["tiny", "with_vit", "widths_only"])
def test_sample_is_valid_and_uniform(name):
    space = SearchSpace.from_dict(SPACES[name])
    rng = random.Random(1234)
    n = space.size()
    draws = 40 * n
    counts = Counter(space.sample(rng) for _ in range(draws))
    assert all(space.contains(a) for a in counts)
    assert set(counts) == set(space.enumerate())  # every candidate reachable
    chi2 = sum((c - 40) ** 2 / 40 for c in counts.values()) + 40 * (n - len(counts))
    # chi-square with n-1 dof: mean n-1, sd sqrt(2(n-1)); 5 sd is a generous bound that a skewed sampler fails
    assert chi2 < (n - 1) + 5 * (2 * (n - 1)) ** 0.5, chi2


def test_sampler_is_not_uniform_per_choice_but_per_candidate():
    # With non-decreasing widths, S0=8 allows more chains than S0=16: uniform candidates favour 8.
    space = SearchSpace.from_dict(variant(**{"stem.width": [8, 24]}))
    rng = random.Random(0)
    stems = Counter(space.sample(rng).widths[0] for _ in range(3000))
    exact = Counter(a.widths[0] for a in space.enumerate())
    assert exact[8] > exact[24]
    assert abs(stems[8] / 3000 - exact[8] / space.size()) < 0.04


def test_why_invalid_names_the_reason():
    space = SearchSpace.from_dict(TINY)
    good = next(space.enumerate())
    assert space.why_invalid(good) is None and good in space
    bad_layout = Architecture(("T", "T", "T", "T"), good.depths, good.widths, good.options)
    assert "layout" in space.why_invalid(bad_layout)
    bad_width = Architecture(good.layout, good.depths, (16, 16, 16, 32, 24), good.options)
    assert "S4 width 24" in space.why_invalid(bad_width)
    decreasing = Architecture(good.layout, good.depths, (16, 32, 16, 32, 32), good.options)
    assert "non_decreasing_widths" in space.why_invalid(decreasing)
    bad_opt = Architecture(good.layout, good.depths, good.widths, BlockOptions(head_dim=16, se_ratio=0.5))
    assert "se_ratio" in space.why_invalid(bad_opt)
    with pytest.raises(ValueError, match="not in this search space"):
        space.encode(bad_opt)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_encode_suggest_round_trip_fixed_trial(name):
    optuna = pytest.importorskip("optuna")
    space = SearchSpace.from_dict(SPACES[name])
    for arch in space.enumerate():
        params = space.encode(arch)
        assert space.suggest(optuna.trial.FixedTrial(params)) == arch


def test_real_optuna_study_only_valid_and_fixed_choices():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("with_vit", "tiny"):
        space = SearchSpace.from_dict(SPACES[name])
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
        known = next(space.enumerate())
        study.enqueue_trial(space.encode(known))
        seen = []
        for _ in range(30):
            trial = study.ask()
            arch = space.suggest(trial)  # optuna raises ValueError if a name's choices ever changed
            assert space.contains(arch), space.why_invalid(arch)
            seen.append(arch)
            study.tell(trial, float(sum(arch.widths)))
        assert seen[0] == known
        assert len(set(seen)) > 5


def test_shipped_spaces_load_by_name_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"coatnet.yaml", "coatnet-paper.yaml"} <= set(bundled_spaces())
    default = load_space("coatnet.yaml")
    assert load_space("coatnet") == default
    assert default.in_chans == 1 and default.image_size == 32
    assert 100 < default.size() < 10**6
    paper = load_space("coatnet-paper")
    assert paper.size() == 5 and paper.in_chans == 3
    assert sorted(a.layout_name for a in paper.enumerate()) == sorted(
        ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", VIT_REL]
    )
    # a local file of the same name wins over the bundled one
    (tmp_path / "coatnet.yaml").write_text(
        "space:\n  stem: {width: 8}\n  stages:\n"
        + "".join(f"    {s}: {{block: C, depth: 1, width: 16}}\n" for s in ("S1", "S2", "S3", "S4"))
    )
    assert resolve_space_path("coatnet.yaml") == Path("coatnet.yaml")
    assert load_space("coatnet.yaml").size() == 1
    with pytest.raises(UserError, match="coatnet-paper.yaml"):
        resolve_space_path("nope.yaml")


def test_other_sections_are_kept_for_other_modules(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        "space: {stem: {width: 8}, stages: {S1: {depth: 1, width: 8}, S2: {depth: 1, width: 8}, "
        "S3: {depth: 1, width: 8}, S4: {depth: 1, width: 8}}}\ntrain: {epochs: 1}\nsearch: {trials: 3}\n"
    )
    path, data = load_yaml(f)
    assert path == f and data["train"] == {"epochs": 1} and data["search"] == {"trials": 3}


def test_to_dict_round_trip_fingerprint_and_diff():
    a = SearchSpace.from_dict(SPACES["with_vit"])
    again = SearchSpace.from_dict(a.to_dict())
    assert again == a and again.fingerprint() == a.fingerprint() and again.size() == a.size()
    assert set(again.enumerate()) == set(a.enumerate())
    b = SearchSpace.from_dict(
        variant(
            **{
                "stages.S1.block": ["C", "T"],
                "vit_rel": {"include": True, "patch_size": [2, 4]},
                "blocks.rel_attn": ["pre", "post"],
                "stages.S3.width": [32, 96],
            }
        )
    )
    assert b.fingerprint() != a.fingerprint()
    assert a.diff(a) == []
    changes = a.diff(b)
    assert any(c.startswith("space.stages.S3.width: [32, 64] -> [32, 96]") for c in changes), changes


def test_minimal_architectures_are_smallest():
    space = SearchSpace.from_dict(SPACES["with_vit"])
    minimal = space.minimal_architectures()
    # one per (layout, patch size) and option combination
    assert VIT_REL in space.layouts
    assert len(minimal) == (len(space.layouts) + 1) * 2 * 2
    assert all(space.contains(a) for a in minimal)
    for arch in space.enumerate():
        assert all(w >= m for w, m in zip(arch.widths, minimal[0].widths))
        assert all(d >= m for d, m in zip(arch.depths, minimal[0].depths))


def test_check_budgets_with_count_cost():
    space = load_space("coatnet")
    space.check_budgets(count_cost)  # the shipped default fits its own budgets
    smallest = min(
        count_cost(a, image_size=32, num_classes=10, in_chans=1).params for a in space.minimal_architectures()
    )
    tight = SearchSpace.from_dict({**space.to_dict(), "budgets": {"max_params": smallest - 1}})
    with pytest.raises(ConfigError, match=r"space\.budgets\.max_params.*smallest candidate") as err:
        tight.check_budgets(count_cost)
    assert f"{smallest:,}" in str(err.value)
    SearchSpace.from_dict({**space.to_dict(), "budgets": {"max_params": smallest}}).check_budgets(count_cost)
    macs = SearchSpace.from_dict({**space.to_dict(), "budgets": {"max_macs": 10}})
    with pytest.raises(ConfigError, match=r"space\.budgets\.max_macs"):
        macs.check_budgets(count_cost)
    assert SearchSpace.from_dict(TINY).budgets == Budgets(None, None)


def test_shipped_paper_space_fits_its_budgets_and_sizes_are_comparable():
    paper = load_space("coatnet-paper")
    params = [count_cost(a, image_size=32, num_classes=10, in_chans=3).params for a in paper.enumerate()]
    assert max(params) < 3 * min(params), params


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


if given is not None:

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=st.sampled_from(["coatnet", "coatnet-paper"]), seed=st.integers(0, 2**32 - 1))
    def test_sampled_architectures_build_and_run(name, seed):
        torch = pytest.importorskip("torch")
        from nas.model.builder import build_model

        torch.set_num_threads(1)
        space = load_space(name)
        arch = space.sample(random.Random(seed))
        model = build_model(arch, num_classes=10, image_size=space.image_size, in_chans=space.in_chans).eval()
        with torch.no_grad():
            out = model(torch.randn(2, space.in_chans, space.image_size, space.image_size))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_stem_stride_is_a_validated_per_space_option():
    space = SearchSpace.from_dict(
        variant(**{"stem.stride": 1, "vit_rel": {"include": True, "patch_size": 4}, "stages.S1.block": ["C", "T"]})
    )
    archs = list(space.enumerate())
    assert {a.stem_stride for a in archs if not a.is_vit} == {1} and {a.stem_stride for a in archs if a.is_vit} == {2}
    assert all(a in space for a in archs)
    other = dataclasses.replace(next(a for a in archs if not a.is_vit), stem_stride=2)
    assert "stem_stride" in space.why_invalid(other)
    assert space.to_dict()["stem"]["stride"] == 1 and "stride" not in SearchSpace.from_dict(TINY).to_dict()["stem"]
    assert (
        space.fingerprint()
        != SearchSpace.from_dict(
            variant(**{"vit_rel": {"include": True, "patch_size": 4}, "stages.S1.block": ["C", "T"]})
        ).fingerprint()
    )
    for bad in (3, 0, True, [1, 2], 1.0, 2.0):  # a float would name another space (stride 2.0 in its fingerprint)
        with pytest.raises(ConfigError, match="space.stem.stride"):
            SearchSpace.from_dict(variant(**{"stem.stride": bad}))


def test_a_stage_stride_is_a_validated_per_stage_option():
    space = SearchSpace.from_dict(
        variant(**{"stages.S3.stride": 1, "vit_rel": {"include": True, "patch_size": 4}, "stages.S1.block": ["C", "T"]})
    )
    archs = list(space.enumerate())
    assert space.strides == (2, 2, 1, 2)
    assert {a.strides for a in archs if not a.is_vit} == {(2, 2, 1, 2)}
    assert {a.strides for a in archs if a.is_vit} == {(2, 2, 2, 2)}
    assert all(a in space for a in archs) and all(space.sample(random.Random(i)) in space for i in range(20))
    other = dataclasses.replace(next(a for a in archs if not a.is_vit), strides=(2, 2, 2, 2))
    assert "strides" in space.why_invalid(other)
    assert space.to_dict()["stages"]["S3"]["stride"] == 1 and "stride" not in space.to_dict()["stages"]["S2"]
    plain = SearchSpace.from_dict(
        variant(**{"vit_rel": {"include": True, "patch_size": 4}, "stages.S1.block": ["C", "T"]})
    )
    assert space.fingerprint() != plain.fingerprint() and space.size() == plain.size()
    assert all("stride" not in s for s in plain.to_dict()["stages"].values())  # earlier spaces keep their identity
    for bad in (3, 0, True, [1, 2], "1", 1.0, 2.0):
        with pytest.raises(ConfigError, match=r"space\.stages\.S3\.stride"):
            SearchSpace.from_dict(variant(**{"stages.S3.stride": bad}))


def test_the_shipped_cifar_space_attends_over_at_least_4x4_tokens_at_s3():
    """coatnet-cifar.yaml keeps S2's map at S3 (issue 20): a T at S3 attends over 16 tokens, not 4."""
    from nas.model.geometry import stage_sides

    space = load_space("coatnet-cifar.yaml")
    archs = [a for a in space.enumerate() if not a.is_vit]
    assert archs and {tuple(stage_sides(a, space.image_size)) for a in archs} == {(8, 4, 4, 2)}
    assert any(a.layout[2] == "T" for a in archs)
