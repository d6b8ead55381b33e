"""Model configs on disk: the YAML form of :class:`nas.arch.ModelConfig`.

``nas.build_model(nas.load_model_config("model.yaml"))`` rebuilds exactly the exported network.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .arch import ModelConfig
from .errors import UserError

__all__ = ["ModelConfig", "load_model_config", "save_model_config"]


def save_model_config(config: ModelConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML (atomically: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return path


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read a model config written by :func:`save_model_config` or ``nas-export``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model config file. Pass the YAML written by `nas-export` "
                        "(or `nas.save_model_config`).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err}). Re-export it with `nas-export`.") from None
    return ModelConfig.from_dict(data, file=str(path))
