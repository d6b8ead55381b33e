import math

import pytest

from nas.errors import ConfigError, parse_dataclass
from trainers.objectives.registry import ObjectiveConfig, capacity, generalization, pareto_mask, score


def brute_force_mask(points):
    def dominated(i):
        a = points[i]
        return any(
            b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1]) for j, b in enumerate(points) if j != i
        )

    return [not dominated(i) for i in range(len(points))]


def test_pareto_simple_front():
    pts = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.4, 0.4), (0.5, 0.2)]
    assert pareto_mask(pts) == [True, True, True, False, False]


def test_pareto_duplicates_and_nan():
    pts = [(0.5, 0.5), (0.5, 0.5), (0.2, 0.9), (float("nan"), 2.0), (0.2, 0.1)]
    assert pareto_mask(pts) == [True, True, True, False, False]
    assert pareto_mask([]) == []


def test_pareto_matches_brute_force():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.sampled_from([0.0, 0.3, 0.6, 1.0])), max_size=12
        )
    )
    def check(points):
        assert pareto_mask(points) == brute_force_mask(points)

    check()


def test_score_weights_are_normalised():
    cfg = ObjectiveConfig(weight_generalization=3.0, weight_capacity=1.0)
    assert score(1.0, 0.0, cfg) == pytest.approx(0.75)
    assert score(0.0, 1.0, cfg) == pytest.approx(0.25)
    cfg = ObjectiveConfig(weight_generalization=0.0, weight_capacity=2.0)
    assert score(0.3, 0.8, cfg) == pytest.approx(0.8)
    assert 0.0 <= score(5.0, -1.0, ObjectiveConfig()) <= 1.0


def test_axes_definitions():
    cfg = ObjectiveConfig(gap_penalty=0.5, capacity_metric="mean")
    assert generalization(0.8, 1.0, cfg) == pytest.approx(0.7)
    assert generalization(0.8, 0.6, cfg) == pytest.approx(0.8)  # negative gap is not rewarded
    assert capacity(1.0, 0.0, 10, cfg) == pytest.approx(1.0)
    assert capacity(0.0, math.log(10), 10, cfg) == pytest.approx(0.0)
    assert capacity(1.0, float("nan"), 10, ObjectiveConfig(capacity_metric="loss")) == 0.0
    assert capacity(0.6, 5.0, 10, ObjectiveConfig(capacity_metric="accuracy")) == pytest.approx(0.6)


def test_objective_yaml_errors():
    cfg = parse_dataclass(ObjectiveConfig, {"mode": "single", "subset_fraction": 0.5}, "s.yaml", "objective")
    assert cfg.mode == "single" and cfg.subset_fraction == 0.5
    with pytest.raises(ConfigError, match=r"s.yaml: `objective.mode`.*'both' \| 'single'"):
        parse_dataclass(ObjectiveConfig, {"mode": "pareto"}, "s.yaml", "objective")
    with pytest.raises(ConfigError, match=r"objective.subset_fraction.*out of range"):
        parse_dataclass(ObjectiveConfig, {"subset_fraction": 0.0}, "s.yaml", "objective")
    with pytest.raises(ConfigError, match="both 0"):
        ObjectiveConfig(weight_generalization=0.0, weight_capacity=0.0)
