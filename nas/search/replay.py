"""A search replayed on a tabulated benchmark in this process, without Ray: the same Optuna sampler, study
and :class:`~nas.search.searcher.OptunaSearcher` (budget screening, duplicates, records) as
:func:`nas.search.run`, with the trials answered one after another from the table.

With one trial at a time, :func:`nas.search.run` on a table proposes the same candidates in the same order
(``tests/test_table.py`` checks it), so this is the fast path for studies that replay many searches
(``scripts/bench_samplers.py``: samplers over 20+ seeds in minutes). Searches that need Ray's behaviour
(several trials at once, ASHA) replay through :func:`nas.search.run` with ``search.trainer: table:PATH``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from nas.search.config import Experiment, load_experiment


class _Records:
    """Where the searcher appends its records: a list (a replay keeps no run directory)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.tune_dir = Path(os.devnull)

    def append_record(self, record) -> None:  # a nas.search.record.TrialRecord
        self.records.append(record.to_json())


def replay_search(
    space: str | os.PathLike | Experiment,
    *,
    trials: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    startup_trials: int | None = None,
    lag: int = 1,
) -> list[dict[str, Any]]:
    """Replay a search whose ``search.trainer`` is a table; return its trial records in order (the same
    fields as ``trials.jsonl``). ``trials``, ``seed``, ``sampler`` and ``startup_trials`` override the YAML.
    ``lag`` trials are in flight at once, the oldest finishing first, as ``max_concurrent`` trials of equal
    cost would: each proposal then sees the results of all but the last ``lag - 1`` launches."""
    import optuna
    from ray.tune.search import Searcher

    from nas.errors import UserError
    from nas.model.arch import Architecture
    from nas.model.cost import count_cost
    from nas.search import optuna_bridge as ob
    from nas.search.searcher import OptunaSearcher
    from nas.search.trainable import FINAL_KEY, RESULT_KEY
    from trainers.objectives.registry import objectives_of
    from trainers.training.tabular import is_table, load_table, replay, table_path

    exp = space if isinstance(space, Experiment) else load_experiment(space)
    exp = exp.with_search(trials=trials, seed=seed, sampler=sampler, startup_trials=startup_trials)
    s, sp = exp.search, exp.space
    if not is_table(s.trainer):
        raise UserError(
            f"replay_search needs a search YAML whose search.trainer is table:PATH; "
            f"{exp.file} trains with {s.trainer}. Use nas.search.run for real trainings."
        )
    table = load_table(table_path(s.trainer))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        objectives = objectives_of(exp.objective)
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            directions=[o.direction for o in objectives],
            sampler=ob.make_sampler(s.sampler, s.seed, s.startup_trials),
        )
        ob.name_metrics(study, objectives)
    if s.sampler == "grid":
        ob.enqueue_grid(study, sp)

    def cost_fn(arch: Architecture):  # count_cost caches its results
        return count_cost(arch, image_size=sp.image_size, num_classes=table.num_classes, in_chans=sp.in_chans)

    sink = _Records()
    lag = max(1, lag)
    searcher = OptunaSearcher(
        study,
        sp,
        cost_fn,
        {},
        s.trials,
        run=sink,
        grid=s.sampler == "grid",
        max_skips=s.max_skips,
        seed=s.seed,
        ordered_lag=lag if s.ordered else None,
    )
    in_flight: list[tuple[str, dict]] = []  # launched, not yet told: the oldest finishes first

    def finish_oldest() -> None:
        tid, config = in_flight.pop(0)
        res = replay(Architecture.from_dict(config["arch"]), table, exp.objective)
        searcher.on_trial_complete(
            tid,
            {
                "score": res.score,
                "generalization": res.generalization,
                "capacity": res.capacity,
                FINAL_KEY: 1,
                RESULT_KEY: json.dumps(res.to_dict()),
            },
        )

    for i in range(s.trials):
        tid = f"replay-{i}"
        while len(in_flight) >= lag:
            finish_oldest()
        config = searcher.suggest(tid)
        while config is None and in_flight:  # ordered: waits for the trial lag launches back
            finish_oldest()
            config = searcher.suggest(tid)
        if config is None or config == Searcher.FINISHED:
            break
        in_flight.append((tid, config))
    while in_flight:
        finish_oldest()
    return sink.records
