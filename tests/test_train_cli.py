import json

import pytest
import torch

from nas import Architecture
from nas.cli.train import main
from nas.export.model_config import load_model_config, read_trained, save_model_config
from nas.model.arch import ModelConfig
from nas.model.builder import build_model


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_nas_train_model_config_end_to_end(tmp_path, capsys):
    arch = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=16,16,32,32,64")
    cfg = save_model_config(ModelConfig(arch=arch, num_classes=10, image_size=16, in_chans=1), tmp_path / "m.yaml")
    out = tmp_path / "out"
    rc = main(
        [str(cfg), "--data", "digits", "--epochs", "2", "--batch-size", "32", "--out", str(out), "--threads", "1"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch   1/2" in text and "epoch   2/2" in text and "val_acc" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0.5 < metrics["metrics"]["val_acc"] <= 1.0
    from safetensors.torch import load_file

    state = load_file(out / "model.safetensors")  # plain tensors, no pickle
    mc = load_model_config(out / "model.yaml")
    assert mc.arch == arch and read_trained(out).model_config == mc  # the one reader
    assert mc.class_names == tuple(str(i) for i in range(10)) and len(mc.preprocessing.mean) == 1
    # a trained model is not a CONFIG: one paragraph pointing at the model.yaml inside it, nothing written
    assert main([str(out), "--data", "digits", "--out", str(tmp_path / "again")]) == 2
    assert "model.yaml" in " ".join(capsys.readouterr().err.split()) and not (tmp_path / "again").exists()
    model = build_model(mc)
    model.load_state_dict(state)  # the weights rebuild exactly
    assert mc.provenance["trained"]["data"] == "digits"


def test_nas_train_protocol_file_and_errors(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train:\n  epochs: 1\n  data: {name: synthetic, synthetic_samples: 100}\n")
    arch = Architecture.parse("C-C-C-C L=1,1,1,1,1 D=8,8,16,16,32")
    cfg = save_model_config(ModelConfig(arch=arch, num_classes=3, image_size=8, in_chans=3), tmp_path / "m.yaml")
    assert main([str(cfg), "--protocol", str(space), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    hist = json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert len(hist) == 1
    assert "new classifier head" in capsys.readouterr().err  # 3 classes in the config, 10 in the data
    assert main(["no-such-preset", "--epochs", "1"]) == 2
    assert "neither an existing model config YAML file nor a preset" in " ".join(capsys.readouterr().err.split())
    space.write_text("train:\n  epoks: 1\n")
    assert main([str(cfg), "--protocol", str(space)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "`train.epoks`: unknown key" in err and "Traceback" not in err
    assert main([str(cfg), "--epochs", "0"]) == 2
    assert "--epochs must be a positive integer" in capsys.readouterr().err
