"""The run's TensorBoard view: one TensorBoard run per trial, named by its architecture (docs/dashboards.md).

``tensorboard --logdir RUN/tune`` lists one run per trial the driver recorded, in a folder of ``RUN/tune``
named like ``t0003 C-C-T-T L=2,1,1,1,1 D=32,32,64,64,128`` (the trial number, then the architecture;
`` - diverged`` and the like after a failed one). Its event file is written once, when the trial's record
is, from the record's per-round history (a record without one gets no run; nor does a table replay,
``search.trainer: table:PATH``); the tags are :data:`TAGS`. Each regime of the proxy protocol
(``trainers.training.proxy``) is its own group, stepped by the optimizer steps of that training: the capacity
axis a trial reports to Tune while it trains on the small subset is that subset's fit, so one curve across
both trainings jumps where they switch, and here it does not.

Ray Tune's own TensorBoard logger (runs ``session-K/trial-NNNN-<id>``, tags ``ray/tune/*`` with Ray's timing
figures, no loss or accuracy) is kept off with :func:`ray_logger_off`; Ray's per-trial ``result.json`` and
``progress.csv`` stay in ``tune/session-K/``.

The event file is TensorBoard's record format written whole with :func:`nas.fsio.atomic_write`: the protocol
buffers come from ``tensorboardX`` (a dependency of ``ray[tune]``); no writer thread, nothing left open.
"""

from __future__ import annotations

import math
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.fsio import atomic_write, make_dirs
from nas.search.record import TrialRecord

REGIME_GROUPS = {"generalization": "generalization_regime", "full": "capacity_regime"}
"""The group of a round's tags by its ``regime`` (``single`` mode trains once: its group is ``training``)."""

ROUND_TAGS = {
    "train_loss": "train_loss",  # cross-entropy on the fit images, eval mode, after the round
    "val_loss": "val_loss",
    "train_acc": "train_acc",
    "val_acc": "val_acc",
}
"""Per-round measurements every regime shows, under ``<group>/<tag>`` (row key -> tag)."""

TAGS = {
    "generalization_regime/generalization": "the generalization axis after each round of the subset training",
    "generalization_regime/{train,val}_{loss,acc}": "that training's fit and validation loss and accuracy",
    "capacity_regime/capacity": "the capacity axis after each round of the full-split training",
    "capacity_regime/{train,val}_{loss,acc}": "that training's fit and validation loss and accuracy",
    "training/{generalization,capacity}": "objective.mode single: both axes from its one training",
    "training/{train,val}_{loss,acc}": "objective.mode single: its fit and validation loss and accuracy",
    "result/<axis>, result/score, result/val_acc": "the trial's recorded result, one point at its last step",
    "trial (text)": "architecture, status, reason, parameters, MACs, score",
}
"""Every tag of a trial's run, with what it shows (step: optimizer steps of that training)."""

_NAME_CHARS = re.compile(r"[^A-Za-z0-9 =,.+_-]")


def run_name(rec: TrialRecord) -> str:
    """The TensorBoard run (folder) of ``rec``: ``t0003 C-C-T-T L=2,1,1,1,1 D=32,32,64,64,128``, `` - <status>``
    added when it is not ok; only letters, digits, spaces and ``=,.+_-`` (a valid folder name anywhere)."""
    number = f"t{rec.number:04d}" if rec.number is not None else f"t-{rec.id}"
    status = "" if rec.status == "ok" else f" - {rec.status}"
    return _NAME_CHARS.sub("_", f"{number} {rec.arch_str}{status}")[:200].rstrip(" .")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def scalars(rec: TrialRecord) -> Iterator[tuple[str, float, int]]:
    """The ``(tag, value, step)`` of ``rec``'s run (see :data:`TAGS`)."""
    single = not any(row.get("regime") == "generalization" for row in rec.history)
    rounds: dict[str, int] = {}
    last = 0
    for row in rec.history:
        regime = row.get("regime", "full")
        group = "training" if single else REGIME_GROUPS.get(regime, str(regime))
        rounds[group] = rounds.get(group, 0) + 1
        step = row.get("step")
        step = int(step) if _number(step) is not None else rounds[group]
        last = max(last, step)
        if single:
            axes: tuple[str, ...] = ("generalization", "capacity")
        else:
            axes = ("capacity",) if group == "capacity_regime" else ("generalization",)
        for key in (*axes, *ROUND_TAGS):
            value = _number(row.get(key))
            if value is not None:
                yield f"{group}/{ROUND_TAGS.get(key, key)}", value, step
    final = {**rec.values, "score": rec.score, "val_acc": rec.metrics.get("val_acc")}
    if rec.status in ("ok", "stopped"):
        for key, value in final.items():
            value = _number(value)
            if value is not None:
                yield f"result/{key}", value, last


def summary_text(rec: TrialRecord) -> str:
    """The run's ``trial`` text (Markdown)."""
    rows = [
        ("trial", rec.number),
        ("architecture", rec.arch_str),
        ("status", rec.status),
        ("reason", rec.reason or ""),
        ("params", f"{int(rec.metric('params')):,}"),
        ("MACs", f"{int(rec.metric('macs')):,}"),
        ("score", f"{rec.score:.4f}"),
        *((name, f"{value:.4f}") for name, value in rec.values.items()),
    ]
    cells = [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows if v not in ("", None)]
    return "\n".join(["| | |", "|---|---|", *cells])


def _record(data: bytes) -> bytes:
    """One record of TensorBoard's event file format (TFRecord: length, masked CRC-32C of it, data, its CRC)."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def event_file(rec: TrialRecord, wall_time: float | None = None) -> bytes:
    """The bytes of ``rec``'s event file."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar, text

    t = time.time() if wall_time is None else wall_time
    out = [_record(Event(wall_time=t, file_version="brain.Event:2").SerializeToString())]
    for tag, value, step in scalars(rec):
        out.append(_record(Event(wall_time=t, step=step, summary=scalar(tag, value)).SerializeToString()))
    out.append(_record(Event(wall_time=t, step=0, summary=text("trial", summary_text(rec))).SerializeToString()))
    return b"".join(out)


def write_trial(logdir: Path, rec: TrialRecord) -> Path | None:
    """Write ``rec``'s run into ``logdir`` (``RUN/tune``); return its folder. ``None``: the record has no
    rounds to show (a trial that never trained: infeasible, a worker error before its first round; one
    stopped by the scheduler, whose record keeps no history; a trainer that reports no rounds)."""
    if not rec.history:
        return None
    folder = Path(logdir) / run_name(rec)
    make_dirs(folder)
    atomic_write(folder / "events.out.tfevents.0.coatnas", event_file(rec), what=f"the TensorBoard log of {folder}")
    return folder


def ray_logger_off():
    """A Tune callback that takes the place of Ray Tune's automatic TensorBoard logger (Tune adds its own
    unless one is given) and writes nothing."""
    from ray.tune.logger import LoggerCallback
    from ray.tune.logger.tensorboardx import TBXLoggerCallback

    class NoRayTensorBoard(TBXLoggerCallback):
        def __init__(self) -> None:
            LoggerCallback.__init__(self)

        def log_trial_start(self, trial) -> None:
            pass

        def log_trial_result(self, iteration, trial, result) -> None:
            pass

        def log_trial_end(self, trial, failed: bool = False) -> None:
            pass

    return NoRayTensorBoard()
