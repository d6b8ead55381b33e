"""``nas-export --format timm`` in the default install (no timm): refusals, the state-dict conversion, and
checkpoints saved before the conv biases in front of BatchNorm were dropped. The parity with the real timm
is ``tests_timm/`` (``make test-timm``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from nas.cli.export import main as export_cli
from nas.errors import UserError
from nas.export.model_config import save_model_config, save_trained
from nas.export.timm import (
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    check_timm,
    read_timm_export,
    read_timm_weights,
    timm_config,
    timm_model_args,
    to_timm_state_dict,
)
from nas.model.arch import Architecture, BlockOptions, ModelConfig, Preprocessing
from nas.model.builder import build_model

OK = "C-C-T-T L=2,1,1,2,1 D=16,24,32,64,96"


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = export_cli(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def _mc(text: str = OK, size: int = 32, **opts) -> ModelConfig:
    stem = {k: opts.pop(k) for k in ("stem", "patch_size", "stem_stride", "strides") if k in opts}
    arch = Architecture.parse(text, BlockOptions(**opts))
    if stem:
        from dataclasses import replace

        arch = replace(arch, **stem)
    return ModelConfig(arch=arch, num_classes=4, image_size=size, in_chans=1)


REFUSED = [
    ("vit", _mc("T-T-T-T L=1,1,1,1,1 D=32,32,32,32,32", stem="patch", patch_size=4), "ViT_REL"),
    ("stem-depth", _mc("C-C-T-T L=3,1,1,1,1 D=16,24,32,64,96"), "depths[0] = 2"),
    ("stem-depth-1", _mc("C-C-T-T L=1,1,1,1,1 D=16,24,32,64,96"), "depths[0] = 2"),
    ("stem-stride", _mc(stem_stride=1), "stem_stride 2"),
    ("stage-strides", _mc(strides=(2, 2, 1, 2)), "strides 2,2,2,2"),
    ("rel-attn-post", _mc(rel_attn="post"), "`rel_attn: post`"),
    ("odd-mbconv-width", _mc("C-C-T-T L=2,1,1,1,1 D=16,23,32,64,96"), "mbconv_expansion"),
    ("ffn-fraction", _mc(ffn_expansion=1.01), "ffn_expansion"),
    ("narrow-heads", _mc("C-T-T-T L=2,1,1,1,1 D=16,16,16,64,96"), "head_dim"),
    ("odd-image", _mc(size=33), "even image_size"),
]


@pytest.mark.parametrize("mc,fragment", [(c[1], c[2]) for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_with_one_paragraph_naming_the_option(mc, fragment, tmp_path, capsys):
    config = save_model_config(mc, tmp_path / "m.yaml")
    out = tmp_path / "exported"
    rc, _, err = _cli([str(config), "--format", "timm", "--out", str(out)], capsys)
    assert rc == 2 and "Traceback" not in err and "\n\n" not in err.strip()
    assert err.startswith("nas-export: error: ") and "cannot be exported to timm" in err
    text = " ".join(err.split())
    assert fragment in text and "Allowed with --format timm" in text
    assert not out.exists()


def test_expressible_variants_pass():
    for mc in (
        _mc(),
        _mc(rel_attn="none"),
        _mc(se_ratio=0.0),
        _mc(downsample="dwconv"),
        _mc("C-C-C-C L=2,1,1,1,1 D=16,24,32,64,96", size=33),
        _mc(size=48),
    ):
        check_timm(mc)


def test_se_widths_that_differ_from_timm_are_listed():
    args = timm_model_args(_mc("C-C-C-C L=2,2,1,1,1 D=16,24,40,64,96"))
    # coatnas: round(0.25 * input width); timm: int(0.25 * output width): only first blocks differ
    assert args["se_channels"] == {"0.0": 4, "1.0": 6, "2.0": 10, "3.0": 16}
    assert args["model_cfg"]["conv_cfg"]["stride_mode"] == "1x1"
    assert args["model_cfg"]["transformer_cfg"]["pool_type"] == "max"


def test_state_dict_conversion_keys_shapes_and_layouts():
    mc = _mc()
    model = build_model(mc)
    ours = model.state_dict()
    theirs = to_timm_state_dict(ours, mc)
    assert sum(v.numel() for k, v in theirs.items() if "num_batches" not in k) == sum(
        v.numel() for k, v in ours.items() if "num_batches" not in k
    )
    assert "stem.conv1.bias" not in theirs and "stages.0.blocks.0.conv1_1x1.weight" in theirs
    assert "stages.2.blocks.0.norm1.norm.weight" in theirs and "stages.2.blocks.1.norm1.weight" in theirs
    # relative-bias table: (heads, 2H-1, 2W-1) -> ((2H-1)(2W-1), heads), same entries
    table = ours["stages.2.blocks.0.attn.rel_bias"]
    converted = theirs["stages.2.blocks.0.attn.rel_pos.relative_position_bias_table"]
    assert converted.shape == (table[0].numel(), table.shape[0]) and torch.equal(converted[:, 1], table[1].flatten())
    # qkv rows: coatnas (3, heads, head_dim), timm (heads, 3, head_dim); stage S3 has 64 / 32 = 2 heads
    qkv, conv = ours["stages.2.blocks.0.attn.qkv.weight"], theirs["stages.2.blocks.0.attn.qkv.weight"]
    assert conv.shape == (*qkv.shape, 1, 1)
    rows = {
        "q0": qkv[0:32],
        "q1": qkv[32:64],
        "k0": qkv[64:96],
        "k1": qkv[96:128],
        "v0": qkv[128:160],
        "v1": qkv[160:192],
    }
    for n, name in enumerate(("q0", "k0", "v0", "q1", "k1", "v1")):
        assert torch.equal(conv[32 * n : 32 * (n + 1), :, 0, 0], rows[name]), name


def test_export_writes_config_and_weights(tmp_path, capsys):
    mc = _mc()
    model = build_model(mc)
    ckpt = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": mc.to_dict()}, ckpt)
    rc, out, err = _cli([str(ckpt), "--format", "timm", "--name", "my_net", "--out", str(tmp_path / "t")], capsys)
    assert rc == 0, err
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["architecture"] == "my_net" and config["pretrained_cfg"]["file"] == "model.safetensors"
    assert config["model_args"]["img_size"] == 32 and config["model_args"]["in_chans"] == 1
    weights = load_file(tmp_path / "t" / "model.safetensors")
    assert torch.equal(weights["head.fc.weight"], model.state_dict()["head.fc.weight"])
    # a checkpoint of an older nas-train records no mean/std: none is declared, and the user is told why
    assert "mean" not in config["pretrained_cfg"] and config["pretrained_cfg"]["crop_pct"] == 1.0
    assert "nas-export: note:" in err and "ImageNet" in " ".join(err.split()) and "Re-train it" in err
    # a second export into the same folder needs --force; a bad --name is refused
    rc, _, err = _cli([str(ckpt), "--format", "timm", "--out", str(tmp_path / "t")], capsys)
    assert rc == 2 and "--force" in err
    rc, _, err = _cli([str(ckpt), "--format", "timm", "--name", "My.Net", "--out", str(tmp_path / "u")], capsys)
    assert rc == 2 and "--name 'My.Net'" in err and not (tmp_path / "u").exists()
    rc, _, err = _cli([str(ckpt), "--name", "x", "--out", str(tmp_path / "v.yaml")], capsys)
    assert rc == 2 and "--format timm" in err
    rc, _, err = _cli([str(ckpt), "--out", str(tmp_path / "v.yaml")], capsys)  # a checkpoint, yaml format
    assert rc == 2 and "is a file" in err and "--format timm" in err and not (tmp_path / "v.yaml").exists()


def _trained(tmp_path, mc: ModelConfig | None = None):
    """A trained model as nas-train writes it: model.safetensors + model.yaml with preprocessing and names."""
    mc = replace(
        mc or _mc(),
        preprocessing=Preprocessing(mean=(0.4321,), std=(0.1234,)),
        class_names=("cat", "dog", "bird", "ship"),
    )
    torch.manual_seed(0)
    model = build_model(mc)
    return save_trained(tmp_path / "trained", mc, model.state_dict()), mc, model


def test_a_trained_model_exports_its_data_config_and_safetensors(tmp_path, capsys):
    """The nas-train folder (or its model.safetensors) exports weights as safetensors and timm's data config:
    the training split's mean/std, input size, crop 1.0 (centre), bilinear and the class names."""
    folder, mc, model = _trained(tmp_path)
    for i, source in enumerate((folder, folder / "model.safetensors")):
        out = tmp_path / f"t{i}"
        rc, stdout, err = _cli([str(source), "--format", "timm", "--out", str(out)], capsys)
        assert rc == 0 and "note:" not in err, err
        assert sorted(p.name for p in out.iterdir()) == ["config.json", WEIGHTS_FILE] and "model.safetensors" in stdout
        pre = json.loads((out / "config.json").read_text())["pretrained_cfg"]
        assert pre == {
            "num_classes": 4,
            "input_size": [1, 32, 32],
            "classifier": "head.fc",
            "first_conv": "stem.conv1",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "interpolation": "bilinear",
            "mean": [0.4321],
            "std": [0.1234],
            "label_names": ["cat", "dog", "bird", "ship"],
            "file": WEIGHTS_FILE,
        }
        export = read_timm_export(out)
        assert export.format == 2 and export.model_config == mc
        assert (
            export.model_config.preprocessing == mc.preprocessing and export.model_config.class_names == mc.class_names
        )
        converted = to_timm_state_dict(model.state_dict(), mc)
        weights = read_timm_weights(export)
        assert weights.keys() == converted.keys() and all(torch.equal(weights[k], converted[k]) for k in converted)
    # the data config is checked against the coatnas section like the rest: an edited mean is refused
    path = tmp_path / "t0" / "config.json"
    data = json.loads(path.read_text())
    data["pretrained_cfg"]["mean"] = [0.5]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"`pretrained_cfg.mean\[0\]` does not match"):
        read_timm_export(tmp_path / "t0")


def test_weights_written_as_safetensors_are_read_without_pickle(tmp_path):
    """model.safetensors is a safetensors file whose metadata names the export format; its reader refuses a
    truncated, empty or foreign file in one paragraph naming it."""
    from nas.export.timm import export_timm, load_source

    folder, _, _ = _trained(tmp_path)
    mc, state = load_source(folder)
    out = export_timm(mc, tmp_path / "e", state=state)
    raw = (out / WEIGHTS_FILE).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["coatnas_timm"] == "2" and header["__metadata__"]["format"] == "pt"
    for bad, fragment in (
        (raw[: len(raw) // 2], "not a safetensors weights file"),
        (b"", "is empty"),
        (b"x" * 64, "not a safetensors"),
    ):
        (out / WEIGHTS_FILE).write_bytes(bad)
        with pytest.raises(UserError) as info:
            read_timm_weights(read_timm_export(out))
        text = str(info.value)
        assert fragment in text and str(out / WEIGHTS_FILE) in text and "\n" not in text and "TRAINED_FOLDER" in text


def test_an_export_of_format_1_is_read_and_migrated(tmp_path):
    """Format 1 (pytorch_model.bin, timm's data defaults) reads as before, with the resize policy filled in and
    no mean/std invented; re-exporting over it with --force leaves no stale pytorch_model.bin."""
    import io

    from nas.export.timm import export_timm

    mc = _mc()
    model = build_model(mc)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(timm_config(mc, "coatnas_v1", weights=True, fmt=1)))
    buf = io.BytesIO()
    torch.save(to_timm_state_dict(model.state_dict(), mc), buf)
    (folder / LEGACY_WEIGHTS_FILE).write_bytes(buf.getvalue())
    export = read_timm_export(folder)
    assert export.format == 1 and export.weights == folder / LEGACY_WEIGHTS_FILE
    assert export.pretrained_cfg["crop_pct"] == 1.0 and export.pretrained_cfg["interpolation"] == "bilinear"
    assert "mean" not in export.pretrained_cfg
    assert torch.equal(read_timm_weights(export)["head.fc.weight"], model.state_dict()["head.fc.weight"])
    # a format-1 config naming model.safetensors, or format 2 naming pytorch_model.bin, is refused
    data = json.loads((folder / "config.json").read_text())
    data["pretrained_cfg"]["file"] = WEIGHTS_FILE
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="names only its own pytorch_model.bin"):
        read_timm_export(folder)
    with pytest.raises(UserError, match="--force"):
        export_timm(mc, folder, state=model.state_dict())
    export_timm(mc, folder, state=model.state_dict(), force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", WEIGHTS_FILE]


def test_a_search_yaml_is_not_a_model(tmp_path, capsys):
    """A search YAML (a file, or a bundled space by name) says what it is and the commands that make a model."""
    space = tmp_path / "my.yaml"
    space.write_text("space:\n  input: {image_size: 32}\nsearch: {trials: 2}\n")
    for source, shown in ((space, str(space)), ("coatnet.yaml", "coatnet.yaml is a bundled search YAML")):
        rc, _, err = _cli([str(source), "--format", "timm", "--out", str(tmp_path / "o")], capsys)
        text = " ".join(err.split())
        assert rc == 2 and err.startswith("nas-export: error: ") and "\n\n" not in err.strip(), err
        assert shown in text and "search YAML" in text and "unknown key" not in text, text
        assert "nas-search --space" in text and "nas-train runs/" in text and "--format timm" in text
        assert not (tmp_path / "o").exists()


def _with_bias(conv: nn.Conv2d, g: torch.Generator) -> nn.Conv2d:
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, groups=conv.groups, bias=True
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight)
        new.bias.copy_(torch.randn(conv.out_channels, generator=g))
    return new


def test_checkpoint_with_conv_biases_before_batchnorm_loads_exactly():
    """A state dict from before the biases were dropped (conv1/conv2 of MBConv, the stem's first conv) loads
    into today's network with the same outputs: the bias folds into the BatchNorm's running mean."""
    g = torch.Generator().manual_seed(0)
    mc = _mc("C-C-C-C L=2,1,1,1,1 D=16,24,32,64,96")
    old = build_model(mc)
    old.stem.conv1 = _with_bias(old.stem.conv1, g)
    for stage in old.stages:
        for block in stage.blocks:
            block.conv1, block.conv2 = _with_bias(block.conv1, g), _with_bias(block.conv2, g)
    with torch.no_grad():
        for m in old.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(generator=g), m.running_var.uniform_(0.5, 2, generator=g)
    state = old.state_dict()
    assert "stages.0.blocks.0.conv1.bias" in state and "stem.conv1.bias" in state
    new = build_model(mc)
    new.load_state_dict(state)  # strict: every old key is used
    x = torch.randn(2, 1, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(old.eval()(x), new.eval()(x), atol=1e-5)
    # train mode normalises with the batch's statistics, where a bias cancels: the outputs agree up to float32
    # rounding of activations that carry the biases (about 1 in size) on one side only, which depends on the
    # reduction order of torch's threads (a full-suite run saw 1e-4). The fold itself is checked in eval mode.
    assert torch.allclose(old.train()(x), new.train()(x), atol=1e-3)


def test_export_a_trial_of_a_search_run(write_space, tmp_path, capsys):
    """A run directory exports its trial's architecture (no weights), --rank picking the trial."""
    from test_export_run import _run_with_records

    rd, archs = _run_with_records(write_space(), tmp_path / "r", [0.2, 0.9, 0.5])
    rc, out, err = _cli([str(rd.path), "--format", "timm", "--rank", "2", "--out", str(tmp_path / "t")], capsys)
    assert rc == 0, err
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["architecture"] == f"coatnas_{archs[2].id}" and config["pretrained_cfg"]["file"] is None
    assert Architecture.from_dict(config["coatnas"]["architecture"]) == archs[2]
    assert not (tmp_path / "t" / WEIGHTS_FILE).exists() and "no weights" in out
    # not trained: no mean/std and no class names are invented; the resize policy is coatnas's one policy
    pre = config["pretrained_cfg"]
    assert not {"mean", "std", "label_names"} & set(pre), pre
    assert (pre["crop_pct"], pre["crop_mode"], pre["interpolation"]) == (1.0, "center", "bilinear")
    assert "no mean/std" in " ".join(err.split()) and "none are invented" in " ".join(err.split())


def test_a_block_letter_timm_has_no_block_for_is_refused(monkeypatch):
    """A letter registered in nas.model.arch.BLOCKS (here an MBConv under ``X``) is not silently exported as a
    transformer stage: the refusal names the stage and the letters timm takes."""
    from nas.model.arch import BLOCKS, BlockKind

    monkeypatch.setitem(
        BLOCKS,
        "X",
        BlockKind("X", "test conv", "an MBConv under another letter", attention=False, order=0, default_choice=False),
    )
    arch = Architecture(layout=("C", "X", "T", "T"), depths=(2, 1, 1, 1, 1), widths=(16, 32, 64, 64, 128))
    with pytest.raises(UserError, match=r"stage S2 is a `X` block.*C, T"):
        check_timm(ModelConfig(arch, 10, 32, 3))
