"""``nas-eval`` and its API (trainers.training.evaluate): a model trained by ``nas-train`` scored on a folder of
image files of several sizes and on an npz, against the same score computed by hand from the documented
preprocessing; the Wilson interval; class matching by name; and the errors a hostile user meets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_models import array_by_hand, by_hand, colour_pngs, digit_pngs, logits_by_hand, rgb_model, train_digits
from PIL import Image
from scipy.stats import binomtest

from nas.cli.evaluate import main
from nas.errors import UserError
from nas.export.model_config import load_trained_model
from trainers.training.evaluate import evaluate, load_eval_data, wilson_interval


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    torch.set_num_threads(1)
    return train_digits(tmp_path_factory.mktemp("trained"))


def _err(capsys, *, quiet: bool = False) -> str:
    """The error paragraph (no traceback); ``quiet``: nothing was printed on stdout (refused before scoring)."""
    out, err = capsys.readouterr()
    assert "Traceback" not in err and (out == "" or not quiet), out
    return " ".join(err.split())


def test_eval_of_a_folder_equals_the_score_computed_by_hand(tmp_path, digits_model, capsys):
    files = digit_pngs(tmp_path / "test", range(1000, 1120))
    _, config = load_trained_model(digits_model)
    x = torch.stack([by_hand(f, config) for f in files])
    logits = logits_by_hand(digits_model, x)
    y = torch.tensor(list(files.values()))
    correct = int((logits.argmax(-1) == y).sum())
    assert 0 < correct < len(y)  # a score that can tell a mistake in the preprocessing

    out = tmp_path / "metrics.json"
    args = ["--out", str(out), "--threads", "1", "--batch-size", "7"]  # batches that do not divide the images
    assert main([str(digits_model), str(tmp_path / "test"), *args]) == 0
    text = capsys.readouterr().out
    m = json.loads(out.read_text())
    assert m["n"] == len(files) and m["correct"] == correct and m["accuracy"] == pytest.approx(correct / len(y))
    ci = binomtest(correct, len(y)).proportion_ci(0.95, method="wilson")
    assert (m["interval"]["low"], m["interval"]["high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert m["interval"]["method"] == "Wilson score interval" and m["interval"]["confidence"] == 0.95
    assert m["interval"]["low"] < m["accuracy"] < m["interval"]["high"]
    expected_loss = float(torch.nn.functional.cross_entropy(logits, y))
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-4)
    by_class = {c["class"]: c for c in m["per_class"]}
    for name, c in by_class.items():
        sel = y == int(name)
        assert c["n"] == int(sel.sum()) and c["correct"] == int((logits.argmax(-1)[sel] == int(name)).sum())
    assert f"accuracy {correct / len(y):.4f} ({correct}/{len(y)})" in text
    assert "95% Wilson score interval" in text and "class" in text and "\n9 " in text


def test_eval_of_an_npz_of_another_size_equals_the_score_computed_by_hand(tmp_path, digits_model):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[1200:1400] * 255 / 16).astype(np.uint8)
    x = np.pad(x, ((0, 0), (1, 1), (3, 3)))  # 10 x 14: resized, then its centre cropped
    y = d.target[1200:1400]
    np.savez(tmp_path / "test.npz", x=x, y=y)
    model, config = load_trained_model(digits_model)
    logits = logits_by_hand(digits_model, array_by_hand(x, config))
    correct = int((logits.argmax(-1) == torch.from_numpy(y)).sum())
    data = load_eval_data(tmp_path / "test.npz", config)
    ev = evaluate(model, config, data.images, data.labels, batch_size=64)
    assert (ev.n, ev.correct) == (len(y), correct) and 0 < correct < len(y)
    assert ev.interval == pytest.approx(wilson_interval(correct, len(y)))
    # a held-out set of a single class is scored too (training needs two classes, scoring does not)
    ones = y == 3
    np.savez(tmp_path / "threes.npz", x=x[ones], y=y[ones])
    data = load_eval_data(tmp_path / "threes.npz", config)
    ev = evaluate(model, config, data.images, data.labels, batch_size=64)
    assert ev.n == int(ones.sum()) and ev.correct == int((logits.argmax(-1)[torch.from_numpy(ones)] == 3).sum())


def test_the_interval_holds_the_accuracy_and_narrows_with_n():
    widths = []
    for n in (10, 100, 1000, 10_000):
        low, high = wilson_interval(int(0.7 * n), n)
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.02
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 20)[1] > 0.1  # not empty at 0 correct, as the normal approximation would be
    ci = binomtest(8, 10).proportion_ci(0.95, method="wilson")
    assert wilson_interval(8, 10) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_a_subset_of_the_classes_is_matched_by_name(tmp_path):
    model_dir = rgb_model(tmp_path / "m")
    # sorted folders: bird, cat; the model's classes: cat, dog, bird
    files = colour_pngs(tmp_path / "test", ["bird", "cat"])
    model, config = load_trained_model(model_dir)
    data = load_eval_data(tmp_path / "test", config)
    want = {"cat": 0, "dog": 1, "bird": 2}
    assert [want[files[f]] for f in data.images] == data.labels.tolist()
    x = torch.stack([by_hand(f, config) for f in data.images])
    pred = logits_by_hand(model_dir, x).argmax(-1)
    ev = evaluate(model, config, data.images, data.labels, batch_size=3)
    assert ev.correct == int((pred == torch.from_numpy(data.labels)).sum())
    assert [(c.name, c.index, c.n) for c in ev.per_class] == [("cat", 0, 4), ("bird", 2, 4)]
    # an npz naming its classes is matched by name too; labels alone are the model's indices
    arr = np.stack([np.asarray(Image.open(f).convert("RGB").resize((16, 16))) for f in files])
    np.savez(tmp_path / "named.npz", x=arr, y=np.array([0] * 4 + [1] * 4), classes=np.array(["bird", "cat"]))
    assert load_eval_data(tmp_path / "named.npz", config).labels.tolist() == [2] * 4 + [0] * 4
    np.savez(tmp_path / "plain.npz", x=arr, y=np.array([0] * 4 + [1] * 4))
    assert load_eval_data(tmp_path / "plain.npz", config).labels.tolist() == [0] * 4 + [1] * 4


def test_cifar_test_split_of_a_python_folder(tmp_path):
    import pickle

    model_dir = rgb_model(tmp_path / "m")
    _, config = load_trained_model(model_dir)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 3 * 32 * 32), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": [0, 1, 2, 0, 1, 2]}, fh)
    # CIFAR-10's labels 0, 1, 2 are airplane, automobile, bird: named, so matched by name, and this model has no
    # airplane
    with pytest.raises(UserError, match="`airplane`, `automobile` are not among the model's classes"):
        load_eval_data(tmp_path, config)


def _bad(tmp_path, digits_model):
    """(arguments, words of the one-paragraph error) of hostile inputs."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "weightless").mkdir()
    (tmp_path / "weightless" / "model.yaml").write_text((digits_model / "model.yaml").read_text())
    files = digit_pngs(tmp_path / "good", range(0, 20))
    bad = tmp_path / "notimage" / "3"
    bad.mkdir(parents=True)
    (bad / "x.png").write_text("this is not a png")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.png").write_bytes(next(iter(files)).read_bytes())
    unknown = tmp_path / "unknown"
    colour_pngs(unknown, ["cat", "3"], per_class=1)
    np.savez(tmp_path / "beyond.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 9, 12]))
    np.savez(tmp_path / "rgba.npz", x=np.zeros((4, 8, 8, 4), np.uint8), y=np.array([0, 1, 0, 1]))
    (tmp_path / "exists.json").write_text("{}")
    good = str(tmp_path / "good")
    m = str(digits_model)
    return [
        ([str(tmp_path / "nope"), good], "no such file or folder"),
        ([str(tmp_path / "weightless"), good], "has no model.safetensors"),
        ([m, str(tmp_path / "notimage")], "x.png: not an image that can be read (cannot identify image file)."),
        ([m, str(tmp_path / "empty")], "no class sub-folder with images"),
        ([m, str(loose)], "`nas-predict"),
        ([m, str(unknown)], "the class folder `cat` is not among the model's classes (0, 1, 2"),
        ([m, str(tmp_path / "beyond.npz")], "`y` has labels up to 12, but the model has 10 classes"),
        ([m, str(tmp_path / "rgba.npz")], "neither N,1|3,H,W nor N,H,W,1|3 channels"),
        ([m, str(tmp_path / "nothing.npz")], "no such file or folder"),
        ([m, good, "--batch-size", "0"], "--batch-size must be 1 to 65,536"),
        ([m, good, "--threads", "0"], "--threads must be 1 to 1,024"),
        ([m, good, "--out", str(tmp_path / "exists.json")], "--force"),
        ([m, good, "--out", str(tmp_path / "empty")], "exists and is a folder"),
        ([m, good, "--data", "npz"], "it is a folder, not a regular file"),
    ]


def test_hostile_input_is_one_paragraph(tmp_path, digits_model, capsys):
    for args, words in _bad(tmp_path, digits_model):
        assert main([*args, "--threads", "1"] if "--threads" not in args else args) == 2, args
        err = _err(capsys, quiet="not an image" not in words)  # the others are refused before scoring starts
        assert words in err, (args, err)
    assert (tmp_path / "exists.json").read_text() == "{}"


def test_models_images_cannot_be_fed_to(tmp_path, capsys):
    files = colour_pngs(tmp_path / "test", ["cat", "dog"], per_class=1)
    assert files
    rgb_model(tmp_path / "old", preprocessing=False)
    assert main([str(tmp_path / "old"), str(tmp_path / "test")]) == 2
    assert "has no `preprocessing`" in _err(capsys)
    rgb_model(tmp_path / "four", in_chans=4)
    assert main([str(tmp_path / "four"), str(tmp_path / "test")]) == 2
    assert "takes 4-channel input" in _err(capsys)
    if not torch.cuda.is_available():
        rgb_model(tmp_path / "ok")
        assert main([str(tmp_path / "ok"), str(tmp_path / "test"), "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in _err(capsys)
