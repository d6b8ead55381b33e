"""``nas-search --dry-run``: validate a search YAML and describe the search without training (no Ray)."""

from __future__ import annotations

import os
import random

from nas.search.config import Experiment, load_experiment
from trainers.training.tabular import is_table, table_path


def dry_run(
    space: str | os.PathLike | Experiment, *, samples: int = 5, seed: int | None = None, trials: int | None = None
) -> str:
    """Validate the YAML and describe the search without training: size, budgets, sampled candidates
    (drawn with ``seed``, default the YAML's ``search.seed``)."""
    from nas.limits import check_value
    from nas.model.cost import count_cost
    from nas.model.geometry import token_grid

    check_value(samples, "samples", None, "--samples")
    exp = space if isinstance(space, Experiment) else load_experiment(space)
    exp = exp.with_search(trials=trials, seed=seed)
    seed = exp.search.seed
    sp, k = exp.space, exp.num_classes
    rng = random.Random(seed)
    source = (
        f"replayed from the table {table_path(exp.search.trainer)}, no data read"
        if is_table(exp.search.trainer)
        else exp.train.data.name
    )
    lines = [
        f"space {exp.file}: {sp.size():,} candidates, {len(sp.layouts)} layout(s) "
        f"({', '.join(sp.layouts)}), input {sp.image_size}px x{sp.in_chans}, {k} classes ({source})",
        f"budgets: max_params {sp.budgets.max_params or 'none'}, max_macs {sp.budgets.max_macs or 'none'}",
        f"search: {exp.search.trials} trials, sampler {exp.search.sampler}, {exp.search.cpus_per_trial:g} "
        f"CPU / {exp.search.gpus_per_trial:g} GPU per trial, scheduler {exp.search.scheduler.type}",
        f"{samples} sampled candidates (seed {seed}):",
    ]
    for _ in range(samples):
        arch = sp.sample(rng)
        cost = count_cost(arch, image_size=sp.image_size, num_classes=k, in_chans=sp.in_chans)
        over = [n for n, e in zip(("params", "MACs"), sp.budgets.excess(cost)) if e > 0]
        flag = f"  OVER BUDGET ({', '.join(over)}: skipped by the search)" if over else ""
        lines.append(
            f"  {arch}  grid {token_grid(arch, sp.image_size)}  {cost.params / 1e6:.3f}M params  "
            f"{cost.macs / 1e6:.1f}M MACs  id {arch.id}{flag}"
        )
    lines.append(_grid_note(sp))
    sn = exp.train.supernet
    if sn is not None and not is_table(exp.search.trainer):
        from trainers.training.supernet_state import regimes_of

        regimes = regimes_of(exp.train, exp.objective)
        lines.append(
            f"proxy: weight sharing (docs/supernet.md): {len(regimes)} supernet(s) ({', '.join(regimes)}) x "
            f"{sn.steps} steps, trained once before the trials into RUN/supernet/; each trial inherits its weights"
            + (f" and fine-tunes {sn.finetune_steps} step(s) per regime" if sn.finetune_steps else "")
            + "; the finalists train from scratch"
        )
    f = exp.finalists
    if f is not None:
        over = ", ".join(f"{k} {v}" for k, v in f.overrides.items() if v) or "no overrides"
        front = " + the Pareto front" if f.pareto else ""
        lines.append(
            f"verification: up to {f.max} finalists (top {f.top_k} by score{front}) x {f.seeds} seeds = up to "
            f"{f.max * f.seeds} trainings after the search ({over})"
        )
    return "\n".join(lines)


def _grid_note(sp) -> str:
    """A line on the token grids: each stage's map side (S1..S4), and the stages where a T would attend over
    fewer than 4x4 tokens, so that a layout's name does not overstate what it attends over."""
    from nas.model.geometry import downsampled

    side, sides = downsampled(sp.image_size, sp.stem_stride), []
    for stride in sp.strides:
        side = downsampled(side, stride)
        sides.append(side)
    grid = ", ".join(f"S{i + 1} {s}x{s}" for i, s in enumerate(sides))
    small = [(i + 1, s) for i, s in enumerate(sides) if s < 4]
    tail = ""
    if small:
        tail = "; a T there attends over " + ", ".join(f"{s * s} token(s) at S{i}" for i, s in small)
        tail += " (docs/space.md, token grids)"
    strides = "" if tuple(sp.strides) == (2, 2, 2, 2) else f", stage strides {','.join(map(str, sp.strides))}"
    return f"token grids of the C/T layouts at {sp.image_size}px, stem stride {sp.stem_stride}{strides}: {grid}{tail}"
