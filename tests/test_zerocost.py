"""Zero-cost proxies on real (tiny) CoAtNet models and synthetic 32 px data."""

from __future__ import annotations

import math
import time

import pytest
import torch

from nas.errors import UserError
from nas.model.arch import Architecture
from nas.model.cost import count_cost
from trainers.data.config import DataConfig
from trainers.data.loading import load_dataset
from trainers.objectives.registry import ZERO_COST
from trainers.objectives.zerocost import ProxyInput, naswot, proxy_batch, zero_cost_scores

NAMES = ["params", "macs", "synflow", "naswot", "grad_norm", "snip", "jacov"]
SMALL = "C-C-T-T L=2,1,1,1,1 D=16,16,32,32,64"
ARCHS = [
    "C-C-C-C L=2,1,1,1,1 D=16,16,32,32,64",
    SMALL,
    "C-T-T-T L=1,1,1,1,1 D=16,16,32,32,64",
    "ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=8",
]


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(name="synthetic", synthetic_samples=200), 32, 3)


def test_registry_names():
    assert list(ZERO_COST) == NAMES


@pytest.mark.parametrize("text", ARCHS)
def test_every_proxy_finite(data, text):
    arch = Architecture.parse(text)
    scores = zero_cost_scores(arch, data)
    assert list(scores) == NAMES
    for name, value in scores.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)
    assert arch.is_vit == text.startswith("ViT_REL")
    assert scores["jacov"] <= -64 + 1e-6  # -sum(log(v+k) + 1/(v+k)) peaks at -batch_size
    assert scores["grad_norm"] > 0 and scores["snip"] > 0


def test_deterministic_per_seed(data):
    arch = Architecture.parse(SMALL)
    a, b = zero_cost_scores(arch, data, seed=3), zero_cost_scores(arch, data, seed=3)
    assert a == b
    c = zero_cost_scores(arch, data, ["naswot", "grad_norm", "synflow"], seed=4)
    assert all(c[k] != a[k] for k in c)


def test_proxies_do_not_interfere(data):
    arch = Architecture.parse(SMALL)
    alone = {name: zero_cost_scores(arch, data, [name])[name] for name in ("snip", "jacov")}
    together = zero_cost_scores(arch, data, ["jacov", "grad_norm", "snip"])
    assert list(together) == ["jacov", "grad_norm", "snip"]
    assert together["snip"] == alone["snip"] and together["jacov"] == alone["jacov"]


def test_params_macs_match_count_cost(data):
    arch = Architecture.parse(SMALL)
    cost = count_cost(arch, 32, data.num_classes, 3)
    assert zero_cost_scores(arch, data, ["params", "macs"]) == {"params": cost.params, "macs": cost.macs}
    small = zero_cost_scores(arch, data, ["params", "macs", "naswot"], image_size=16, num_classes=12)
    cost16 = count_cost(arch, 16, 12, 3)
    assert (small["params"], small["macs"]) == (cost16.params, cost16.macs)
    assert math.isfinite(small["naswot"])


def test_synflow_and_params_grow_with_width_and_depth(data):
    base = zero_cost_scores(Architecture.parse(SMALL), data, ["params", "synflow"])
    wide = zero_cost_scores(Architecture.parse("C-C-T-T L=2,1,1,1,1 D=32,32,64,64,128"), data, ["params", "synflow"])
    deep = zero_cost_scores(Architecture.parse("C-C-T-T L=2,2,2,2,2 D=16,16,32,32,64"), data, ["params", "synflow"])
    assert wide["params"] > base["params"] and wide["synflow"] > base["synflow"] + 1
    # The LayerNorms are bypassed as well as BatchNorm: with them in, the deeper net scored lower.
    assert deep["params"] > base["params"] and deep["synflow"] > base["synflow"] + 1


def test_unknown_name_lists_known(data):
    with pytest.raises(UserError) as err:
        zero_cost_scores(Architecture.parse(SMALL), data, ["synflow", "zen"])
    assert "'zen'" in str(err.value) and all(n in str(err.value) for n in NAMES)


def test_bad_num_classes(data):
    with pytest.raises(UserError, match="num_classes"):
        zero_cost_scores(Architecture.parse(SMALL), data, ["snip"], num_classes=3)


def test_batch_stratified_and_seeded(data):
    x, y = proxy_batch(data, 64, seed=1)
    x2, y2 = proxy_batch(data, 64, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2) and len(y) == 64
    assert set(y.tolist()) == set(range(data.num_classes))
    assert max(torch.bincount(y).tolist()) - min(torch.bincount(y).tolist()) <= 1
    assert not torch.equal(proxy_batch(data, 64, seed=2)[1], y)
    assert len(proxy_batch(data, 10_000)[1]) == len(data.y_train)


def test_naswot_singular_kernel_is_minus_inf(data):
    x, y = proxy_batch(data, 8)
    same = x[:1].expand(8, -1, -1, -1).contiguous()
    assert naswot(ProxyInput(Architecture.parse(SMALL), same, y, 10, 32, 3)) == -math.inf


def test_no_global_state_leaks(data):
    rng = torch.get_rng_state()
    with torch.no_grad():  # a caller under no_grad still gets gradient-based scores
        scores = zero_cost_scores(Architecture.parse(SMALL), data, ["grad_norm", "snip", "jacov", "synflow"])
        assert not torch.is_grad_enabled()
    assert all(math.isfinite(v) for v in scores.values())
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32


def test_time_per_proxy(data):
    """Prints seconds per proxy on the small arch (not asserted: the machine is shared)."""
    arch = Architecture.parse(SMALL)
    zero_cost_scores(arch, data)
    for name in NAMES:
        t0 = time.perf_counter()
        zero_cost_scores(arch, data, [name])
        print(f"{name}: {time.perf_counter() - t0:.3f} s")


def test_synflow_overflow_is_inf_not_nan(data):
    deep = Architecture.parse("ViT_REL L=1,12,12,12,12 D=64,64,64,64,64 patch=8")
    assert zero_cost_scores(deep, data, ["synflow"])["synflow"] == math.inf
