"""What a running search shows: the progress counts, one line per finished trial, and the log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from nas.search.record import TrialRecord
from nas.search.rundir import RunDir


@dataclass
class Progress:
    """Counts shown in the live progress line (and passed to ``should_stop``)."""

    target: int
    done: int = 0
    running: int = 0
    failed: int = 0
    skipped: int = 0
    done_at_start: int = 0
    best: TrialRecord | None = None
    elapsed_s: float = 0.0

    @property
    def eta_s(self) -> float | None:
        new = self.done - self.done_at_start
        if new <= 0:
            return None
        return self.elapsed_s / new * max(0, self.target - self.done)

    def add(self, rec: TrialRecord) -> None:
        """Count a newly finished trial record (and keep the best ``ok`` one)."""
        self.done += 1
        self.failed += not rec.ok
        if rec.ok and (self.best is None or rec.score > self.best.score):
            self.best = rec


class Printer:
    """Writes a line to the run's ``search.log`` and, unless ``out`` is ``None``, to ``out``."""

    def __init__(self, out: TextIO | None, run: RunDir):
        self.out, self.run = out, run

    def __call__(self, text: str) -> None:
        self.run.log_line(text)
        if self.out is not None:
            print(text, file=self.out, flush=True)


def fmt_duration(s: float | None) -> str:
    """``MM:SS`` (``H:MM:SS`` from an hour), ``--:--`` for unknown."""
    if s is None:
        return "--:--"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def trial_line(prog: Progress, rec: TrialRecord) -> str:
    """The progress line printed when the trial of ``rec`` finished."""
    best = f"best {prog.best.score:.3f} (trial {prog.best.number})" if prog.best else "best -"
    what = rec.status + (f": {rec.reason[:60]}" if not rec.ok else f" score {rec.score:.3f}")
    return (
        f"[{prog.done:>3}/{prog.target}] trial {rec.number} {rec.arch_str} -> {what} | "
        f"running {prog.running} failed {prog.failed} skipped {prog.skipped} | {best} | "
        f"{fmt_duration(prog.elapsed_s)} elapsed, ETA {fmt_duration(prog.eta_s)}"
    )
