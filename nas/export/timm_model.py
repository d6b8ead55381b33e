"""The timm side of ``nas-export --format timm`` (needs ``pip install coatnas[timm]``).

    import timm, nas.export.timm_model
    name = nas.export.timm_model.register("exported/")           # the folder nas-export wrote
    model = timm.create_model(name, pretrained=True)      # the identical network, with the converted weights
    cfg = timm.data.resolve_data_config({}, model=model)  # the trained model's mean/std, crop 1.0, bilinear
    transform = timm.data.create_transform(**cfg)         # = coatnas's resize policy and normalisation
    model.pretrained_cfg["label_names"]                   # the class names (when the data had them)

timm's own scripts (``train.py``, ``validate.py``) run with the exports registered first::

    python -m nas.export.timm_model exported/ -- train.py --model NAME --pretrained ...

A name timm already has (``resnet50``, or another export's) is refused unless ``register(..., replace=True)``
(``--replace`` for the runner); ``config.json`` and ``model.safetensors`` (``pytorch_model.bin`` of older
exports) are read and checked by :mod:`nas.export.timm` (``read_timm_export``, ``read_timm_weights``) before
timm sees them.

:class:`CoatnasMaxxVit` is timm's ``MaxxVit`` built from the exported ``MaxxVitCfg`` with two changes no
``MaxxVitCfg`` expresses: the stem's first conv has no bias (it feeds a BatchNorm; ``stem_bias=True`` is
for the second), the head pools before its LayerNorm (and has no pre-logits layer), and the SE
layers listed in ``se_channels`` get coatnas's bottleneck width (``nas/export/timm.py`` explains both).
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

from timm.layers import LayerNorm2d, NormMlpClassifierHead
from timm.layers.squeeze_excite import SEModule
from timm.models import build_model_with_cfg, register_model
from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg
from torch import nn

from nas.errors import UserError
from nas.export.timm import CONFIG_FILE, read_timm_export, read_timm_weights, valid_timm_name

__all__ = ["CoatnasMaxxVit", "maxxvit_cfg", "register", "main"]


def maxxvit_cfg(data: dict[str, Any]) -> MaxxVitCfg:
    """``model_args.model_cfg`` of an export's config.json as a ``MaxxVitCfg``."""
    data = dict(data)
    conv = MaxxVitConvCfg(**data.pop("conv_cfg"))
    trans = MaxxVitTransformerCfg(**data.pop("transformer_cfg"))
    known = {f.name for f in fields(MaxxVitCfg)}
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return MaxxVitCfg(conv_cfg=conv, transformer_cfg=trans, **tuples)


class CoatnasMaxxVit(MaxxVit):
    """timm's ``MaxxVit`` with coatnas's head (pool, LayerNorm, linear) and SE widths."""

    def __init__(
        self, cfg: MaxxVitCfg, se_channels: dict[str, int] | None = None, head_norm_eps: float = 1e-5, **kwargs: Any
    ):
        super().__init__(cfg, **kwargs)
        self.stem.conv1.register_parameter("bias", None)  # stem_bias=True is for conv2; conv1 feeds a BatchNorm
        for key, rd in (se_channels or {}).items():
            i, j = (int(x) for x in key.split("."))
            block = self.stages[i].blocks[j]
            mid = block.conv2_kxk.out_channels
            block.se = SEModule(mid, rd_channels=rd, act_layer=nn.GELU) if rd > 0 else None
        self.norm = nn.Identity()
        self.head = NormMlpClassifierHead(
            self.num_features,
            self.num_classes,
            hidden_size=None,
            pool_type=self.global_pool,
            drop_rate=self.drop_rate,
            norm_layer=partial(LayerNorm2d, eps=head_norm_eps),
        )
        self.head_hidden_size = self.head.num_features


_REGISTERED: dict[str, Path] = {}  # name -> the export folder this module registered under it


def _taken_by(name: str) -> str | None:
    """Who already has ``name`` in timm's registry (``None``: nobody)."""
    from timm.models import is_model
    from timm.models._registry import _model_entrypoints

    if not is_model(name):
        return None
    if name in _REGISTERED:
        return f"the coatnas export {_REGISTERED[name]}, registered earlier in this process"
    fn = _model_entrypoints.get(name)
    module = getattr(fn, "__module__", None) or "an unknown module"
    return f"timm's own model ({module})" if module.startswith("timm.") else f"a model registered by {module}"


def register(folder: str | os.PathLike, name: str | None = None, *, replace: bool = False) -> str:
    """Register the export in ``folder`` with timm under ``name`` (default: the exported name); returns it.

    ``timm.create_model(name, pretrained=True)`` then loads the converted weights when the export has them
    (read and checked by ``nas.export.timm.read_timm_weights``). The export's ``config.json`` is read by
    ``nas.export.timm.read_timm_export`` (sane ranges included). A name timm already has (``resnet50``, or
    another export's) is refused unless ``replace=True``; registering the same folder again under the same
    name is allowed. The name must be lower-case letters, digits and ``_``, starting with a letter.
    """
    export = read_timm_export(folder)
    chosen = export.name if name is None else name
    if not valid_timm_name(chosen):
        raise UserError(
            f"register(..., name={chosen!r}): not a usable timm model name (timm splits names at '.', ':' and "
            "'/', and an entrypoint is a Python identifier). Allowed: lower-case letters, digits and '_', "
            "starting with a letter, not a Python keyword."
        )
    folder_key = export.folder.resolve()
    taken = _taken_by(chosen)
    if taken and not replace and _REGISTERED.get(chosen) != folder_key:
        raise UserError(
            f"timm already has a model named {chosen!r}: {taken}. Registering {export.folder} under that name "
            "would replace it for this process. Pass another name (register(folder, name='my_net')), or "
            "replace it on purpose with register(folder, replace=True) (`python -m nas.export.timm_model "
            "--replace ...`)."
        )
    if export.weights is not None and not export.weights.is_file():
        raise UserError(
            f"{export.weights}: missing or not a regular file, though {export.folder / CONFIG_FILE} names it. "
            "Re-export it from the trained model, the folder nas-train wrote (`nas-export TRAINED_FOLDER "
            f"--format timm --out {export.folder} --force`)."
        )
    args = dict(export.model_args)
    cfg = maxxvit_cfg(args.pop("model_cfg"))
    # timm's own configs hold tuples (input_size, mean, std, label_names); the weights are passed in memory
    pretrained_cfg = {
        k: tuple(v) if isinstance(v, list) else v for k, v in export.pretrained_cfg.items() if k != "file"
    }

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CoatnasMaxxVit:
        given = kwargs.pop("pretrained_cfg", None)  # timm.create_model passes None unless the caller sets one
        merged = {**args, **kwargs}
        source = given
        if source is None:
            source = dict(pretrained_cfg)
            if pretrained:  # read and checked here: timm then only adapts it (another classifier, in_chans)
                source["state_dict"] = read_timm_weights(export)
            if merged.get("num_classes", export.model_config.num_classes) != export.model_config.num_classes:
                source.pop("label_names", None)  # another classifier: the export's class names are not its
        model = build_model_with_cfg(
            CoatnasMaxxVit,
            chosen,
            pretrained,
            model_cfg=cfg,
            pretrained_cfg=source,
            feature_cfg=dict(flatten_sequential=True),
            **merged,
        )
        for attr in ("pretrained_cfg", "default_cfg"):  # loaded: the model's config keeps no copy of the weights
            held = getattr(model, attr, None)
            if isinstance(held, dict):
                held.pop("state_dict", None)
        return model

    entrypoint.__name__ = chosen
    entrypoint.__qualname__ = chosen
    entrypoint.__module__ = __name__
    with warnings.catch_warnings():  # replacing a name was allowed above; timm warns about it
        warnings.simplefilter("ignore")
        register_model(entrypoint)
    _REGISTERED[chosen] = folder_key
    return chosen


USAGE = "usage: python -m nas.export.timm_model [--replace] FOLDER [FOLDER...] -- SCRIPT.py [ARGS...]"


def main(argv: list[str] | None = None) -> int:
    """``python -m nas.export.timm_model [--replace] FOLDER... -- SCRIPT [ARGS...]``: register the exports
    (``--replace``: even under names timm already has), then run a timm script."""
    from nas.cli import fail

    prog = "nas.export.timm_model"
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        return fail(prog, f"give the export folders, then `--`, then the timm script to run. {USAGE}")
    cut = argv.index("--")
    folders = [a for a in argv[:cut] if a != "--replace"]
    replace = "--replace" in argv[:cut]
    flags = [a for a in folders if a.startswith("-")]
    if flags or not folders:
        what = f"unknown option {flags[0]}" if flags else "no export folder given"
        return fail(prog, f"{what}. {USAGE}")
    try:
        names = [register(f, replace=replace) for f in folders]
    except UserError as err:
        return fail(prog, str(err))
    target = Path(argv[cut + 1])  # checked here: runpy's own errors are tracebacks
    if not (target.is_file() or (target.is_dir() and (target / "__main__.py").is_file())):
        what = (
            "does not exist"
            if not os.path.lexists(target)
            else "is a folder without __main__.py"
            if target.is_dir()
            else "is not a regular file"
        )
        return fail(
            prog,
            f"the script to run, {str(target)!r}, {what}. Give the path of a timm script (e.g. timm's "
            f"train.py) after `--`. {USAGE}",
        )
    print(f"{prog}: registered {', '.join(names)}", file=sys.stderr)
    script, *rest = argv[cut + 1 :]
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
