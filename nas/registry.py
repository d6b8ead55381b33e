"""Registries of names: each name a YAML may use, declared once together with its implementation.

A :class:`Registry` maps a name (``tpe``, ``asha``, ``snip``) to the ``module:attribute`` that implements it.
The names are known without importing anything, so the light config layer (``nas.search.config``, no
torch, Ray or Optuna) validates a YAML against them; the implementation is imported on first use
(``REGISTRY[name]``). A new sampler, scheduler or zero-cost proxy is one line in its registry and one
function in its module; there is no second list of names to keep in step.

The registries: ``nas.search.config.SAMPLERS`` and ``nas.search.config.SCHEDULERS``, and
``trainers.objectives.registry.ZERO_COST``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def load(spec: str) -> Any:
    """The object ``module:attribute`` names (the module is imported)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Mapping[str, Any]):
    """Names and their implementations (``module:attribute``), imported lazily.

    ``name in registry``, ``list(registry)``, ``registry.names`` and ``registry.allowed()`` import
    nothing; ``registry[name]`` imports and returns the implementation (:class:`KeyError` for an unknown
    name); ``registry.spec(name)`` is its ``module:attribute``.
    """

    def __init__(self, what: str, entries: Mapping[str, str]) -> None:
        for name, spec in entries.items():
            if not isinstance(name, str) or not isinstance(spec, str) or not _SPEC.fullmatch(spec):
                raise TypeError(f"{what} registry: {name!r} must map to 'module:attribute', got {spec!r}")
        self.what = what
        self._specs = dict(entries)
        self._loaded: dict[str, Any] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, name: str) -> str:
        return self._specs[name]

    def allowed(self) -> str:
        """``"a, b, c"``: the names, for an error message's "Allowed:"."""
        return ", ".join(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._specs

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            self._loaded[name] = load(self._specs[name])
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self._specs!r})"
