"""The timm side of ``nas-export --format timm`` (needs ``pip install coatnas[timm]``).

    import timm, nas.export.timm_model
    name = nas.export.timm_model.register("exported/")           # the folder nas-export wrote
    model = timm.create_model(name, pretrained=True)      # the identical network, with the converted weights

timm's own scripts (``train.py``, ``validate.py``) run with the exports registered first::

    python -m nas.export.timm_model exported/ -- train.py --model NAME --pretrained ...

:class:`CoatnasMaxxVit` is timm's ``MaxxVit`` built from the exported ``MaxxVitCfg`` with two changes no
``MaxxVitCfg`` expresses: the stem's first conv has no bias (it feeds a BatchNorm; ``stem_bias=True`` is
for the second), the head pools before its LayerNorm (and has no pre-logits layer), and the SE
layers listed in ``se_channels`` get coatnas's bottleneck width (``nas/export/timm.py`` explains both).
"""

from __future__ import annotations

import json
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
from nas.export.timm import CONFIG_FILE

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


def _read_config(folder: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    folder = Path(folder)
    path = folder / CONFIG_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise UserError(f"{folder}: no {CONFIG_FILE} there. Pass the folder `nas-export --format timm` wrote.")
    try:
        config = json.loads(path.read_text())
        config["model_args"]["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a config written by `nas-export --format timm` ({err}). Re-export it.") from None
    return path.parent, config


def register(folder: str | os.PathLike, name: str | None = None) -> str:
    """Register the export in ``folder`` with timm under ``name`` (default: the exported name); returns it.

    ``timm.create_model(name, pretrained=True)`` then loads the converted weights when the export has them.
    """
    folder, config = _read_config(folder)
    name = name or config["architecture"]
    args = dict(config["model_args"])
    cfg = maxxvit_cfg(args.pop("model_cfg"))
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    if pretrained_cfg.get("file"):
        pretrained_cfg["file"] = str((folder / pretrained_cfg["file"]).absolute())

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CoatnasMaxxVit:
        given = kwargs.pop("pretrained_cfg", None)  # timm.create_model passes None unless the caller sets one
        merged = {**args, **kwargs}
        return build_model_with_cfg(
            CoatnasMaxxVit,
            name,
            pretrained,
            model_cfg=cfg,
            pretrained_cfg=given or pretrained_cfg,
            feature_cfg=dict(flatten_sequential=True),
            **merged,
        )

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    with warnings.catch_warnings():  # registering the same name again replaces it (timm warns)
        warnings.simplefilter("ignore")
        register_model(entrypoint)
    return name


def main(argv: list[str] | None = None) -> int:
    """``python -m nas.export.timm_model FOLDER... -- SCRIPT [ARGS...]``: register the exports, run a timm script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == 0 or argv.index("--") == len(argv) - 1:
        print("usage: python -m nas.export.timm_model FOLDER [FOLDER...] -- SCRIPT.py [ARGS...]", file=sys.stderr)
        return 2
    cut = argv.index("--")
    try:
        names = [register(f) for f in argv[:cut]]
    except UserError as err:
        print(f"nas.export.timm_model: {err}", file=sys.stderr)
        return 2
    print(f"nas.export.timm_model: registered {', '.join(names)}", file=sys.stderr)
    script, *rest = argv[cut + 1 :]
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
