"""The trained-model artefact (``nas-train``'s folder: model.safetensors + model.yaml) and the one resize policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nas import Architecture
from nas.errors import ConfigError, UserError
from nas.export.model_config import (
    load_model_config,
    load_trained_model,
    read_trained,
    save_model_config,
    save_trained,
)
from nas.model.arch import ModelConfig, Preprocessing
from nas.model.builder import build_model
from trainers.data.images import fit_tensor
from trainers.data.readers import decode_rgb, fit_image

ARCH = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=8,8,16,32,32")


def _config(**kw) -> ModelConfig:
    base = dict(
        arch=ARCH,
        num_classes=3,
        image_size=16,
        in_chans=3,
        preprocessing=Preprocessing((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)),
        class_names=("cat", "dog", "bird"),
    )
    return ModelConfig(**{**base, **kw})


def test_save_and_read_round_trip(tmp_path):
    mc = _config()
    torch.manual_seed(0)
    model = build_model(mc)
    save_trained(tmp_path / "m", mc, model.state_dict())
    again, mc2 = load_trained_model(tmp_path / "m")
    assert mc2 == mc and mc2.class_names == ("cat", "dog", "bird") and mc2.preprocessing.std == (0.2, 0.25, 0.3)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model.eval()(x), again(x))
    # the file itself, or its config, names the same model
    assert read_trained(tmp_path / "m" / "model.safetensors").model_config == mc
    assert read_trained(tmp_path / "m" / "model.yaml").model_config == mc
    doc = yaml.safe_load((tmp_path / "m" / "model.yaml").read_text())
    assert doc["format"] == 2 and doc["preprocessing"]["resize"] == "shorter-side-center-crop"
    with pytest.raises(UserError, match="--force"):  # never replaced silently
        save_trained(tmp_path / "m", mc, model.state_dict())


def test_a_format_1_config_reads_without_preprocessing(tmp_path):
    doc = _config(preprocessing=None, class_names=None).to_dict()
    doc["format"] = 1
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(doc))
    mc = load_model_config(tmp_path / "old.yaml")
    assert mc.preprocessing is None and mc.labels() == ("0", "1", "2")


@pytest.mark.parametrize(
    "change, key",
    [
        ({"class_names": ["a", "b"]}, "class_names"),
        ({"class_names": ["a", "a", "b"]}, "class_names"),
        ({"class_names": ["a", "", "b"]}, "class_names[1]"),
        ({"preprocessing": {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}}, "preprocessing.mean"),
        ({"preprocessing": {"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}}, "preprocessing.std"),
        ({"preprocessing": {"mean": [0.5, float("nan"), 0.5], "std": [0.2] * 3}}, "preprocessing.mean"),
        ({"preprocessing": {"mean": [0.5] * 3, "std": [0.2] * 3, "resize": "squash"}}, "preprocessing.resize"),
        ({"preprocessing": {"mean": [0.5] * 3, "std": [0.2] * 3, "crop": 0.875}}, "preprocessing.crop"),
    ],
)
def test_bad_preprocessing_or_class_names_name_the_key(tmp_path, change, key):
    doc = {"format": 2, **_config().to_dict(), **change}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_model_config(tmp_path / "m.yaml")
    assert f"`{key}`" in str(err.value) and "m.yaml" in str(err.value)


def test_weights_and_config_of_different_trainings_are_refused(tmp_path):
    mc = _config()
    save_trained(tmp_path / "a", mc, build_model(mc).state_dict())
    other = _config(num_classes=2, class_names=("x", "y"))
    save_model_config(other, tmp_path / "a" / "model.yaml")
    with pytest.raises(UserError, match="do not belong together"):
        read_trained(tmp_path / "a")


def test_foreign_or_damaged_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    mc = _config()
    save_trained(tmp_path / "a", mc, build_model(mc).state_dict())
    save_file({"w": torch.zeros(2)}, str(tmp_path / "a" / "model.safetensors"))  # no coatnas metadata
    with pytest.raises(UserError, match="not written by `nas-train`"):
        read_trained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(UserError, match="not a safetensors weights file"):
        read_trained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        read_trained(tmp_path / "a")
    state = build_model(mc).state_dict()
    state[next(k for k, v in state.items() if v.is_floating_point())].fill_(float("nan"))
    save_trained(tmp_path / "b", mc, state)
    with pytest.raises(UserError, match="NaN"):
        read_trained(tmp_path / "b")


def test_weights_of_another_shape_are_refused_when_built(tmp_path):
    from safetensors.torch import save

    mc = _config()
    state = build_model(mc).state_dict()
    save_trained(tmp_path / "a", mc, state)
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[name] = torch.zeros(1, 1, 1, 1)
    meta = {"format": "pt", "coatnas": "1", "architecture": str(ARCH), "num_classes": "3", "in_chans": "3"}
    (tmp_path / "a" / "model.safetensors").write_bytes(save(state, metadata=meta))
    with pytest.raises(UserError, match="of another shape or type"):
        load_trained_model(tmp_path / "a")


# --------------------------------------------------------------------------------------------- resize policy
def _gradient(w: int, h: int) -> Image.Image:
    x = np.zeros((h, w, 3), np.uint8)
    x[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    x[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return Image.fromarray(x)


@pytest.mark.parametrize("w, h", [(40, 20), (20, 40), (64, 64), (16, 16), (9, 13), (33, 32)])
def test_the_policy_keeps_the_aspect_ratio_and_the_centre(tmp_path, w, h):
    im = _gradient(w, h)
    out = fit_image(im, 16)
    assert out.size == (16, 16)
    if (w, h) == (16, 16):
        assert out is im  # a square image of the model's size is left as it is
    # the centre pixel keeps its place: a squash would move it as well, a corner crop would not keep it
    arr = np.asarray(out).astype(int)
    src = np.asarray(im).astype(int)
    assert abs(arr[8, 8, 0] - src[h // 2, w // 2, 0]) <= 255 * 3 / min(w, h) + 2
    # the wide image is cropped at the sides only: the full vertical gradient survives
    if w >= 2 * h:
        assert arr[0, 8, 1] < 40 and arr[-1, 8, 1] > 215 and arr[8, 0, 0] > 20
    path = tmp_path / "im.png"
    im.save(path)
    assert np.array_equal(decode_rgb(path, (16, 16)), arr.astype(np.uint8))  # files go through the policy


@pytest.mark.parametrize("w, h", [(40, 20), (20, 40), (32, 32), (8, 8)])
def test_arrays_follow_the_same_geometry_as_files(w, h):
    im = _gradient(w, h)
    t = torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy())[None].float() / 255
    arr = fit_tensor(t, 16)[0].permute(1, 2, 0).numpy() * 255
    ref = np.asarray(fit_image(im, 16)).astype(float)
    assert arr.shape == ref.shape
    assert np.abs(arr - ref).mean() < 3.0  # the same pixels up to the two bilinear filters' rounding


# ------------------------------------------------------------------- what the hostile pass found (issue 21)
def test_no_other_command_writes_over_or_into_a_trained_model(tmp_path):
    from nas.cli.export import main as export
    from nas.fsio import check_output_dir, check_output_file

    mc = _config()
    save_trained(tmp_path / "m", mc, build_model(mc).state_dict())
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    for out in ("model.yaml", "model.safetensors", "metrics.json"):
        with pytest.raises(UserError, match="trained model"):
            check_output_file(tmp_path / "m" / out, force=True)
    with pytest.raises(UserError, match="trained model"):
        check_output_dir(tmp_path / "m", ("config.json",), force=True)
    assert export([str(tmp_path / "m"), "--format", "timm", "--out", str(tmp_path / "m"), "--force"]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    # nas-train replacing its own output stays possible
    save_trained(tmp_path / "m", mc, build_model(mc).state_dict(), force=True)


def test_class_names_are_tied_to_the_weights(tmp_path):
    mc = _config()
    save_trained(tmp_path / "m", mc, build_model(mc).state_dict())
    save_model_config(_config(class_names=("bird", "dog", "cat")), tmp_path / "m" / "model.yaml")
    with pytest.raises(UserError, match="class_names"):
        read_trained(tmp_path / "m")


@pytest.mark.parametrize("version, match", [("abc", "not one"), ("99", "newer coatnas")])
def test_a_weights_format_that_is_not_ours_is_refused(tmp_path, version, match):
    from safetensors.torch import save

    mc = _config()
    save_trained(tmp_path / "m", mc, build_model(mc).state_dict())
    meta = {"format": "pt", "coatnas": version, "architecture": str(ARCH), "num_classes": "3", "in_chans": "3"}
    state = {k: v.contiguous() for k, v in build_model(mc).state_dict().items()}
    (tmp_path / "m" / "model.safetensors").write_bytes(save(state, metadata=meta))
    with pytest.raises(UserError, match=match):
        read_trained(tmp_path / "m")


def test_non_finite_outputs_are_refused_not_scored(tmp_path):
    from trainers.training.evaluate import evaluate

    mc = _config(preprocessing=Preprocessing((0.5, 0.4, 0.3), (1e-6, 1e-6, 1e-6)))
    model = build_model(mc).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    with pytest.raises(UserError, match="not finite"):
        evaluate(model, mc, x, np.zeros(4, np.int64))
    doc = {"format": 2, **_config().to_dict(), "preprocessing": {"mean": [1e308] * 3, "std": [0.2] * 3}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="preprocessing.mean"):
        load_model_config(tmp_path / "m.yaml")
