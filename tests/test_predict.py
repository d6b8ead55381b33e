"""``nas-predict`` and its API: labels that are the argmax of the model on the input computed by hand, named by the
model's classes, in files and folders (sub-folders too), as text or JSON lines; and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from inference_models import by_hand, colour_pngs, logits_by_hand, rgb_model

from nas.cli.predict import main
from nas.errors import UserError
from nas.export.model_config import load_trained_model
from trainers.training.evaluate import image_files, predict

NAMES = ("cat", "dog", "bird")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def photos(tmp_path):
    """A model with named classes and a folder of colour images of several sizes, one in a sub-folder, plus a
    file that is no image by its name (skipped in a folder)."""
    model_dir = rgb_model(tmp_path / "m")
    files = colour_pngs(tmp_path / "photos", ["a", "b"], per_class=6)
    (tmp_path / "photos" / "notes.txt").write_text("not an image, skipped by its name")
    return model_dir, sorted(files)


def test_predict_labels_are_the_models_argmax_with_class_names(photos, capsys):
    model_dir, files = photos
    _, config = load_trained_model(model_dir)
    probs = logits_by_hand(model_dir, torch.stack([by_hand(f, config) for f in files])).softmax(-1)
    assert len(set(probs.argmax(-1).tolist())) >= 2  # the labels differ from image to image

    assert main([str(model_dir), str(files[0].parent.parent), "--top", "2", "--threads", "1", "--batch-size", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files]  # every image, in name order
    for line, p in zip(lines, probs):
        top = p.topk(2)
        want = [f"{NAMES[int(i)]} {float(q):.4f}" for q, i in zip(top.values, top.indices)]
        assert line.split("\t")[1:] == want

    assert main([str(model_dir), *map(str, files[:3]), "--json", "--top", "9", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files[:3]]
    for r, p in zip(rows, probs):
        assert r["class"] == NAMES[int(p.argmax())] and r["index"] == int(p.argmax())
        assert r["probability"] == pytest.approx(float(p.max()), abs=1e-5)
        got = [t["probability"] for t in r["top"]]
        assert len(got) == 3 and got == sorted(got, reverse=True) and sum(got) == pytest.approx(1, abs=1e-5)
        assert {t["class"] for t in r["top"]} == set(NAMES)


def test_the_api_streams_predictions(photos):
    model_dir, files = photos
    model, config = load_trained_model(model_dir)
    found = image_files([files[0].parent.parent])
    assert found == files  # the text file is skipped
    preds = list(predict(model, config, found, top=1, batch_size=4))
    with pytest.raises(UserError, match="`top` must be at least 1"):  # checked at the call, before any image
        predict(model, config, found, top=0)
    assert [p.path for p in preds] == [str(f) for f in files]
    assert all(p.label in NAMES and 0 < p.probability <= 1 for p in preds)


def test_hostile_input_is_one_paragraph(photos, tmp_path, capsys):
    model_dir, files = photos
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.png").write_text("a text file named like an image")
    (tmp_path / "m2").mkdir()
    m = str(model_dir)
    cases = [
        ([m, str(files[0]), "--top", "0"], "--top must be at least 1 (got 0)"),
        ([m, str(files[0]), "--batch-size", "0"], "--batch-size must be 1 to 65,536"),
        ([m, str(tmp_path / "empty")], "a folder with no image files"),
        ([m, str(tmp_path / "nope.png")], "nope.png: no such file or folder"),
        ([m, str(tmp_path / "text.png")], "text.png: not an image that can be read (cannot identify image file)."),
        ([str(tmp_path / "m2"), str(files[0])], "has no model.safetensors, so it holds no trained model"),
        ([str(tmp_path / "nomodel"), str(files[0])], "no such file or folder. A trained model is the folder"),
        ([str(files[0]), m], "is a file that holds no trained model"),  # MODEL and IMAGE swapped
    ]
    for args, words in cases:
        assert main([*args, "--threads", "1"]) == 2, args
        out, err = capsys.readouterr()
        err = " ".join(err.split())
        assert words in err and "Traceback" not in err and out == "", (args, err)
    with pytest.raises(SystemExit) as exit_:  # no image: argparse's one paragraph
        main([m])
    assert exit_.value.code == 2 and "the following arguments are required: IMAGE" in capsys.readouterr().err
