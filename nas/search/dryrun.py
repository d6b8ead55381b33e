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
        lines.append(f"  {arch}  {cost.params / 1e6:.3f}M params  {cost.macs / 1e6:.1f}M MACs  id {arch.id}{flag}")
    return "\n".join(lines)
