"""Rank agreement between two measurements of the same architectures, with bootstrap intervals.

numpy only; Kendall's tau-b and Spearman's rho handle ties the usual way (scipy gives the same values,
which ``tests/test_fidelity.py`` checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def _pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-d sequences of one length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either sequence corrected for); NaN for fewer than 2 pairs or a constant."""
    a, b = _pairs(x, y)
    if len(a) < 2:
        return math.nan
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    s = float((da * db)[iu].sum())
    n0 = len(iu[0])
    ta, tb = float((da[iu] == 0).sum()), float((db[iu] == 0).sum())
    denom = math.sqrt((n0 - ta) * (n0 - tb))
    return s / denom if denom > 0 else math.nan


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=float)
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's r of average ranks)."""
    a, b = _pairs(x, y)
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum()) / denom if denom > 0 else math.nan


def top_overlap(proxy: Sequence[float], reference: Sequence[float], fraction: float = 0.1) -> float:
    """Share of the reference's top ``fraction`` (at least one) that is also in the proxy's top ``fraction``."""
    a, b = _pairs(proxy, reference)
    if len(a) == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(a)))
    top_a = set(np.argsort(-a, kind="mergesort")[:k].tolist())
    top_b = set(np.argsort(-b, kind="mergesort")[:k].tolist())
    return len(top_a & top_b) / k


def bootstrap_ci(
    stat: Callable[[np.ndarray, np.ndarray], float],
    x: Sequence[float],
    y: Sequence[float],
    *,
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over ``reps`` resamples of the pairs (architectures) with replacement."""
    a, b = _pairs(x, y)
    if len(a) < 3:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, len(a), len(a))
        v = stat(a[idx], b[idx])
        if math.isfinite(v):
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


class Agreement(dict):
    """``{"n", "tau", "tau_ci", "rho", "rho_ci", "top10", "top10_ci"}`` of one proxy against one reference."""


def agreement(
    proxy: Sequence[float], reference: Sequence[float], *, reps: int = 1000, seed: int = 0, top: float = 0.1
) -> Agreement:
    """Kendall tau, Spearman rho and top-``top`` overlap, each with a bootstrap 95% interval."""
    a, b = _pairs(proxy, reference)
    out = Agreement(n=len(a))
    for name, fn in (("tau", kendall_tau), ("rho", spearman_rho), ("top10", lambda p, r: top_overlap(p, r, top))):
        out[name] = fn(a, b)
        out[f"{name}_ci"] = bootstrap_ci(fn, a, b, reps=reps, seed=seed)
    return out
