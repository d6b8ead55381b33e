"""Ray's start-up notices go to the run's log file instead of the terminal.

``ray.init`` of Ray 2.5x logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=
disabled to opt out ..." on every local start (Ray turns token authentication on by default and says so).
A newcomer cannot act on it, and the advice it gives (turn authentication off) is not one coatnas wants to
give, so while Ray starts, the loggers in :data:`NOTICE_LOGGERS` are held: on success their lines are
handed to the caller's sink (the run's log), on failure they are printed to stderr with the error.
Token authentication itself is left exactly as Ray sets it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

NOTICE_LOGGERS = ("ray._private.authentication",)
"""Loggers whose records during Ray's start are notices for the log file (warnings included)."""


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a notice we cannot format is not worth failing the start
            pass


@contextmanager
def ray_notices(sink: Callable[[str], None]) -> Iterator[None]:
    """Hold the notices Ray logs inside the block; give each line to ``sink`` when the block succeeds,
    print them to stderr when it raises (they may explain the failure). A ``sink`` that fails (a full
    disk) loses the notices, never the run."""
    hold = _Hold()
    saved = []
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(hold)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        yield
    except (KeyboardInterrupt, SystemExit):  # a pause (a stop signal while Ray starts), not a failure
        _give(hold.lines, sink)
        raise
    except BaseException:
        for line in hold.lines:
            print(f"ray: {line}", file=sys.stderr, flush=True)
        raise
    finally:
        for logger, propagate, level in saved:
            logger.removeHandler(hold)
            logger.propagate, logger.level = propagate, level
    _give(hold.lines, sink)


def _give(lines: list[str], sink: Callable[[str], None]) -> None:
    for line in lines:
        try:
            sink(f"ray: {line}")
        except OSError:
            pass
