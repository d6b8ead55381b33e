"""Command-line entry points: thin argparse shells over the Python API.

Each command module defines ``main(argv=None) -> int`` and wraps its body with :func:`run_cli`, so user
mistakes (:class:`nas.errors.UserError`) print one paragraph on stderr and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from collections.abc import Callable

from nas.errors import UserError


def fail(prog: str, message: str) -> int:
    """Print a user-facing error paragraph and return the exit status 2."""
    body = textwrap.fill(message, width=100, break_long_words=False, break_on_hyphens=False)
    print(f"{prog}: error: {body}", file=sys.stderr)
    return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one paragraph naming the flag and what it allows."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(fail(self.prog, f"{message}. Run `{self.prog} --help` for the allowed flags."))


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; turn :class:`UserError` (and an ``OSError`` of the file system) into a message and exit
    status 2, Ctrl-C into 130 (SIGTERM 143, SIGHUP 129: 128 + the signal)."""
    try:
        return int(body() or 0)
    except UserError as err:
        return fail(prog, str(err))
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGHUP of a search or a study (nas.runtime.signals)
        from nas.runtime.signals import exit_code

        signum = getattr(err, "signum", signal.SIGINT)
        print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return exit_code(signum)
    except BrokenPipeError:  # the reader of our output went away (`nas-predict ... | head`): not an error
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except (OSError, ValueError):
            pass
        return 0
    except OSError as err:  # a full disk, a read-only or vanished folder: the OS's words and the file
        from nas.fsio import os_problem

        where = f" {err.filename}" if err.filename else ""
        return fail(prog, f"Cannot access{where}: {os_problem(err)}.")
