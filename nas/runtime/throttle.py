"""A bound on what bookkeeping may cost a long-running command.

Files that summarise a whole run (the leaderboard, the pushed copy of a cloud run directory) cost more to
rewrite as the run grows. Rewriting them after every trial makes the driver's cost per trial grow with the
run (quadratic in total). A :class:`Throttle` lets such a rewrite happen only when enough time has passed
since the last one: at least ``min_interval_s``, and at least the last rewrite's own cost divided by
``share``, so the rewrites take at most about ``share`` of the wall time however large the run is. While
trials take longer than that, every trial still rewrites.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Throttle:
    """Runs an action when it is due (see the module docstring); ``force`` runs it regardless."""

    def __init__(self, share: float = 0.05, min_interval_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self.share, self.min_interval_s, self.clock = share, min_interval_s, clock
        self.last_end: float | None = None
        self.last_cost = 0.0
        self.runs = 0
        self.skipped = 0  # calls that did not run the action
        self._skipped_action: Callable[[], object] | None = None  # skipped since the action last ran
        self.total_s = 0.0

    def due(self) -> bool:
        """Whether the action may run now."""
        if self.last_end is None:
            return True
        wait = max(self.min_interval_s, self.last_cost / self.share)
        return self.clock() - self.last_end >= wait

    def __call__(self, action: Callable[[], T], force: bool = False) -> T | None:
        """Run ``action`` if it is due (or ``force``) and return its result; else ``None``."""
        if not force and not self.due():
            self.skipped += 1
            self._skipped_action = action
            return None
        t0 = self.clock()
        try:
            return action()
        finally:
            self.last_end = self.clock()
            self.last_cost = self.last_end - t0
            self.total_s += self.last_cost
            self.runs += 1
            self._skipped_action = None

    @property
    def pending(self) -> bool:
        """A call was skipped since the action last ran (a final ``force`` or :meth:`catch_up` is owed)."""
        return self._skipped_action is not None

    def catch_up(self) -> None:
        """Run the last skipped action once it is due: call this often (the driver does at every step of
        Ray Tune's loop), so that what a skipped call would have written is late by about the interval,
        not until the next call."""
        if self._skipped_action is not None and self.due():
            self(self._skipped_action)
