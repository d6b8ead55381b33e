"""``nas-export --format timm`` in the default install (no timm): refusals, the state-dict conversion, and
checkpoints saved before the conv biases in front of BatchNorm were dropped. The parity with the real timm
is ``tests_timm/`` (``make test-timm``)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nas.cli.export import main as export_cli
from nas.errors import UserError
from nas.export.model_config import save_model_config
from nas.export.timm import check_timm, timm_model_args, to_timm_state_dict
from nas.model.arch import Architecture, BlockOptions, ModelConfig
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
    stem = {k: opts.pop(k) for k in ("stem", "patch_size", "stem_stride") if k in opts}
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
    assert config["architecture"] == "my_net" and config["pretrained_cfg"]["file"] == "pytorch_model.bin"
    assert config["model_args"]["img_size"] == 32 and config["model_args"]["in_chans"] == 1
    weights = torch.load(tmp_path / "t" / "pytorch_model.bin", weights_only=True)
    assert torch.equal(weights["head.fc.weight"], model.state_dict()["head.fc.weight"])
    # a second export into the same folder needs --force; a bad --name is refused
    rc, _, err = _cli([str(ckpt), "--format", "timm", "--out", str(tmp_path / "t")], capsys)
    assert rc == 2 and "--force" in err
    rc, _, err = _cli([str(ckpt), "--format", "timm", "--name", "My.Net", "--out", str(tmp_path / "u")], capsys)
    assert rc == 2 and "--name 'My.Net'" in err and not (tmp_path / "u").exists()
    rc, _, err = _cli([str(ckpt), "--name", "x", "--out", str(tmp_path / "v.yaml")], capsys)
    assert rc == 2 and "--format timm" in err
    rc, _, err = _cli([str(ckpt), "--out", str(tmp_path / "v.yaml")], capsys)  # a checkpoint, yaml format
    assert rc == 2 and "is a file" in err and "--format timm" in err and not (tmp_path / "v.yaml").exists()


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
    assert not (tmp_path / "t" / "pytorch_model.bin").exists() and "no weights" in out


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
