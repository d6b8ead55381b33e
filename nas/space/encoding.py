"""The Optuna side of a ``SearchSpace``: define-by-run parameters (``suggest``) and their inverse (``encode``).

Every parameter is categorical and each name has one fixed choice list, so any Optuna sampler (and a study
resumed later) sees the same parameters; a width whose choices depend on the previous stage's width
carries that width in its name (``S2.width|S1=48``).
"""

from __future__ import annotations

from typing import Any

from nas.model.arch import VIT_REL, Architecture
from nas.space.choices import STAGES

__all__ = ["OptunaEncoding"]


class OptunaEncoding:
    """Mixin of :class:`nas.space.search_space.SearchSpace`: its choices as Optuna parameters and back.

    Uses the space's choice lists (``_layouts``, ``_patch_sizes``, ``_options``, ``_width_lists``), its width
    chain counts (``_chains``, ``_nondec``) and its builders (``_depth_lists``, ``_width_choices_after``,
    ``_make``, ``why_invalid``).
    """

    def suggest(self, trial: Any) -> Architecture:
        """Define-by-run sampling with ``trial.suggest_categorical`` only; always returns a valid candidate.

        Every parameter name has one fixed choice list: a width whose choices depend on the previous
        stage's width carries that width in its name (``S2.width|S1=48``).
        """
        layout = (
            trial.suggest_categorical("layout", list(self._layouts)) if len(self._layouts) > 1 else self._layouts[0]
        )
        patch = None
        if layout == VIT_REL:
            patch = (
                trial.suggest_categorical("vit_rel.patch_size", list(self._patch_sizes))
                if len(self._patch_sizes) > 1
                else self._patch_sizes[0]
            )
        names = ("S0", *STAGES)
        depths = []
        for name, ds in zip(names, self._depth_lists()):
            depths.append(trial.suggest_categorical(f"{name}.depth", list(ds)) if len(ds) > 1 else ds[0])
        widths, prev = [], None
        for i in range(len(names)):
            ws = self._width_choices_after(i, prev)
            if len(ws) > 1:
                pname = self._width_param(i, prev)
                prev = trial.suggest_categorical(pname, ws)
            else:
                prev = ws[0]
            widths.append(prev)
        opts = {}
        for k, vals in self._options.items():
            opts[k] = trial.suggest_categorical(f"blocks.{k}", list(vals)) if len(vals) > 1 else vals[0]
        return self._make(layout, depths, widths, opts, patch)

    def _width_param(self, i: int, prev: int | None) -> str:
        """``S2.width``, or ``S2.width|S1=48`` where the choices depend on the previous width (so that
        every name has one fixed choice list); flat names keep a study's parameters few and dense."""
        names = ("S0", *STAGES)
        if i == 0 or not self._nondec:
            return f"{names[i]}.width"
        prevs = [w for w in self._width_lists[i - 1] if self._chains[i - 1][w] > 0]
        if all(self._width_choices_after(i, p) == self._width_choices_after(i, prevs[0]) for p in prevs):
            return f"{names[i]}.width"
        return f"{names[i]}.width|{names[i - 1]}={prev}"

    def encode(self, arch: Architecture) -> dict[str, Any]:
        """The parameters for which ``suggest(optuna.trial.FixedTrial(params))`` returns ``arch``."""
        why = self.why_invalid(arch)
        if why:
            raise ValueError(f"{arch} is not in this search space: {why}")
        params: dict[str, Any] = {}
        if len(self._layouts) > 1:
            params["layout"] = arch.layout_name
        if arch.is_vit and len(self._patch_sizes) > 1:
            params["vit_rel.patch_size"] = arch.patch_size
        names = ("S0", *STAGES)
        for name, d, ds in zip(names, arch.depths, self._depth_lists()):
            if len(ds) > 1:
                params[f"{name}.depth"] = d
        prev = None
        for i, w in enumerate(arch.widths):
            if len(self._width_choices_after(i, prev)) > 1:
                params[self._width_param(i, prev)] = w
            prev = w
        for k, vals in self._options.items():
            if len(vals) > 1:
                params[f"blocks.{k}"] = getattr(arch.options, k)
        return params
