"""Export a coatnas network to timm: a ``MaxxVitCfg`` that builds the identical network, and its state dict.

Nothing here imports timm, so ``nas-export --format timm`` runs in the default install; the timm side
(building, registering, loading) is :mod:`nas.export.timm_model`. An export folder holds

* ``config.json``: timm's hub layout (``architecture``, ``num_classes``, ``pretrained_cfg``) with
  ``model_args.model_cfg``: the ``MaxxVitCfg`` as plain data, ``coatnas``: the coatnas model config (the
  source of truth: :func:`read_timm_export` checks that every other key is what it implies) and
  ``format`` (:data:`TIMM_FORMAT`). ``pretrained_cfg`` carries what timm's data config needs to feed the
  network as coatnas does (:func:`timm_pretrained_cfg`): the resize policy (``crop_pct`` 1.0, ``crop_mode``
  center, ``interpolation`` bilinear: timm's eval transform is then :data:`nas.model.arch.RESIZE_POLICY`),
  and, from a trained model, the training split's ``mean``/``std`` and the class names (``label_names``);
* ``model.safetensors`` (a trained model was exported): the state dict with timm's names and shapes.

Formats: 2 (today); 1 and 0 (no ``format`` key) named ``pytorch_model.bin`` (a torch pickle, still read with
``weights_only=True``) and left the data config to timm's ImageNet defaults; they are read with the resize
policy filled in (it never depended on the data), and without mean/std, which they never recorded.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.errors import UserError
from nas.fsio import loads
from nas.model.arch import Architecture, BlockOptions, ModelConfig

__all__ = [
    "check_timm",
    "timm_model_args",
    "to_timm_state_dict",
    "export_timm",
    "timm_config",
    "TimmExport",
    "parse_timm_config",
    "read_timm_export",
    "load_source",
    "TIMM_FORMAT",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "LEGACY_WEIGHTS_FILE",
    "timm_pretrained_cfg",
    "export_note",
    "timm_name",
    "TIMM_NAME",
    "valid_timm_name",
    "read_timm_weights",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"  # format 2; timm's own name for safetensors weights (HF_SAFE_WEIGHTS_NAME)
LEGACY_WEIGHTS_FILE = "pytorch_model.bin"  # formats 0 and 1: a torch pickle (read with weights_only=True)
TIMM_FORMAT = 2  # config.json: 0 = before the `format` key, 1 = `format: 1` (both: pytorch_model.bin, no data
# config), 2 = model.safetensors and the data config (resize policy, mean/std, label_names) in pretrained_cfg
RESIZE_CFG = {"crop_pct": 1.0, "crop_mode": "center"}  # timm's eval transform = nas.model.arch.RESIZE_POLICY
TIMM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def valid_timm_name(name: object) -> bool:
    """``name`` can name a timm model: lower-case letters, digits and ``_``, starting with a letter, and not a
    Python keyword (timm registers the name as an entrypoint function; it splits names at '.', ':', '/')."""
    import keyword

    return isinstance(name, str) and bool(TIMM_NAME.match(name)) and not keyword.iskeyword(name)


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
    if tuple(arch.strides) != (2, 2, 2, 2):
        raise UserError(
            f"{what} stage strides {list(arch.strides)} (architecture.strides); timm's MaxxVit stages always "
            "halve the map. Allowed with --format timm: strides 2,2,2,2 (the default), or use --format yaml or onnx."
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
    if not valid_timm_name(name):
        raise UserError(
            f"--name {name!r} is not a usable timm model name (timm splits names at '.', ':' and "
            "'/'). Allowed: lower-case letters, digits and '_', starting with a letter, not a Python keyword."
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


def timm_pretrained_cfg(mc: ModelConfig, *, weights: bool, fmt: int = TIMM_FORMAT) -> dict[str, Any]:
    """``pretrained_cfg`` of an export of ``mc`` (``weights``: with a weights file) in config.json format
    ``fmt``: what ``timm.data.resolve_data_config({}, model=model)`` reads. The resize policy is coatnas's one
    policy for every model (shorter side to the image size, bilinear, centre crop: ``crop_pct`` 1.0); ``mean``,
    ``std`` and ``label_names`` are written only when ``mc`` has them (a trained model's preprocessing and
    class names): nothing is invented for a network not trained yet, and timm then uses its own defaults."""
    cfg: dict[str, Any] = {
        "num_classes": mc.num_classes,
        "input_size": [mc.in_chans, mc.image_size, mc.image_size],
        "classifier": "head.fc",
        "first_conv": "stem.conv1",
    }
    if fmt < 2:
        return {**cfg, "file": LEGACY_WEIGHTS_FILE if weights else None}
    pre = mc.preprocessing
    cfg.update(RESIZE_CFG, interpolation=pre.interpolation if pre is not None else "bilinear")
    if pre is not None:
        cfg["mean"], cfg["std"] = list(pre.mean), list(pre.std)
    if mc.class_names is not None:
        cfg["label_names"] = list(mc.class_names)
    cfg["file"] = WEIGHTS_FILE if weights else None
    return cfg


def timm_config(mc: ModelConfig, name: str, *, weights: bool, fmt: int = TIMM_FORMAT) -> dict[str, Any]:
    """The ``config.json`` document of an export of ``mc`` under ``name`` (``weights``: with its weights
    file), as format ``fmt`` wrote it; :func:`read_timm_export` reads it back."""
    from nas.export.model_config import model_config_document

    doc = {
        "format": fmt,
        "architecture": name,
        "num_classes": mc.num_classes,
        "num_features": mc.arch.widths[-1],
        "pretrained_cfg": timm_pretrained_cfg(mc, weights=weights, fmt=fmt),
        "model_args": {**timm_model_args(mc), "img_size": mc.image_size, "in_chans": mc.in_chans},
        "coatnas": model_config_document(mc, versioned=False),
    }
    if fmt == 0:
        del doc["format"]
    return doc


def export_note(mc: ModelConfig, *, weights: bool) -> str | None:
    """What a user of an export of ``mc`` must know that config.json cannot say (``None``: nothing): without
    preprocessing there is no mean/std to declare, so timm's data config falls back to ImageNet's."""
    if mc.preprocessing is not None:
        return None
    if weights:
        return (
            "this checkpoint records no preprocessing (a model.pt of an older nas-train), so config.json declares "
            "no mean/std and timm normalises with ImageNet's, not the statistics the weights were trained with: "
            "its predictions will differ from coatnas's. Re-train it with nas-train (which records them) and "
            "export that folder, or give timm the training data's mean/std yourself."
        )
    return (
        "no mean/std in config.json: the source is an architecture without trained weights, so there are no "
        "training statistics to declare and none are invented; timm uses its ImageNet defaults (train.py takes "
        "--mean/--std). For a model that predicts as in coatnas, train it with nas-train and export that folder."
    )


def export_timm(
    mc: ModelConfig,
    out: str | os.PathLike,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``config.json`` (and ``model.safetensors`` when ``state`` is given) into the folder ``out``.

    The folder must not hold those files (nor an older export's ``pytorch_model.bin``) unless ``force``;
    nothing is written when ``mc`` is refused. The weights are written first, the config last.
    """
    from safetensors.torch import save

    from nas.export.model_config import check_model_config
    from nas.fsio import atomic_write, check_output_dir, make_dirs

    check_model_config(mc)
    name = timm_name(mc, name)
    converted = to_timm_state_dict(state, mc) if state is not None else None
    config = timm_config(mc, name, weights=converted is not None)
    text = json.dumps(config, indent=2) + "\n"
    folder = check_output_dir(out, (CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE), force=force)
    make_dirs(folder)
    stale = [LEGACY_WEIGHTS_FILE] if converted is not None else [WEIGHTS_FILE, LEGACY_WEIGHTS_FILE]
    if converted is not None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in converted.items()}
        meta = {"format": "pt", "coatnas_timm": str(TIMM_FORMAT), "architecture": name}
        atomic_write(folder / WEIGHTS_FILE, save(tensors, metadata=meta))
    for old in stale:  # (only with --force) an earlier export's weights would not belong to this config
        if force and (folder / old).is_file():
            (folder / old).unlink()
    atomic_write(folder / CONFIG_FILE, text)
    return folder


# ------------------------------------------------------------------------------------------- reading back
@dataclass(frozen=True)
class TimmExport:
    """An export folder as :func:`read_timm_export` validated it."""

    folder: Path
    name: str
    model_config: ModelConfig
    model_args: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    format: int = TIMM_FORMAT

    @property
    def weights(self) -> Path | None:
        """The converted weights file, when the export has one."""
        file = self.pretrained_cfg.get("file")
        return self.folder / file if file else None


_TIMM_KEYS = ("format", "architecture", "num_classes", "num_features", "pretrained_cfg", "model_args", "coatnas")
_REEXPORT = "Re-export it with `nas-export SOURCE --format timm --out FOLDER --force`."


def _first_difference(ours: Any, theirs: Any, path: str) -> str | None:
    """The dotted path of the first place where ``theirs`` differs from ``ours`` (``None``: equal)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return path
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours or key not in theirs:
                return f"{path}.{key}"
            found = _first_difference(ours[key], theirs[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    same_kind = isinstance(ours, bool) == isinstance(theirs, bool) and type(ours) in (type(theirs), int, float)
    return None if same_kind and ours == theirs else path


def parse_timm_config(data: Any, folder: Path | None = None) -> TimmExport:
    """The typed form of a ``config.json`` written by :func:`export_timm`; :class:`Invalid` otherwise.

    Its ``coatnas`` section (the model config, through ``parse_model_config``: sane ranges included) is the
    source of truth: every other key must be what :func:`timm_config` writes for it, so a hand-edited or
    damaged ``model_args`` or ``pretrained_cfg`` (mean, std, label names included) never builds or feeds
    another network than the one exported. Files of formats 0 (before the ``format`` key) and 1 are checked
    against what those formats wrote, then migrated: their ``pretrained_cfg`` gets the resize policy
    (``crop_pct`` 1.0, ``crop_mode`` center, ``interpolation`` bilinear), never a mean/std they did not record.
    """
    from nas.export.model_config import parse_model_config
    from nas.fsio import Invalid, record_format

    if not isinstance(data, dict):
        raise Invalid(f"it holds {type(data).__name__}, not a mapping with the keys {', '.join(_TIMM_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _TIMM_KEYS)
    if unknown:
        raise Invalid(f"it has the unknown key(s) {', '.join(unknown[:5])}; it is not an export of nas-export")
    fmt = record_format(data, "config.json", TIMM_FORMAT, unversioned=0)
    missing = [k for k in _TIMM_KEYS if k != "format" and k not in data]
    if missing:
        raise Invalid(f"the key(s) {', '.join(missing)} are missing")
    try:
        mc = parse_model_config(data["coatnas"], file=None)
        name = data["architecture"]
        if not valid_timm_name(name):
            raise Invalid(
                f"`architecture` {name!r} is not a usable timm model name (lower-case letters, digits and '_', "
                "starting with a letter, not a Python keyword)"
            )
        pretrained = data["pretrained_cfg"]
        file = pretrained.get("file") if isinstance(pretrained, dict) else None
        own = WEIGHTS_FILE if fmt >= 2 else LEGACY_WEIGHTS_FILE
        if file not in (None, own):
            raise Invalid(
                f"`pretrained_cfg.file` is {file!r}; an export of format {fmt} names only its own {own} (or null)"
            )
        expected = loads(json.dumps(timm_config(mc, name, weights=file is not None, fmt=fmt)))
    except UserError as err:  # the coatnas section is refused, or timm cannot build it
        raise Invalid(f"its coatnas section: {' '.join(str(err).split())}") from None
    for key in _TIMM_KEYS[1:-1]:
        where = _first_difference(expected[key], data[key], key)
        if where:
            raise Invalid(
                f"`{where}` does not match the coatnas model config in the same file (the file was edited or "
                "damaged; timm would build another network than the one exported)"
            )
    pretrained = dict(data["pretrained_cfg"])
    if fmt < 2:  # migrated: the resize policy never depended on the data; mean/std were never recorded
        pretrained.update(RESIZE_CFG, interpolation="bilinear")
    return TimmExport(
        folder=folder or Path("."),
        name=name,
        model_config=mc,
        model_args=data["model_args"],
        pretrained_cfg=pretrained,
        format=fmt,
    )


def read_timm_export(folder: str | os.PathLike) -> TimmExport:
    """The one reader of an export folder (or its ``config.json``): :func:`parse_timm_config` through
    ``nas.fsio.read_json``; a missing, damaged or foreign file is one paragraph naming it."""
    from nas.fsio import read_json

    given = Path(folder)
    path = given / CONFIG_FILE if given.is_dir() else given
    if not os.path.lexists(path):
        raise UserError(f"{given}: no {CONFIG_FILE} there. Pass the folder `nas-export --format timm` wrote.")
    return read_json(
        path,
        lambda data: parse_timm_config(data, path.parent),
        what="the timm export config",
        fix=_REEXPORT,
    )


def _sniff_checkpoint(path: Path) -> bool:
    """``path`` starts like a torch file (a zip archive or a pickle), whatever its name."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x80"))


def load_source(
    source: str | os.PathLike, *, rank: int | None = None, trial: str | int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor] | None]:
    """(model config, coatnas state dict or ``None``) of what ``nas-export --format timm`` exports.

    ``source`` is a trained model (the folder ``nas-train`` wrote: ``model.safetensors`` + ``model.yaml``, or
    its ``model.safetensors``; an older ``model.pt`` or the folder holding it), a search run directory (its
    trial at ``rank``/``trial``; no weights) or a model config YAML (no weights). Each is read by its one
    reader (:func:`nas.export.model_config.read_trained` for a trained model), which checks the sane ranges
    before anything is built. A search YAML is refused with the commands that make a model of it.
    """
    from nas.export.model_config import CONFIG_FILE as MODEL_YAML
    from nas.export.model_config import WEIGHTS_FILE as TRAINED_WEIGHTS
    from nas.export.model_config import check_model_config, load_model_config, read_checkpoint

    path = Path(source)
    trained_dir = path.is_dir() and not (path / "experiment.json").exists()
    if trained_dir and any(os.path.lexists(path / f) for f in (TRAINED_WEIGHTS, MODEL_YAML, "model.pt")):
        return _load_weights(path, lambda: _read_trained(path))
    if os.path.lexists(path) and not path.is_dir() and not path.is_file():
        raise UserError(
            f"{source}: is not a regular file nor a folder (a FIFO, a device or a dangling link). Pass a run "
            f"directory, a trained model (the folder nas-train wrote: {TRAINED_WEIGHTS} + {MODEL_YAML}) or a "
            "model config YAML."
        )
    if path.is_file():
        if rank is not None or trial is not None:
            raise UserError(
                f"--rank and --trial pick a trial of a search run; {source} is a file (a trained model or a model "
                "config). Drop them."
            )
        if path.suffix == ".safetensors":
            return _load_weights(path, lambda: _read_trained(path))
        if path.suffix in (".pt", ".pth", ".bin") or _sniff_checkpoint(path):
            return _load_weights(path, lambda: read_checkpoint(path))
        try:
            return load_model_config(path), None
        except UserError as err:
            raise _not_a_model_yaml(path) or err from None
    if not os.path.lexists(path):  # a bundled search space's name (coatnet.yaml) is no model either
        from nas.space.reading import bundled_spaces, resolve_space_path

        if str(source) in bundled_spaces():
            bundled = _not_a_model_yaml(resolve_space_path(str(source)), str(source))
            if bundled:
                raise bundled
    from nas.export.model_config import model_config_of, select_record

    rec, run, exp = select_record(path, rank=rank, trial=trial)
    return check_model_config(model_config_of(rec, exp, run), f"{run.path} (a trial's architecture)"), None


def _read_trained(path: Path):
    from nas.export.model_config import read_trained

    return read_trained(path)


def _not_a_model_yaml(path: Path, bundled: str | None = None) -> UserError | None:
    """The error for a search YAML (or a fidelity study YAML) given as SOURCE (``bundled``: the name of a bundled
    search space, which ``path`` resolves): what it is and the commands that make a model of it; ``None`` for
    any other file (the model config's own error stands)."""
    from nas.yamlio import load_yaml_file

    try:
        data = load_yaml_file(path)
    except Exception:  # noqa: BLE001 - any file that does not read as YAML keeps the model config's own error
        return None
    if not isinstance(data, dict):
        return None
    run = Path("runs") / path.stem
    name = bundled or str(path)
    if "space" in data:
        return UserError(
            f"{name} is {'a bundled' if bundled else 'a'} search YAML (it has a `space:` section): a space of "
            "architectures, not one model, so there is nothing to export to timm yet. Search it first: "
            f"`nas-search --space {name}` writes the run {run}; then `nas-train {run}/best.yaml --protocol "
            f"{bundled and path or name} --out {run}-trained` trains its best "
            f"architecture and `nas-export {run}-trained --format timm` exports that trained model (weights, "
            f"mean/std, class names), or `nas-export {run} --format timm [--rank K]` exports a trial's "
            "architecture without weights."
        )
    if "study" in data:
        return UserError(
            f"{name} is a fidelity study YAML (it has a `study:` section), which `nas-fidelity {name}` runs; it "
            "holds no model to export. Pass a trained model (the folder nas-train wrote), a search run "
            "directory or a model config YAML."
        )
    return None


def _load_weights(path: Path, read) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A trained model (``read()``: a :class:`~nas.export.model_config.Checkpoint`), loaded into its network
    (which folds the conv biases of older checkpoints); its config must be one timm can build."""
    from nas.model.builder import build_model
    from nas.model.cost import count_cost

    ckpt = read()
    mc, state = ckpt.model_config, ckpt.state_dict
    check_timm(mc)
    # the network is never larger than the weights the file holds: checked before anything is allocated
    held = sum(int(v.numel()) for v in state.values())
    need = count_cost(mc).params
    if need > held:
        raise UserError(
            f"{path}: its model config ({mc.arch}) has {need:,} parameters but the file holds only {held:,} "
            "weights: the config and the weights do not belong together (the file was edited or damaged). "
            "Re-train it with `nas-train`."
        )
    model = build_model(mc)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, IndexError) as err:
        raise UserError(
            f"{path}: its weights do not fit its own model config ({str(err).splitlines()[0][:200]}). "
            "Re-train it with `nas-train`."
        ) from None
    return mc, model.state_dict()


def read_timm_weights(export: TimmExport) -> dict[str, torch.Tensor]:
    """The one reader of an export's weights: ``model.safetensors`` (format 2; nothing is unpickled), or the
    ``pytorch_model.bin`` of formats 0 and 1 (``torch.load(weights_only=True)``): a mapping of finite tensors
    whose names and shapes are exactly those of the network its ``config.json`` describes. A damaged, foreign
    or pickled-object file is one paragraph naming it."""
    from nas.export.model_config import load_torch_file, tensor_problem
    from nas.fsio import read_safetensors
    from nas.model.builder import build_model

    path = export.weights
    if path is None:
        raise UserError(f"{export.folder}: this export has no weights ({CONFIG_FILE} names no file). {_REEXPORT}")
    fix = (
        "Re-export it from the trained model (the folder nas-train wrote): "
        f"`nas-export TRAINED_FOLDER --format timm --out {export.folder} --force`."
    )
    if not path.is_file():
        raise UserError(f"{path}: missing or not a regular file, though {CONFIG_FILE} names it. {fix}")
    if export.format >= 2:
        state: Any = read_safetensors(path, what="the weights of a timm export", fix=fix)[0]
    else:
        state = load_torch_file(path, what="the weights of a timm export", fix=fix)
    mc = export.model_config
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        expected = to_timm_state_dict(build_model(mc).state_dict(), mc)
    problem = None
    if not isinstance(state, Mapping):
        problem = f"it holds {type(state).__name__}, not a mapping of names to tensors"
    else:
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                problem = f"its entry {key!r} is {type(value).__name__}, not a tensor"
            elif tensor_problem(value):
                problem = f"its tensor {key} {tensor_problem(value)}"
            elif key not in expected:
                problem = f"it has the tensor {key!r}, which the network of {CONFIG_FILE} does not have"
            elif tuple(value.shape) != tuple(expected[key].shape):
                problem = f"its tensor {key} has the shape {tuple(value.shape)}, not {tuple(expected[key].shape)}"
            elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
                problem = f"its tensor {key} holds NaN or infinite values"
            if problem:
                break
        missing = [k for k in expected if k not in state]
        if problem is None and missing:
            problem = f"the tensor {missing[0]} (and {len(missing) - 1} more) of the network is missing"
    if problem:
        raise UserError(f"{path}: does not belong to {export.folder / CONFIG_FILE}: {problem}. {fix}")
    return dict(state)
