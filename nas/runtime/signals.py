"""Stopping a command by signal: SIGINT (Ctrl-C), SIGTERM and SIGHUP are a pause, never a loss.

One handler for ``nas-search`` and ``nas-fidelity``. While the work loop runs it has an ``on_stop``
callback: the first signal asks the loop to stop cleanly (what is finished is recorded, what runs is re-run
on resume) and a second one aborts the loop. Outside the loop (while Ray starts, before anything runs) a
signal raises :class:`Interrupted` at once. Either way the handler remembers which signal came
(``received``, ``name``), everything recorded is kept and the process exits with 128 + the signal number
(:data:`EXIT_CODES`). A SIGHUP the process inherited as ignored (``nohup``) stays ignored: closing the
terminal then does not pause the command, which is what ``nohup`` asks for.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# exit status of a command stopped by a signal (everything saved, resumable): 128 + the signal number
EXIT_CODES = {sig: 128 + int(sig) for sig in STOP_SIGNALS}


def exit_code(signum: int | None) -> int:
    """The exit status of a command stopped by ``signum`` (``None``: Ctrl-C)."""
    return 128 + int(signal.SIGINT if signum is None else signum)


class Interrupted(KeyboardInterrupt):
    """A stop signal that could not wait for a clean stop; ``signum`` says which, ``name`` its name."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


@dataclass
class StopFlag:
    """Asks a work loop to stop after what is running now; ``why`` says who asked."""

    set: bool = False
    why: str = ""

    def request(self, why: str) -> None:
        self.set, self.why = True, why


class StopSignals:
    """The stop signals of one command, handled in the main thread only (elsewhere a no-op).

    ``on_stop`` (set while the work loop runs) is called with the first signal instead of raising.
    :meth:`install` again after ``ray.init``, which puts a SIGTERM handler of its own in place
    (``nas.runtime.cluster.start_ray`` does).
    """

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.old: dict[int, Any] = {}
        self.received: int | None = None
        self._on_stop: Callable[[int], None] | None = None

    @property
    def on_stop(self) -> Callable[[int], None] | None:
        return self._on_stop

    @on_stop.setter
    def on_stop(self, fn: Callable[[int], None] | None) -> None:
        """A handler set after a signal came is called with it at once: the exception the signal raised may
        have been swallowed where it landed (an import's clean-up prints "Exception ignored in ..."), and the
        stop must not be lost."""
        self._on_stop = fn
        if fn is not None and self.received is not None:
            fn(self.received)

    @property
    def name(self) -> str | None:
        """The name of the first signal received (``SIGTERM``), or ``None``."""
        return signal.Signals(self.received).name if self.received is not None else None

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.on_stop is not None:
            self.on_stop(signum)
            return
        raise Interrupted(signum)

    def install(self) -> None:
        """Put the handler in place (again); the first previous handler of each signal is kept. A SIGHUP that
        was ignored before the first install (``nohup``) is left ignored."""
        if not self.active:
            return
        for sig in STOP_SIGNALS:
            if sig == signal.SIGHUP and self.old.get(sig, signal.getsignal(sig)) == signal.SIG_IGN:
                continue
            try:
                old = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread after all (an embedding interpreter)
                return
            self.old.setdefault(sig, old)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self.old.clear()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
