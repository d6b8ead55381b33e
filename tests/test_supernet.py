"""The weight-sharing supernet (nas.model.supernet) and its proxy (trainers.training.supernet), at toy size."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from nas.errors import ConfigError
from nas.model.arch import Architecture
from nas.model.supernet import Supernet, SupernetSpec, extract, shared_key, slice_for
from nas.search.config import load_experiment
from nas.space.search_space import load_space
from trainers.training.config import parse_train


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cifar_net():
    """The supernet of the shipped CIFAR space (C and T per stage, ViT_REL, S3 stride 1)."""
    space = load_space("coatnet-cifar.yaml")
    return space, Supernet(SupernetSpec(num_classes=10, **space.choices()))


def test_a_candidate_run_on_the_supernet_equals_its_extracted_network(cifar_net):
    space, net = cifar_net
    rng = random.Random(3)
    x = torch.randn(6, 3, 32, 32)
    net.train()
    for _ in range(3):  # move the shared BatchNorm statistics away from their initial values
        with torch.no_grad():
            net(x, space.sample(rng))
    net.eval()
    seen = set()
    for _ in range(12):
        arch = space.sample(rng)
        seen.add(arch.layout_name)
        model = extract(net.state_dict(), arch, 10, 32).eval()
        with torch.no_grad():
            assert torch.allclose(net(x, arch), model(x), atol=1e-5), arch
    assert "ViT_REL" in seen and len(seen) >= 4


def test_training_one_candidate_changes_only_its_own_slices(cifar_net):
    space, net = cifar_net
    arch = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,32,64,96,128 ffn_expansion=2.0 strides=2,2,1,2")
    net.train()
    net.zero_grad(set_to_none=True)
    net(torch.randn(4, 3, 32, 32), arch).sum().backward()
    grads = dict(net.named_parameters())
    assert grads["stages.2.blocks.0.C.conv1.weight"].grad is None  # S3 is a T: its MBConv is untouched
    assert grads["stages.2.blocks.1.T.attn.qkv.weight"].grad is None  # depth 1: the second slot is unused
    qkv = grads["stages.2.blocks.0.T.attn.qkv.weight"].grad  # 3 x 128 rows over 96 inputs; the candidate's 3 x 96 x 64
    assert qkv.shape == (384, 96)
    used = qkv.unflatten(0, (3, 128))
    assert used[:, :96, :64].abs().sum() > 0
    assert used[:, 96:].abs().sum() == 0 and used[:, :, 64:].abs().sum() == 0
    conv = grads["stem.conv1.weight"].grad
    assert conv[:16].abs().sum() > 0 and conv[16:].abs().sum() == 0


def test_slices_take_q_k_v_thirds_and_the_centre_of_a_position_table():
    full = torch.arange(12.0).reshape(12, 1)  # q rows 0-3, k rows 4-7, v rows 8-11
    assert slice_for("x.attn.qkv.weight", full, torch.Size([6, 1])).flatten().tolist() == [0, 1, 4, 5, 8, 9]
    table = torch.arange(2 * 5 * 5.0).reshape(2, 5, 5)
    crop = slice_for("x.attn.rel_bias", table, torch.Size([1, 3, 3]))
    assert crop.tolist() == table[0, 1:4, 1:4][None].tolist()  # offset 0 stays at the centre
    w = torch.zeros(8, 6, 3, 3)
    assert slice_for("x.conv1.weight", w, torch.Size([4, 2, 3, 3])).shape == (4, 2, 3, 3)


def test_keys_map_to_the_block_of_the_stage_letter_and_vit_to_its_own_branch():
    hybrid = Architecture.parse("C-C-T-T L=2,1,1,1,1 D=16,32,64,96,128")
    vit = Architecture.parse("ViT_REL L=2,1,1,1,1 D=16,32,64,96,128 patch=8")
    assert shared_key(hybrid, "stages.2.blocks.0.attn.qkv.weight") == "stages.2.blocks.0.T.attn.qkv.weight"
    assert shared_key(hybrid, "stages.0.blocks.0.conv1.weight") == "stages.0.blocks.0.C.conv1.weight"
    assert shared_key(hybrid, "head.fc.weight") == "head.fc.weight"
    assert shared_key(vit, "stem.proj.weight") == "vit8.stem.proj.weight"


def test_a_candidate_outside_the_space_is_refused_naming_the_tensor(cifar_net):
    _, net = cifar_net
    wide = Architecture.parse("C-C-C-C L=2,1,1,1,1 D=16,32,64,96,256 strides=2,2,1,2")  # S4 up to 192
    with pytest.raises(ValueError, match=r"not in the supernet's space: its tensor stages\.3\.blocks\.0\."):
        extract(net.state_dict(), wide, 10, 32)
    with pytest.raises(ValueError, match="not in the supernet's space"):
        net(torch.randn(2, 3, 32, 32), wide)


def test_the_supernet_section_is_validated_with_its_own_keys():
    with pytest.raises(ConfigError, match=r"s\.yaml: `train\.supernet\.stepz`: unknown key.*`steps`"):
        parse_train({"supernet": {"stepz": 10}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`train\.supernet\.regimes`"):
        parse_train({"supernet": {"regimes": "both"}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`train\.supernet`"):
        parse_train({"supernet": 5}, "s.yaml")
    assert parse_train({"supernet": {}}, "s.yaml").supernet.steps == 1000
    assert parse_train({}, "s.yaml").supernet is None


# ------------------------------------------------------------------------------------- the proxy, at toy size
@pytest.fixture
def tiny(write_space):
    path = write_space(extra="")
    text = path.read_text().replace("objective: {mode: single}", "objective: {mode: both, subset_fraction: 0.5}")
    text = text.replace("  batch_size: 32\n", "  batch_size: 32\n  supernet: {steps: 24, checkpoint_every: 8}\n")
    path.write_text(text)
    exp = load_experiment(path)
    from trainers.data.loading import load_dataset

    return exp, load_dataset(exp.train.data, 32, 1)


def _train(exp, ds, regime: str, chunks: list[int] | None = None):
    from trainers.training.supernet import train_chunk

    arrays, step, figures = None, 0, []
    while step < exp.train.supernet.steps:
        arrays, fig = train_chunk(exp.space, ds, exp.train, exp.objective, regime, arrays, step)
        step = int(fig["step"])
        figures.append(fig)
    return arrays, figures


def test_supernet_training_learns_and_its_state_survives_a_round_trip(tiny):
    from trainers.training.supernet import _load_state, _state_arrays, train_chunk
    from trainers.training.supernet_state import EXP_AVG

    exp, ds = tiny
    sn = dataclasses.replace(exp.train.supernet, steps=60, checkpoint_every=20)
    train = dataclasses.replace(exp.train, supernet=sn)
    exp = dataclasses.replace(exp, train=train)
    arrays, figures = _train(exp, ds, "full")
    assert [f["step"] for f in figures] == [20, 40, 60]
    assert figures[-1]["loss"] < figures[0]["loss"]  # 4 classes of synthetic data
    assert any(k.startswith(EXP_AVG) for k in arrays)
    # the state reloads exactly: weights, AdamW moments and the generator
    from trainers.training.fit import _optimizer
    from trainers.training.supernet import spec_of

    net = Supernet(spec_of(exp.space, ds.num_classes))
    opt, _ = _optimizer(net, exp.train, torch.device("cpu"), 60)
    gen = torch.Generator()
    _load_state(net, opt, gen, arrays, torch.device("cpu"))
    again = _state_arrays(net, opt, gen)
    assert again.keys() == arrays.keys() and all(np.array_equal(again[k], arrays[k]) for k in arrays)
    # another space's state is refused
    other = load_space("coatnet-cifar.yaml")
    with pytest.raises(ValueError, match="does not fit this space"):
        train_chunk(other, ds, exp.train, exp.objective, "full", arrays, 60)


def test_a_diverging_supernet_raises_diverged(tiny):
    from trainers.training.fit import Diverged

    exp, ds = tiny
    sn = dataclasses.replace(exp.train.supernet, lr=1e6, steps=8)
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, supernet=sn, grad_clip=0.0))
    with pytest.raises(Diverged, match="supernet's training loss"):
        _train(exp, ds, "full")


def test_trials_inherit_both_regimes_and_fail_cleanly_without_weights(tiny):
    from trainers.training.proxy import train_candidate
    from trainers.training.supernet_state import regimes_of, weights_of

    exp, ds = tiny
    weights = {}
    for regime in regimes_of(exp.train, exp.objective):
        arrays, _ = _train(exp, ds, regime)
        weights[regime] = {k: torch.from_numpy(v) for k, v in weights_of(arrays).items()}
    assert set(weights) == {"generalization", "full"}
    arch = exp.space.sample(random.Random(0))
    rounds = []
    res = train_candidate(arch, ds, exp.train, exp.objective, supernet=weights, on_epoch=lambda e, m: rounds.append(m))
    assert res.status == "ok", res.reason
    assert [r["epoch_total"] for r in rounds] == [1, 2] and rounds[-1]["rounds_total"] == 2
    assert res.metrics["steps"] == 0
    # the two regimes inherit different weights: the generalization regime's fit is measured on its subset
    assert res.metrics["gen_train_size"] == pytest.approx(len(ds.y_train) * 0.5, abs=4)
    ft = dataclasses.replace(exp.train, supernet=dataclasses.replace(exp.train.supernet, finetune_steps=3))
    tuned = train_candidate(arch, ds, ft, exp.objective, supernet=weights)
    assert tuned.status == "ok" and tuned.metrics["steps"] == 6
    missing = train_candidate(arch, ds, exp.train, exp.objective)
    assert missing.status == "error" and "needs its supernet's weights" in missing.reason


def test_a_state_is_checked_tensor_by_tensor_against_the_space(tiny):
    from trainers.training.supernet import state_problem, train_chunk
    from trainers.training.supernet_state import ADAM_STEP, EXP_AVG_SQ, RNG, WEIGHTS

    exp, ds = tiny
    arrays, _ = train_chunk(exp.space, ds, exp.train, exp.objective, "full", None, 0)
    assert state_problem(exp.space, ds.num_classes, arrays) is None
    key = next(k for k in arrays if k.startswith(EXP_AVG_SQ))
    name = key[len(EXP_AVG_SQ) :]

    def broken(change) -> str:
        bad = dict(arrays)
        change(bad)
        return state_problem(exp.space, ds.num_classes, bad)

    assert "lacks the tensor head.fc.weight" in broken(lambda a: a.pop(WEIGHTS + "head.fc.weight"))
    assert "is float16" in broken(lambda a: a.update({WEIGHTS + name: a[WEIGHTS + name].astype(np.float16)}))
    assert "is int64" in broken(lambda a: a.update({WEIGHTS + name: a[WEIGHTS + name].astype(np.int64)}))
    assert "incomplete" in broken(lambda a: a.pop(key))
    assert "step count" in broken(lambda a: a.update({ADAM_STEP + name: np.zeros(3)}))
    assert "generator state" in broken(lambda a: a.update({RNG: a[RNG][:100]}))
    assert "the first: w/extra" in broken(lambda a: a.update({"w/extra": np.zeros(1, np.float32)}))
    assert "not float32 (32, 3, 3, 3)" in state_problem(load_space("coatnet-cifar.yaml"), 10, arrays)  # another space's


def test_finalists_cannot_ask_for_a_supernet(write_space):
    path = write_space(extra="finalists: {top_k: 1, train: {supernet: {steps: 10}}}\n")
    with pytest.raises(
        ConfigError, match=r"`finalists\.train\.supernet`: is not a verification protocol.*leave it out"
    ):
        load_experiment(path)
