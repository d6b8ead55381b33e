"""coatnas: neural architecture search over hybrid convolution/attention (CoAtNet-style) models.

Data flows one way: YAML -> ``SearchSpace`` -> ``Architecture`` -> ``nn.Module`` -> proxy training ->
search -> export. The names below are the public API; heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas.errors import ConfigError, UserError
from nas.model.arch import Architecture, BlockOptions

__version__ = "0.1.0"

_LAZY = {
    "build_model": "nas.model.builder",
    "CoAtNet": "nas.model.builder",
    "presets": "nas.model.presets",
    "count_cost": "nas.model.cost",
    "Cost": "nas.model.cost",
    "SearchSpace": "nas.space.search_space",
    "load_space": "nas.space.search_space",
    "load_model_config": "nas.export.model_config",
    "save_model_config": "nas.export.model_config",
    "ModelConfig": "nas.export.model_config",
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
