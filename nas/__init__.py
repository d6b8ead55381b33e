"""coatnas: neural architecture search over hybrid convolution/attention (CoAtNet-style) models.

Data flows one way: YAML -> ``SearchSpace`` -> ``Architecture`` -> ``nn.Module`` -> proxy training ->
search -> export. The names below are the public API; heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .arch import Architecture, BlockOptions
from .errors import ConfigError, UserError

__version__ = "0.1.0"

_LAZY = {
    "build_model": "nas.model",
    "CoAtNet": "nas.model",
    "presets": "nas.presets",
    "count_cost": "nas.cost",
    "Cost": "nas.cost",
    "SearchSpace": "nas.space",
    "load_space": "nas.space",
    "load_model_config": "nas.export",
    "save_model_config": "nas.export",
    "ModelConfig": "nas.export",
}

__all__ = ["Architecture", "BlockOptions", "ConfigError", "UserError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "presets" else getattr(module, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names plus the lazily loaded ones, so ``dir(nas)`` shows ``build_model`` and the rest."""
    return sorted(set(globals()) | set(_LAZY))
