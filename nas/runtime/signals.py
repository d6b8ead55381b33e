"""Stopping a search by signal: SIGINT (Ctrl-C), SIGTERM and SIGHUP are a pause, never a loss.

Outside the trial loop a signal raises :class:`SearchInterrupted` at once (nothing to save yet: a refused or
half-made start is cleaned up by the driver). Inside it the first signal asks the loop to stop cleanly
(running trials are re-run on resume) and a second one aborts the loop; either way everything recorded is
saved and the process exits with 128 + the signal number (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EXIT_CODES", "STOP_SIGNALS", "SearchInterrupted", "StopSignals", "StopFlag"]

# exit status of nas-search stopped by a signal (everything saved, resumable): 128 + the signal number
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SearchInterrupted(KeyboardInterrupt):
    """The search was stopped by a signal before it could stop cleanly (``signum``: which)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class StopFlag:
    """Asks the trial loop to stop after the trials running now; ``why`` says who asked."""

    set: bool = False
    why: str = ""

    def request(self, why: str) -> None:
        self.set, self.why = True, why


class StopSignals:
    """The stop signals of one search (handled in the main thread only; elsewhere a no-op).

    ``on_stop`` (set while the trial loop runs) is called with the first signal instead of raising.
    Re-install after ``ray.init``, which puts a SIGTERM handler of its own in place.
    """

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        self.old: dict[int, Any] = {}
        self.received: int | None = None
        self.on_stop: Callable[[int], None] | None = None

    def _handle(self, signum, frame):
        if self.on_stop is not None and self.received is None:
            self.received = signum
            self.on_stop(signum)
            return
        self.received = self.received or signum
        raise SearchInterrupted(signum)

    def install(self) -> None:
        if not self.active:
            return
        for sig in STOP_SIGNALS:
            old = signal.signal(sig, self._handle)
            self.old.setdefault(sig, old)

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
