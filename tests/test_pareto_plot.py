"""pareto.png for a slide (issue 21): 2x resolution, the best starred and labelled, the front labelled, and an
outlier that does not squash the cluster (the axis limits come from a pure function, tested without
rendering; the picture is rendered once per case to check its size)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from nas.search.report import axis_limits, pareto_view, plot_pareto
from trainers.objectives.registry import pareto_mask

LAYOUTS = ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T"]


def rows_of(points: list[tuple[float, float]], statuses: list[str] | None = None) -> list[dict]:
    """Leaderboard rows (as nas.search.leaderboard.build_rows writes them) for (generalization, capacity)."""
    statuses = statuses or ["ok"] * len(points)
    rows = [
        {
            "trial": i,
            "layout": LAYOUTS[i % len(LAYOUTS)],
            "arch": f"{LAYOUTS[i % len(LAYOUTS)]} L=2,1,2,3,1 D=32,64,64,96,{96 + i}",
            "generalization": g,
            "capacity": c,
            "score": round((g + c) / 2, 4),
            "status": s,
        }
        for i, ((g, c), s) in enumerate(zip(points, statuses))
    ]
    ok = [r for r in rows if r["status"] == "ok"]
    mask = pareto_mask([[r["generalization"], r["capacity"]] for r in ok], ["max", "max"])
    for r, m in zip(ok, mask):
        r["pareto"] = bool(m)
    ok.sort(key=lambda r: -r["score"])
    for i, r in enumerate(ok):
        r["rank"] = i + 1
    rest = [dict(r, rank=None, pareto=False) for r in rows if r["status"] != "ok"]
    return ok + rest


def cluster(n: int = 20, seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(round(rng.uniform(0.80, 0.90), 4), round(rng.uniform(0.85, 0.95), 4)) for _ in range(n)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------------------------------------ limits
def test_one_extreme_outlier_keeps_the_axes_near_the_cluster():
    xs = [g for g, _ in cluster()]  # 20 values in 0.80..0.90
    lo, hi = axis_limits([*xs, 0.02])
    assert min(xs) - 0.02 < lo < min(xs) and max(xs) < hi < max(xs) + 0.02  # the cluster fills the axis
    lo, hi = axis_limits([*xs, 0.99])  # a high outlier alike
    assert min(xs) - 0.02 < lo < min(xs) and max(xs) < hi < max(xs) + 0.02


def test_no_outlier_shows_every_point():
    xs = [g for g, _ in cluster()]
    lo, hi = axis_limits(xs)
    assert lo < min(xs) and hi > max(xs)
    # a spread-out run without a far point is not clipped either
    spread = [0.1, 0.3, 0.35, 0.4, 0.5, 0.55, 0.6, 0.9]
    lo, hi = axis_limits(spread)
    assert lo < 0.1 and hi > 0.9


def test_ties_do_not_clip_near_neighbours():
    """Most trials at capacity 1.0 (a zero interquartile range): 0.97 is a neighbour, only 0.2 is clipped."""
    ys = [1.0] * 12 + [0.98, 0.97, 0.2]
    lo, hi = axis_limits(ys)
    assert 0.2 < lo < 0.97 and hi > 1.0
    assert lo > 0.9


def test_kept_values_are_always_inside_and_empty_is_the_unit_range():
    xs = [g for g, _ in cluster()] + [0.02]
    assert axis_limits(xs, keep=[0.02])[0] < 0.02
    assert axis_limits([]) == (0.0, 1.0)
    lo, hi = axis_limits([0.5])
    assert lo < 0.5 < hi and hi - lo >= 0.02


def test_view_clips_the_outlier_and_keeps_the_best():
    rows = rows_of([*cluster(), (0.03, 0.05), (0.0, 0.0)], statuses=["ok"] * 21 + ["oom"])
    view = pareto_view(rows)
    assert view.xlim[0] > 0.75 and view.ylim[0] > 0.8
    assert [r["trial"] for r in view.clipped] == [20]  # the outlier; the failed trial is not plotted at all
    assert len(view.inside) == 20
    assert view.best["rank"] == 1 and view.best in view.inside
    assert view.front and all(r["pareto"] for r in view.front)
    assert [r["generalization"] for r in view.front] == sorted(r["generalization"] for r in view.front)


def test_a_best_trial_far_from_the_rest_stays_inside():
    rows = rows_of([*cluster(), (0.99, 0.99)])
    view = pareto_view(rows)
    assert view.best["trial"] == 20 and view.best in view.inside
    assert view.xlim[1] > 0.99 and view.ylim[1] > 0.99


# ------------------------------------------------------------------------------------------------ picture
@pytest.mark.parametrize(
    "points",
    [
        pytest.param([*cluster(), (0.03, 0.05)], id="cluster-and-outlier"),
        pytest.param([(0.8, 0.2), (0.3, 0.9), (0.2, 0.2)], id="three"),
        pytest.param([], id="none"),
    ],
)
def test_png_is_slide_resolution(tmp_path, points):
    rows = rows_of(points)
    path = plot_pareto(rows, tmp_path / "pareto.png", title="r: 21 trials")
    assert path == tmp_path / "pareto.png"
    width, height = png_size(path)
    assert width >= 1400 and height >= 900  # 2x the 704 x 528 of before
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]  # written atomically, no temporary left
