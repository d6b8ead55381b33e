"""What a round's measurement sees (trainers.training.measure): the validation subset
(``objective.val_eval_limit``), the BatchNorm images (``train.bn_recalibrate``, ``train.bn_source``), the
fit measured in the pass that recomputes the statistics, and the default measurement left as it was."""

import copy
import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch

from nas import Architecture
from nas.errors import ConfigError
from nas.model.builder import build_model
from trainers.data.config import DataConfig
from trainers.data.loading import load_dataset
from trainers.objectives.registry import ObjectiveConfig
from trainers.training.config import TrainConfig, parse_objective, parse_train
from trainers.training.fit import fit, seed_everything
from trainers.training.measure import Probe, evaluate, recalibrate_and_evaluate, recalibrate_bn
from trainers.training.proxy import fit_eval_subset, train_candidate

CONV = Architecture.parse("C-C-C-T L=1,1,1,1,1 D=16,16,32,32,64")  # BatchNorm in the stem and the C stages
VIT = Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=8")  # LayerNorm only
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(), 16, 1)  # 1,437 training and 360 validation images, 10 classes


def _trained(arch, ds, train, *, eval_idx=None, val_idx=None):
    """A model trained by ``fit`` and its last row."""
    seed_everything(train.seed)
    model = build_model(arch, num_classes=ds.num_classes, image_size=ds.image_size, in_chans=ds.in_chans)
    rows = list(fit(model, ds, train, device=CPU, eval_idx=eval_idx, val_idx=val_idx))
    return model, rows[-1]


def _first_bn(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _stem_statistics(model, x):
    """Mean and unbiased variance per channel of what the first BatchNorm sees for the images ``x`` (its
    input does not depend on any BatchNorm statistics)."""
    seen = []
    hook = _first_bn(model).register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        hook.remove()
        model.train(was)
    h = seen[0]
    return h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)


def test_new_knobs_are_validated_with_the_file_key_and_what_is_allowed():
    assert (TrainConfig().bn_source, ObjectiveConfig().val_eval_limit) == ("train", None)  # today's measurement
    assert parse_train({"bn_source": "fit"}, "s.yaml").bn_source == "fit"
    assert parse_objective({"val_eval_limit": 500}, "s.yaml").val_eval_limit == 500
    assert parse_objective({"val_eval_limit": None}, "s.yaml").val_eval_limit is None
    with pytest.raises(ConfigError, match=r"^s.yaml: `train.bn_source`: is not one of.*'train' \| 'fit'"):
        parse_train({"bn_source": "batch"}, "s.yaml")
    with pytest.raises(ConfigError, match=r"^s.yaml: `objective.val_eval_limit`: is out of range \(got 0\).*null"):
        parse_objective({"val_eval_limit": 0}, "s.yaml")
    for bad in ("all", True, 2.5):
        with pytest.raises(ConfigError, match=r"`objective.val_eval_limit`: has the wrong type.*an integer or null"):
            parse_objective({"val_eval_limit": bad}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`objective.val_eval_limt`: unknown key.*Did you mean `val_eval_limit`"):
        parse_objective({"val_eval_limt": 5}, "s.yaml")


def test_the_measurement_study_names_valid_protocols():
    from nas import yamlio

    path = Path(__file__).parent.parent / "search_spaces" / "studies" / "measure-cifar.yaml"
    study = yamlio.load_yaml_file(path)
    sections = [*study["proxies"].values(), study["reference"]]
    for s in sections:
        parse_train(s.get("train"), str(path)), parse_objective(s.get("objective"), str(path))
    assert study["reference"]["seeds"] == [0] and study["study"]["architectures"] == 30


def test_validation_subset_is_stratified_fixed_and_what_the_round_measures(digits):
    ds = digits
    idx = fit_eval_subset(ds.y_val, 100, seed=0)
    assert 95 <= len(idx) <= 105 and len(set(idx.tolist())) == len(idx)  # about 100, rounded per class
    full, sub = Counter(ds.y_val.tolist()), Counter(ds.y_val[idx].tolist())
    assert set(sub) == set(full)  # every class
    for c, n in full.items():  # each class in proportion, rounded
        assert sub[c] == max(1, round(n * 100 / len(ds.y_val))), c
    assert torch.equal(idx, fit_eval_subset(ds.y_val, 100, seed=0))  # fixed: the same for every architecture
    assert not torch.equal(idx, fit_eval_subset(ds.y_val, 100, seed=1))
    assert fit_eval_subset(ds.y_val, None, 0) is None and fit_eval_subset(ds.y_val, len(ds.y_val), 0) is None

    train = TrainConfig(steps=6, batch_size=32, lr=3e-3, bn_recalibrate=64)
    model, row = _trained(CONV, ds, train, eval_idx=torch.arange(50), val_idx=idx)
    loss, acc = evaluate(model, ds.x_val.subset(idx), ds.y_val[idx], train, CPU, True)
    assert (row["val_loss"], row["val_acc"]) == (loss, acc)  # measured on those images, and only those
    assert abs(row["val_acc"] * len(idx) - round(row["val_acc"] * len(idx))) < 1e-9


def test_bn_recalibration_sees_exactly_its_count_of_images(digits):
    x = digits.x_train.float()
    model = build_model(CONV, num_classes=10, image_size=16, in_chans=1)
    for count in (40, 128):
        assert recalibrate_bn(model, x, images=count, batch_size=512, seed=3)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
        mean, var = _stem_statistics(model, x[perm[:count]])
        assert torch.allclose(_first_bn(model).running_mean, mean, atol=1e-5)
        assert torch.allclose(_first_bn(model).running_var, var, rtol=1e-4)
        other, _ = _stem_statistics(model, x[perm[: count + 40]])
        assert not torch.allclose(_first_bn(model).running_mean, other, atol=1e-5)


def test_bn_from_the_fit_images_is_one_pass_that_measures_their_eval_mode_fit(digits):
    ds = digits
    x_fit, y_fit = ds.x_train.subset(torch.arange(300)), ds.y_train[:300]
    train = TrainConfig(steps=6, batch_size=32, lr=3e-3, bn_source="fit")
    model, _ = _trained(CONV, ds, dataclasses.replace(train, bn_source="train"))
    separate = copy.deepcopy(model)

    loss, acc = recalibrate_and_evaluate(model, x_fit, y_fit, train, CPU, True)
    mean, var = _stem_statistics(model, x_fit.float())
    assert torch.allclose(_first_bn(model).running_mean, mean, atol=1e-5)  # the fit images' own statistics
    assert torch.allclose(_first_bn(model).running_var, var, rtol=1e-4)
    assert _first_bn(model).momentum == 0.1 and not model.training  # restored

    recalibrate_bn(separate, x_fit, len(y_fit), batch_size=512, seed=0)  # the same statistics, a pass of its own
    loss2, acc2 = evaluate(separate, x_fit, y_fit, train, CPU, True)
    # the pass normalises with the biased variance, eval mode with the unbiased one PyTorch records: a
    # relative 1/(2n) of a layer's scale (n = 300 values per channel where the map is 1x1), so an image on
    # the edge of two classes may flip
    assert abs(acc - acc2) * len(y_fit) <= 2 and loss == pytest.approx(loss2, rel=1e-3)
    for a, b in zip(model.state_dict().values(), separate.state_dict().values()):  # images in another order
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)  # what validation is measured with
    (vl, va), (vl2, va2) = (evaluate(m, ds.x_val, ds.y_val, train, CPU, True) for m in (model, separate))
    assert abs(va - va2) * len(ds.y_val) <= 1 and vl == pytest.approx(vl2, rel=1e-4)

    trained, row = _trained(CONV, ds, train, eval_idx=torch.arange(300))  # what a round of fit() does with it
    mean, _ = _stem_statistics(trained, x_fit.float())
    assert torch.allclose(_first_bn(trained).running_mean, mean, atol=1e-5)
    assert (row["val_loss"], row["val_acc"]) == evaluate(trained, ds.x_val, ds.y_val, train, CPU, True)
    assert (row["train_loss"], row["train_acc"]) == recalibrate_and_evaluate(trained, x_fit, y_fit, train, CPU, True)


def test_bn_from_fit_images_beyond_one_batch_and_models_without_bn_are_measured_exactly(digits):
    ds = digits
    x_fit, y_fit = ds.x_train.subset(torch.arange(256)), ds.y_train[:256]
    small = TrainConfig(steps=4, batch_size=32, eval_batch_size=128, bn_source="fit")  # 256 images: 2 batches
    model, _ = _trained(CONV, ds, dataclasses.replace(small, bn_source="train"))
    got = recalibrate_and_evaluate(model, x_fit, y_fit, small, CPU, True)
    assert got == evaluate(model, x_fit, y_fit, small, CPU, True)  # recalibrated over all 256, then evaluated
    mean, _ = _stem_statistics(model, x_fit.float())
    assert torch.allclose(_first_bn(model).running_mean, mean, atol=1e-5)

    vit, _ = _trained(VIT, ds, dataclasses.replace(small, bn_source="train"))
    assert recalibrate_and_evaluate(vit, x_fit, y_fit, small, CPU, True) == evaluate(
        vit, x_fit, y_fit, small, CPU, True
    )


def test_probe_limited_keeps_where_the_statistics_come_from(digits):
    ds = digits
    probe = Probe(ds.x_val, ds.y_val, ds.x_train, ds.y_train, 512, bn_from_fit=True)
    light = probe.limited(100, seed=0)
    assert light.bn_from_fit and light.bn_images == 100 and 95 <= len(light.y_fit) <= 105


def test_default_measurement_is_unchanged_and_cheaper_ones_leave_the_training_alone(digits):
    """The default protocol measures as before (BatchNorm from ``bn_recalibrate`` training images, the whole
    validation split, ``train_eval_limit`` fit images): the figures a trial reports are those measured on
    the trained model by the functions of before. A cheaper measurement changes the measured figures, never
    the training (same train-mode running figures every round)."""
    ds = digits
    train = TrainConfig(steps=10, batch_size=32, lr=3e-3, augment=True, seed=2, bn_recalibrate=200)
    objective = ObjectiveConfig(mode="both", subset_fraction=0.3, train_eval_limit=300)
    a = train_candidate(CONV, ds, train, objective)
    same = train_candidate(CONV, ds, train, dataclasses.replace(objective, val_eval_limit=len(ds.y_val)))
    assert a.metrics == {**same.metrics, **{k: a.metrics[k] for k in ("wall_s", "train_s", "images_per_s")}}

    ev = fit_eval_subset(ds.y_train, 300, train.seed)
    model, row = _trained(CONV, ds, dataclasses.replace(train, seed=2), eval_idx=ev)
    x_fit, y_fit = ds.x_train.subset(ev), ds.y_train[ev]
    recalibrate_bn(model, ds.x_train, 200, train.eval_batch_size, train.seed, True)
    assert (row["val_loss"], row["val_acc"]) == evaluate(model, ds.x_val, ds.y_val, train, CPU, True)
    assert (row["train_loss"], row["train_acc"]) == evaluate(model, x_fit, y_fit, train, CPU, True)

    cheap = train_candidate(
        CONV,
        ds,
        dataclasses.replace(train, bn_source="fit"),
        dataclasses.replace(objective, val_eval_limit=100, train_eval_limit=120),
    )
    assert cheap.status == "ok" and cheap.metrics["steps"] == a.metrics["steps"]
    for h, g in zip(a.history, cheap.history, strict=True):
        assert (h["running_loss"], h["running_acc"]) == (g["running_loss"], g["running_acc"])
    assert cheap.metrics["val_acc"] != a.metrics["val_acc"] or cheap.metrics["val_loss"] != a.metrics["val_loss"]
    n = len(fit_eval_subset(ds.y_val, 100, train.seed))
    assert all(abs(h["val_acc"] * n - round(h["val_acc"] * n)) < 1e-9 for h in cheap.history)


def test_the_shipped_cifar_protocol_measures_as_the_study_variant_it_names():
    """coatnet-cifar.yaml ships the measurement that measure-cifar.yaml's ``v500-fused250`` measured
    (docs/fidelity.md): 500 validation images, 250 fit images, BatchNorm statistics from those."""
    from nas import yamlio

    root = Path(__file__).parent.parent / "search_spaces"
    space = yamlio.load_yaml_file(root / "coatnet-cifar.yaml")
    variant = yamlio.load_yaml_file(root / "studies" / "measure-cifar.yaml")["proxies"]["v500-fused250"]
    train, objective = parse_train(space["train"]), parse_objective(space["objective"])
    assert (train.bn_source, objective.train_eval_limit, objective.val_eval_limit) == ("fit", 250, 500)
    for key, value in variant["train"].items():
        assert getattr(train, key) == value, key
    for key, value in variant["objective"].items():
        assert getattr(objective, key) == value, key


def test_the_new_knobs_at_their_defaults_leave_a_study_fingerprint_as_before():
    """Study directories made before bn_source/val_eval_limit existed still resume: at their defaults the
    keys are not part of what the fingerprint hashes; set otherwise, they are."""
    import dataclasses

    from nas.fidelity.config import Protocol, _plain
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.config import TrainConfig

    # protocols at the measurement of before (no data needed: a study's fingerprint hashes its protocols)
    protocols = [
        Protocol("proxy", TrainConfig(), ObjectiveConfig(train_eval_limit=1000), (0,)),
        Protocol("reference", TrainConfig(steps=None, epochs=3, bn_recalibrate=1024), ObjectiveConfig(), (0, 1)),
    ]
    for p in protocols:
        plain = _plain(p)
        assert "bn_source" not in plain["train"] and "val_eval_limit" not in plain["objective"]
        cheap = dataclasses.replace(
            p,
            train=dataclasses.replace(p.train, bn_source="fit"),
            objective=dataclasses.replace(p.objective, val_eval_limit=500),
        )
        assert _plain(cheap)["train"]["bn_source"] == "fit" and _plain(cheap)["objective"]["val_eval_limit"] == 500
