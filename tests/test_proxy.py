import dataclasses
import math

import pytest
import torch

from nas import Architecture
from nas.errors import ConfigError
from trainers.data.config import DataConfig
from trainers.data.loading import Dataset, load_dataset
from trainers.objectives.registry import ObjectiveConfig
from trainers.training.config import TrainConfig, parse_train
from trainers.training.proxy import train_candidate

ARCH = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=16,16,32,32,64")
FAST = TrainConfig(epochs=2, batch_size=32, lr=3e-3)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def digits():
    return load_dataset(DataConfig(), 16, 1)


def check_metrics(r):
    assert r.status == "ok", r.reason
    m = r.metrics
    for key in (
        "params",
        "macs",
        "images_per_s",
        "wall_s",
        "val_acc",
        "train_acc",
        "gap",
        "train_loss",
        "epochs",
        "gen_val_acc",
        "gen_train_acc",
        "gen_gap",
        "cap_train_acc",
        "cap_train_loss",
    ):
        assert key in m and math.isfinite(m[key]), key
    for key in ("val_acc", "train_acc", "gen_val_acc", "gen_train_acc", "cap_train_acc"):
        assert 0.0 <= m[key] <= 1.0
    assert m["gap"] == pytest.approx(m["train_acc"] - m["val_acc"])
    assert m["gen_gap"] == pytest.approx(m["gen_train_acc"] - m["gen_val_acc"])
    assert 0 <= r.generalization <= 1 and 0 <= r.capacity <= 1 and 0 <= r.score <= 1
    assert m["params"] > 0 and m["macs"] > 0 and m["images_per_s"] > 0


def test_digits_single_mode_learns_and_reports_each_epoch():
    seen = []
    r = train_candidate(ARCH, digits(), FAST, ObjectiveConfig(mode="single"), on_epoch=lambda e, m: seen.append((e, m)))
    check_metrics(r)
    assert r.metrics["val_acc"] > 0.6  # chance is 0.1
    assert [e for e, _ in seen] == [1, 2] and len(r.history) == 2
    for _, m in seen:
        assert {"score", "generalization", "capacity", "train_loss"} <= set(m)
        assert all(isinstance(v, float) for v in m.values())
    assert r.metrics["gen_val_acc"] == r.metrics["val_acc"]  # single mode: one training gives both


def test_synthetic_both_modes_above_chance_and_deterministic():
    data = load_dataset(
        DataConfig(name="synthetic", synthetic_samples=400, synthetic_classes=4, synthetic_difficulty=0.3), 16, 3
    )
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, augment=True, seed=5)
    objective = ObjectiveConfig(mode="both", subset_fraction=0.25)
    epochs = []
    a = train_candidate(ARCH, data, cfg, objective, on_epoch=lambda e, m: epochs.append(e))
    check_metrics(a)
    assert a.metrics["val_acc"] > 0.5  # chance is 0.25
    assert a.metrics["gen_train_size"] == 80
    # both regimes take the same number of optimizer steps (more passes over the small subset) and
    # report once per full-split epoch's worth of steps
    gen = [h for h in a.history if h["regime"] == "generalization"]
    full = [h for h in a.history if h["regime"] == "full"]
    assert [h["step"] for h in gen] == [h["step"] for h in full] == [10, 20, 30]
    assert gen[-1]["passes"] > 3 * full[-1]["passes"]
    assert epochs == list(range(1, 7)) and a.metrics["epochs"] == 6
    b = train_candidate(ARCH, data, cfg, objective)

    def strip(m):
        return {k: v for k, v in m.items() if k not in ("wall_s", "images_per_s", "train_s")}

    assert strip(a.metrics) == strip(b.metrics)
    assert (a.generalization, a.capacity, a.score) == (b.generalization, b.capacity, b.score)


def test_huge_lr_diverges_without_raising():
    r = train_candidate(
        ARCH,
        digits(),
        TrainConfig(epochs=1, batch_size=32, lr=1e8, grad_clip=0.0, warmup=0.0),
        ObjectiveConfig(mode="single"),
    )
    assert r.status == "diverged" and "training loss" in r.reason
    assert r.score == 0.0 and r.generalization == 0.0 and r.metrics["params"] > 0


def test_model_error_is_a_result_and_callback_exceptions_propagate():
    # data with 2 channels for a model built for `in_chans` 1: the model's forward raises
    d = digits()
    bad = Dataset(
        d.x_train.float().repeat(1, 2, 1, 1), d.y_train, d.x_val.float().repeat(1, 2, 1, 1), d.y_val, 10, 1, "bad"
    )
    r = train_candidate(ARCH, bad, FAST, ObjectiveConfig(mode="single"))
    assert r.status == "error" and "RuntimeError" in r.reason and "channels" in r.reason
    assert r.score == 0.0 and r.metrics["params"] > 0

    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        raise Stop()

    with pytest.raises(Stop):
        train_candidate(ARCH, digits(), FAST, ObjectiveConfig(mode="single"), on_epoch=stop)


def test_steps_budget_and_train_yaml():
    cfg = parse_train({"steps": 5, "batch_size": 16, "data": {"name": "digits"}}, "s.yaml")
    r = train_candidate(ARCH, digits(), cfg, ObjectiveConfig(mode="single"))
    assert r.metrics["steps"] == 5 and r.metrics["epochs"] == 1
    with pytest.raises(ConfigError, match=r"s.yaml: `train.data.nme`: unknown key.*Did you mean `name`"):
        parse_train({"data": {"nme": "digits"}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`train.precision`.*'auto' \| 'bf16' \| 'fp32'"):
        parse_train({"precision": "fp16"}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`train.lr`: is out of range.*> 0"):
        parse_train({"lr": 0}, "s.yaml")


@pytest.mark.parametrize("name", ["coatnet.yaml", "coatnet-paper.yaml"])
def test_shipped_spaces_have_valid_train_and_objective(name):
    from pathlib import Path

    import yaml

    from trainers.training.config import parse_objective

    path = Path(__file__).parent.parent / "search_spaces" / name
    data = yaml.safe_load(path.read_text())
    train, objective = parse_train(data["train"], str(path)), parse_objective(data["objective"], str(path))
    assert train.data.name == "digits" and objective.mode == "both"


def test_out_of_memory_is_a_result():
    # a classifier over 2**42 classes needs petabytes: the allocator refuses at once (no swap storm)
    d = digits()
    huge = Dataset(d.x_train, d.y_train, d.x_val, d.y_val, 2**42, 1, "huge")
    r = train_candidate(ARCH, huge, FAST, ObjectiveConfig(mode="single"))
    assert r.status == "oom" and "out of memory on cpu" in r.reason
    assert r.score == 0.0 and r.metrics["params"] > 2**42


def test_objective_weights_error_names_the_file():
    from trainers.training.config import parse_objective

    with pytest.raises(ConfigError, match=r"^s.yaml: `objective.weight_generalization`.*both 0"):
        parse_objective({"weight_generalization": 0, "weight_capacity": 0}, "s.yaml")


def test_augment_crops_windows_of_the_padded_image_and_flips():
    from trainers.training.fit import _augment

    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    flips = 0
    for seed in range(8):
        out = _augment(x, torch.Generator().manual_seed(seed))
        assert out.shape == x.shape
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        for b in range(2):
            windows = [padded[b, :, i : i + 8, j : j + 8] for i in range(3) for j in range(3)]
            plain = any(torch.equal(out[b], w) for w in windows)
            flipped = any(torch.equal(out[b], w.flip(-1)) for w in windows)
            assert plain or flipped
            flips += flipped and not plain
    assert 0 < flips < 16


def _fit(arch: Architecture, ds: Dataset, train: TrainConfig):
    from nas.model.builder import build_model
    from trainers.training.fit import fit, seed_everything

    seed_everything(0)
    model = build_model(arch, num_classes=ds.num_classes, image_size=ds.image_size, in_chans=ds.in_chans)
    it, rows = fit(model, ds, train), []
    while True:
        try:
            rows.append(next(it))
        except StopIteration as stop:
            return stop.value, rows


def test_one_epoch_on_digits_evaluates_far_above_chance_once_bn_statistics_are_recomputed():
    ds = load_dataset(DataConfig(), 32, 1)
    arch = Architecture.parse("C-C-C-C L=2,1,1,1,1 D=16,32,32,64,64")  # BatchNorm everywhere
    fixed, rows = _fit(arch, ds, TrainConfig(epochs=1))
    stale, _ = _fit(arch, ds, TrainConfig(epochs=1, bn_recalibrate=0))
    assert fixed.metrics["val_acc"] > 0.7  # chance is 0.1
    assert fixed.metrics["val_acc"] > stale.metrics["val_acc"] + 0.3  # running averages still near their init
    # the per-round row is the same kind of measurement as the final figures (eval mode, recomputed BN)
    assert rows[-1]["train_acc"] == fixed.metrics["train_acc"] and rows[-1]["val_acc"] == fixed.metrics["val_acc"]
    assert "running_acc" in rows[-1] and rows[-1]["running_acc"] != rows[-1]["train_acc"]


def test_recalibrated_bn_statistics_are_the_exact_statistics_of_the_images():
    from nas.model.builder import build_model
    from trainers.training.measure import recalibrate_bn

    torch.manual_seed(0)
    model = build_model(
        Architecture.parse("C-C-C-C L=2,1,1,1,1 D=8,8,16,16,32"), num_classes=4, image_size=32, in_chans=1
    )
    model.train()
    x = torch.randn(96, 1, 32, 32)
    assert recalibrate_bn(model, x, images=96, batch_size=96)
    assert model.training  # the mode is restored
    with torch.no_grad():
        h = model.stem.conv1(x)
    bn = model.stem.norm1
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert bn.momentum == 0.1
    assert not recalibrate_bn(
        build_model(
            Architecture.parse("ViT_REL L=1,1,1,1,1 D=32,32,32,32,32 patch=8"), num_classes=4, image_size=32, in_chans=1
        ),
        x,
        96,
        96,
    )


def test_finer_rounds_with_light_measurements_leave_the_training_and_its_result_unchanged():
    """``report_every`` splits each regime into rounds; ``round_eval_limit`` measures the rounds before a
    regime's last on a fixed stratified subset. The training itself (steps, batches, augmentation) and the
    final measurement are those of the one-round protocol."""
    data = digits()
    objective = ObjectiveConfig(mode="both", subset_fraction=0.3)
    coarse = TrainConfig(steps=12, batch_size=32, lr=3e-3, augment=True, seed=3)
    fine = dataclasses.replace(coarse, report_every=5, round_eval_limit=20)
    seen = []
    a = train_candidate(ARCH, data, coarse, objective)
    b = train_candidate(ARCH, data, fine, objective, on_epoch=lambda e, m: seen.append(e))
    check_metrics(b)
    for key in ("gen_val_acc", "gen_train_acc", "cap_train_acc", "cap_train_loss", "val_acc", "val_loss"):
        assert b.metrics[key] == a.metrics[key], key
    assert b.score == a.score
    assert [h["step"] for h in a.history] == [12, 12]
    assert [(h["regime"][0], h["step"]) for h in b.history] == [(r, s) for r in "gf" for s in (5, 10, 12)]
    assert seen == list(range(1, 7)) and all(h["rounds_total"] == 6 for h in b.history)
    assert all(h["eval_s"] > 0 and h["round_s"] >= h["eval_s"] for h in b.history)
    n_val = len(data.y_val)
    for h in b.history:  # 20 of the validation images (2 per class) before a regime's last round
        n = 20 if h["step"] < 12 else n_val
        assert abs(h["val_acc"] * n - round(h["val_acc"] * n)) < 1e-9, (h["step"], h["val_acc"])
    assert any(abs(h["val_acc"] * 20 - round(h["val_acc"] * 20)) > 1e-9 for h in b.history if h["step"] == 12)
    with pytest.raises(ConfigError, match=r"`train.report_every`: is out of range.*>= 1"):
        parse_train({"report_every": 0}, "s.yaml")
    with pytest.raises(ConfigError, match=r"`train.round_eval_limit`: is out of range.*>= 2"):
        parse_train({"round_eval_limit": 1}, "s.yaml")
