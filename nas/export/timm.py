"""Export a coatnas network to timm: a ``MaxxVitCfg`` that builds the identical network, and its state dict.

Nothing here imports timm, so ``nas-export --format timm`` runs in the default install; the timm side
(building, registering, loading) is :mod:`nas.export.timm_model`. An export folder holds

* ``config.json``: timm's hub layout (``architecture``, ``num_classes``, ``pretrained_cfg``) with
  ``model_args.model_cfg``: the ``MaxxVitCfg`` as plain data, and ``coatnas``: the coatnas model config;
* ``pytorch_model.bin`` (a checkpoint was exported): the state dict with timm's names and shapes.

How the maths lines up (checked by ``tests_timm/``, outputs equal to float rounding):

* stem: timm's ``Stem`` (two 3x3 convs, stride 2, ``stem_bias=True`` for the second conv; the first feeds a
  BatchNorm and has no bias in coatnas, so ``CoatnasMaxxVit`` removes it);
* MBConv: ``MaxxVitConvCfg(stride_mode='1x1' or 'dw', pool_type='avg', attn_act_layer='gelu')``; timm sizes
  the SE bottleneck as ``int(attn_ratio * out_chs)`` where coatnas uses ``round(se_ratio * in_chs)``, so the
  blocks where the two differ (the first block of a stage, whose input is narrower) get an SE of coatnas's
  size, listed in ``model_args.se_channels`` and applied by :class:`nas.export.timm_model.CoatnasMaxxVit`;
* transformer: ``MaxxVitTransformerCfg(pool_type='max', rel_pos_type='bias' or '', norm_eps=1e-5)``; timm
  lays the qkv channels out head first (``TransformerBlock2d`` does not pass ``head_first`` on), so the qkv
  weights are permuted, and its bias table is ``(entries, heads)`` where coatnas keeps ``(heads, 2H-1, 2W-1)``;
* head: pooling, LayerNorm, linear (``NormMlpClassifierHead`` without a hidden layer); plain ``MaxxVit``
  would normalise before pooling or add a pre-logits layer, so ``CoatnasMaxxVit`` swaps the head in.

What timm cannot express is refused by :func:`check_timm` with a :class:`UserError` naming the option.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError
from nas.model.arch import Architecture, BlockOptions, ModelConfig

__all__ = [
    "check_timm",
    "timm_model_args",
    "to_timm_state_dict",
    "export_timm",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "timm_name",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# the block letters of nas.model.arch.BLOCKS that timm's MaxxVit has a block for (its stage types "C" and "T")
TIMM_BLOCKS = ("C", "T")


def _make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's ``make_divisible`` (MBConv's expanded width)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def _mbconv_mid(out_chs: int, expansion: float) -> int:
    return max(1, int(round(out_chs * expansion)))


def _se_channels(in_chs: int, se_ratio: float) -> int:
    rd = int(round(in_chs * se_ratio))
    return rd if se_ratio > 0 else 0


def check_timm(mc: ModelConfig) -> None:
    """Raise :class:`UserError` when timm's ``MaxxVit`` cannot build exactly the network of ``mc``."""
    arch, o = mc.arch, mc.arch.options
    what = f"architecture {arch} cannot be exported to timm:"
    if arch.is_vit:
        raise UserError(
            f"{what} the ViT_REL layout (patch stem, no downsampling) has no timm MaxxVit "
            "equivalent, which always has a two-conv stem and four stride-2 stages. Allowed with "
            "--format timm: layouts of C and T stages (C-C-C-C .. T-T-T-T), or use --format yaml."
        )
    if arch.depths[0] != 2:
        raise UserError(
            f"{what} stem depth L0 = {arch.depths[0]} (architecture.depths[0]); timm's MaxxVit stem "
            "is exactly two 3x3 convs. Allowed with --format timm: depths[0] = 2."
        )
    if arch.stem_stride != 2:
        raise UserError(
            f"{what} stem_stride {arch.stem_stride}; timm's MaxxVit stem always has stride 2. "
            "Allowed with --format timm: stem_stride 2 (the default)."
        )
    if o.rel_attn == "post":
        raise UserError(
            f"{what} `rel_attn: post` adds the relative bias after softmax, which timm's attention "
            "does not do. Allowed with --format timm: rel_attn pre (timm rel_pos_type 'bias') or none."
        )
    for i, block in enumerate(arch.layout):
        _check_stage(what, i, block, arch.widths[i + 1], o)
    if mc.image_size % 2 and "T" in arch.layout and o.rel_attn != "none":
        raise UserError(
            f"{what} image_size {mc.image_size} is odd; timm sizes its relative-bias tables from "
            "image_size // 2 after the stem where the network has ceil(image_size / 2). Allowed with "
            "--format timm: an even image_size."
        )


def _check_stage(what: str, i: int, block: str, w: int, o: BlockOptions) -> None:
    """Raise :class:`UserError` when stage S{i+1} (``block`` of width ``w``, block options ``o``) has no
    exact timm equivalent."""
    if block not in TIMM_BLOCKS:
        raise UserError(
            f"{what} stage S{i + 1} is a `{block}` block, which timm's MaxxVit has no block for. Allowed "
            f"with --format timm: the block letters {', '.join(TIMM_BLOCKS)}, or use --format yaml."
        )
    if block == "C":
        mid = _mbconv_mid(w, o.mbconv_expansion)
        if _make_divisible(w * o.mbconv_expansion) != mid:
            raise UserError(
                f"{what} stage S{i + 1} (width {w}) expands MBConv to {mid} channels "
                f"(mbconv_expansion {o.mbconv_expansion:g}), but timm rounds the expanded width to "
                f"a multiple of 8 ({_make_divisible(w * o.mbconv_expansion)}). Allowed with "
                "--format timm: widths of C stages whose width x mbconv_expansion is a multiple "
                "of 8 (even widths for expansion 4)."
            )
    else:
        hidden = max(1, int(round(w * o.ffn_expansion)))
        if int(w * o.ffn_expansion) != hidden:
            raise UserError(
                f"{what} stage S{i + 1} (width {w}) has an FFN of {hidden} channels "
                f"(ffn_expansion {o.ffn_expansion:g}), but timm truncates width x ffn_expansion to "
                f"{int(w * o.ffn_expansion)}. Allowed with --format timm: widths where width x "
                "ffn_expansion is a whole number."
            )
        if w < o.head_dim:
            raise UserError(
                f"{what} stage S{i + 1} width {w} is below head_dim {o.head_dim}: coatnas then "
                "uses one narrower head, while timm's heads are always head_dim wide. Allowed with "
                "--format timm: T-stage widths that are multiples of head_dim."
            )


def timm_name(mc: ModelConfig, name: str | None = None) -> str:
    """The timm model name: ``name`` checked, or ``coatnas_<architecture id>``."""
    if name is None:
        return f"coatnas_{mc.arch.id}"
    if not _NAME.match(name):
        raise UserError(
            f"--name {name!r} is not a usable timm model name (timm splits names at '.', ':' and "
            "'/'). Allowed: lower-case letters, digits and '_', starting with a letter."
        )
    return name


def timm_model_args(mc: ModelConfig) -> dict[str, Any]:
    """``model_args`` of config.json: ``model_cfg`` (``MaxxVitCfg`` as nested dicts) and ``se_channels``
    (``"stage.block" -> SE width`` where coatnas's SE differs from timm's; 0 = no SE)."""
    check_timm(mc)
    arch, o = mc.arch, mc.arch.options
    se_ratio = o.se_ratio
    conv = {
        "stride_mode": "1x1" if o.downsample == "conv1x1" else "dw",
        "pool_type": "avg",
        "expand_ratio": o.mbconv_expansion,
        "attn_layer": "se" if se_ratio > 0 else "",
        "attn_act_layer": "gelu",
        "attn_ratio": se_ratio or 0.25,
        "act_layer": "gelu",
        "norm_eps": 1e-5,
    }
    trans = {
        "dim_head": o.head_dim,
        "expand_ratio": o.ffn_expansion,
        "pool_type": "max",
        "rel_pos_type": "" if o.rel_attn == "none" else "bias",
        "act_layer": "gelu",
        "norm_eps": 1e-5,
    }
    cfg = {
        "embed_dim": list(arch.widths[1:]),
        "depths": list(arch.depths[1:]),
        "block_type": list(arch.layout),
        "stem_width": arch.widths[0],
        "stem_bias": True,
        "conv_cfg": conv,
        "transformer_cfg": trans,
    }
    se = {}
    for i, block in enumerate(arch.layout):
        if block != "C" or se_ratio == 0:
            continue
        out = arch.widths[i + 1]
        for j in range(arch.depths[i + 1]):
            ours = _se_channels(arch.widths[i] if j == 0 else out, o.se_ratio)
            if ours != int(se_ratio * out):
                se[f"{i}.{j}"] = ours
    return {"model_cfg": cfg, "se_channels": se, "head_norm_eps": 1e-5}


def _conv_weight(w: torch.Tensor) -> torch.Tensor:
    """A linear layer's ``(out, in)`` weight as a 1x1 conv's ``(out, in, 1, 1)``."""
    return w.reshape(*w.shape, 1, 1) if w.ndim == 2 else w


def to_timm_state_dict(state: Mapping[str, torch.Tensor], mc: ModelConfig) -> dict[str, torch.Tensor]:
    """coatnas ``state_dict`` of ``mc``'s network -> the state dict of timm's identical network."""
    check_timm(mc)
    arch = mc.arch
    out: dict[str, torch.Tensor] = {}
    for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        if f"stem.norm1.{k}" in state:
            out[f"stem.norm1.{k}"] = state[f"stem.norm1.{k}"]
    out["stem.conv1.weight"] = state["stem.conv1.weight"]
    out["stem.conv2.weight"], out["stem.conv2.bias"] = state["stem.conv2.weight"], state["stem.conv2.bias"]
    for i, block in enumerate(arch.layout):
        for j in range(arch.depths[i + 1]):
            p = f"stages.{i}.blocks.{j}."
            names = _MBCONV if block == "C" else _transformer_names(j == 0)
            for key, value in state.items():
                if not key.startswith(p):
                    continue
                rest = key[len(p) :]
                if rest == "attn.rel_bias":
                    out[p + "attn.rel_pos.relative_position_bias_table"] = _convert(rest, value, block, arch, i)
                    continue
                module, _, leaf = rest.rpartition(".")
                if module not in names:
                    raise KeyError(f"unexpected key {key} in a coatnas state dict of {arch}")
                out[p + names[module] + "." + leaf] = _convert(rest, value, block, arch, i)
    out["head.norm.weight"], out["head.norm.bias"] = state["head.norm.weight"], state["head.norm.bias"]
    if mc.num_classes > 0:
        out["head.fc.weight"], out["head.fc.bias"] = state["head.fc.weight"], state["head.fc.bias"]
    return out


_MBCONV = {
    "shortcut.proj": "shortcut.expand",
    "norm": "pre_norm",
    "conv1": "conv1_1x1",
    "norm1": "norm1",
    "conv2": "conv2_kxk",
    "norm2": "norm2",
    "se.fc1": "se.fc1",
    "se.fc2": "se.fc2",
    "conv3": "conv3_1x1",
}


def _transformer_names(first: bool) -> dict[str, str]:
    return {
        "shortcut.proj": "shortcut.expand",
        "norm1": "norm1.norm" if first else "norm1",
        "attn.qkv": "attn.qkv",
        "attn.proj": "attn.proj",
        "norm2": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }


def _convert(rest: str, value: torch.Tensor, block: str, arch: Architecture, stage: int) -> torch.Tensor:
    if block == "C":
        return value
    if rest == "attn.rel_bias":  # (heads, 2H-1, 2W-1) -> (entries, heads)
        return value.flatten(1).t().contiguous()
    if rest.startswith("attn.qkv."):  # (3, heads, head_dim) -> (heads, 3, head_dim) channel order
        width = arch.widths[stage + 1]
        heads = max(1, width // arch.options.head_dim)
        value = value.reshape(3, heads, width // heads, *value.shape[1:]).transpose(0, 1).reshape(value.shape)
    if rest.endswith(".weight") and rest.startswith(("attn.", "mlp.")):
        return _conv_weight(value)
    return value


def export_timm(
    mc: ModelConfig,
    out: str | os.PathLike,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``config.json`` (and ``pytorch_model.bin`` when ``state`` is given) into the folder ``out``.

    The folder must not hold those files unless ``force``; nothing is written when ``mc`` is refused.
    """
    import io

    from nas.fsio import atomic_write, check_output_dir, make_dirs

    name = timm_name(mc, name)
    args = timm_model_args(mc)
    converted = to_timm_state_dict(state, mc) if state is not None else None
    folder = check_output_dir(out, (CONFIG_FILE, WEIGHTS_FILE), force=force)
    config = {
        "architecture": name,
        "num_classes": mc.num_classes,
        "num_features": mc.arch.widths[-1],
        "pretrained_cfg": {
            "num_classes": mc.num_classes,
            "input_size": [mc.in_chans, mc.image_size, mc.image_size],
            "classifier": "head.fc",
            "first_conv": "stem.conv1",
            "file": WEIGHTS_FILE if converted is not None else None,
        },
        "model_args": {**args, "img_size": mc.image_size, "in_chans": mc.in_chans},
        "coatnas": mc.to_dict(),
    }
    make_dirs(folder)
    if converted is not None:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in converted.items()}, buf)
        atomic_write(folder / WEIGHTS_FILE, buf.getvalue())
    elif force and (folder / WEIGHTS_FILE).is_file():
        (folder / WEIGHTS_FILE).unlink()  # an older export's weights would not belong to this config
    atomic_write(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return folder


def load_source(
    source: str | os.PathLike, *, rank: int | None = None, trial: str | int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor] | None]:
    """(model config, coatnas state dict or ``None``) of what ``nas-export --format timm`` exports.

    ``source`` is a search run directory (its trial at ``rank``/``trial``; no weights), a ``nas-train``
    checkpoint (``model.pt``, or the folder holding it) or a model config YAML (no weights).
    """
    path = Path(source)
    if path.is_dir() and (path / "model.pt").is_file() and not (path / "experiment.json").exists():
        path = path / "model.pt"
    if path.is_file() and path.suffix in (".pt", ".pth"):
        if rank is not None or trial is not None:
            raise UserError(f"--rank and --trial pick a trial of a search run; {source} is a checkpoint. Drop them.")
        return _load_checkpoint(path)
    if path.is_file():
        from nas.export.model_config import load_model_config

        return load_model_config(path), None
    from nas.export.model_config import model_config_of, select_record

    rec, run, exp = select_record(path, rank=rank, trial=trial)
    return model_config_of(rec, exp, run), None


def _load_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A ``nas-train`` checkpoint, loaded into its network (which folds the conv biases of older ones)."""
    from nas.model.builder import build_model

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        mc = ModelConfig.from_dict(ckpt["model_config"], file=str(path))
        state = ckpt["state_dict"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(
            f"{path}: not a checkpoint written by `nas-train` ({str(err).splitlines()[0][:200]}). "
            "Pass its model.pt (or the folder holding it), a model config YAML or a run directory."
        ) from None
    check_timm(mc)
    model = build_model(mc)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(
            f"{path}: its weights do not fit its own model config ({str(err).splitlines()[0][:200]}). "
            "Re-train it with `nas-train`."
        ) from None
    return mc, model.state_dict()
