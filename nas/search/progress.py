"""What a running search shows: the progress counts, one line per finished trial, and the log."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from nas.search.record import TrialRecord
from nas.search.rundir import RunDir

ETA_WINDOW = 20  # finished trials whose pace the ETA assumes


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
    finished_at: deque = field(default_factory=lambda: deque(maxlen=ETA_WINDOW))  # elapsed_s of recent trials

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace of the recent trials (the last :data:`ETA_WINDOW`): a run whose trials
        get slower (a sampler whose cost grows, longer candidates later) is not promised its early pace."""
        new = self.done - self.done_at_start
        if new <= 0:
            return None
        left = max(0, self.target - self.done)
        if len(self.finished_at) >= 4:
            times = list(self.finished_at)
            return (times[-1] - times[0]) / (len(times) - 1) * left
        return self.elapsed_s / new * left

    def add(self, rec: TrialRecord) -> None:
        """Count a newly finished trial record (and keep the best ``ok`` one); ``elapsed_s`` is its time."""
        self.finished_at.append(self.elapsed_s)
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


def proposals_line(stats: dict[str, Any]) -> str:
    """The closing line on the sampler's proposals (``nas.search.proposals.ProposalStats.as_dict``)."""
    rejected = {k: int(v) for k, v in stats.get("rejected", {}).items()}
    n = int(stats["proposals"])
    if not any(rejected.values()):
        return f"nas-search: the sampler made {n} proposal(s), all new candidates"
    neighbour, uniform = int(stats.get("replaced_by_neighbour", 0)), int(stats.get("replaced_by_uniform", 0))
    why = ", ".join(f"{v} {k}" for k, v in rejected.items() if v)
    return (
        f"nas-search: the sampler made {n} proposal(s); {sum(rejected.values())} ({stats['rejected_share']:.0%}) "
        f"were not new ({why}) and were replaced: {neighbour} by a new neighbour, {uniform} by a uniform draw; "
        f"{stats['rejected_s']:.1f} s"
    )
