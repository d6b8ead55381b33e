"""The search: Ray Tune runs the trials, Optuna proposes and ranks them, the run directory remembers.

``run(space, ...)`` is the Python API (``nas-search`` is argparse over it); ``dry_run`` describes a search
without training; ``load_experiment`` validates a search YAML. Ray and Optuna load on first use.
"""

from __future__ import annotations

from nas.search.config import Experiment, SchedulerConfig, SearchConfig, load_experiment
from nas.search.driver import SearchResult, run
from nas.search.dryrun import dry_run
from nas.search.progress import Progress
from nas.search.rundir import RunDir

__all__ = [
    "run",
    "dry_run",
    "SearchResult",
    "Progress",
    "SearchConfig",
    "SchedulerConfig",
    "Experiment",
    "load_experiment",
    "RunDir",
]
