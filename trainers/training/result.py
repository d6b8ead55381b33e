"""`TrialResult`: what one proxy training returns (the contract between trainers and the search), and the one
classifier of what went wrong in a training (:func:`classify_failure`, :func:`is_oom`).

The classifier is used by the proxy trainer, ``nas-train``, the search's worker and the fidelity runner
(on the driver too, for a worker that Ray lost). It imports neither torch nor Ray: it recognises their
exceptions by class when torch is loaded (``torch.OutOfMemoryError``) or by the class's name and module
(Ray's ``OutOfMemoryError``, a crashed worker, a task error wrapping its cause).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "TrialResult",
    "Status",
    "FAILED_STATUSES",
    "Failure",
    "classify_failure",
    "is_oom",
    "Divergence",
    "NonFiniteResult",
]

Status = Literal["ok", "diverged", "oom", "error", "infeasible"]
FAILED_STATUSES = ("diverged", "oom", "error", "infeasible")
REASON_MAX = 500  # characters of a failure's reason kept in a record


class Divergence(Exception):
    """Marker base of a failure that is a divergence (status ``diverged``): a training loss or a result that
    is not finite (``trainers.training.fit.Diverged``, :class:`NonFiniteResult`)."""


class NonFiniteResult(ValueError, Divergence):
    """A :class:`TrialResult` given a non-finite axis (a trainer that returned NaN)."""


# What an allocation failure says when it is a plain RuntimeError: CUDA, the CPU allocator, MPS, cuDNN, cuBLAS.
OOM_TEXTS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "cudnn_status_not_enough_memory",
    "cublas_status_alloc_failed",
)
_RAY_OOM = ("OutOfMemoryError",)  # ray.exceptions: the memory monitor killed the worker
_RAY_LOST = ("WorkerCrashedError", "RayActorError", "NodeDiedError", "LocalRayletDiedError", "ActorUnavailableError")


def _cause(err: BaseException) -> BaseException:
    """The exception a Ray task error wraps (``RayTaskError.cause``), else ``err``."""
    for _ in range(8):
        cause = getattr(err, "cause", None)
        if not isinstance(cause, BaseException) or cause is err or not _ray_names(err):
            break
        err = cause
    return err


def _ray_names(err: BaseException) -> set[str]:
    """The names of ``err``'s classes that Ray defines."""
    return {c.__name__ for c in type(err).__mro__ if c.__module__.split(".")[0] == "ray"}


def _text(err: BaseException) -> str:
    """The message on one line (Ray's multi-line messages: their first line)."""
    text = str(err).strip()
    if _ray_names(err):
        text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return " ".join(text.split())


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA out of memory (``torch.OutOfMemoryError``), the CPU
    allocator or Python giving up (``MemoryError``), or Ray's memory monitor killing the worker."""
    err = _cause(err)
    torch = sys.modules.get("torch")  # a torch error exists only where torch is loaded
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(err, MemoryError) or (oom is not None and isinstance(err, oom)):
        return True
    if _ray_names(err) & set(_RAY_OOM):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in OOM_TEXTS)


@dataclass(frozen=True)
class Failure:
    """What went wrong in a training: its status (``error``, ``oom``, ``diverged``) and a one-line reason."""

    status: Status
    reason: str


def classify_failure(err: BaseException, *, device: str | None = None) -> Failure:
    """The status and reason of a training that raised ``err`` (``device``: where it ran, for the reason).

    ``diverged``: a :class:`Divergence` (a non-finite loss or result); ``oom``: :func:`is_oom`; ``error``:
    anything else, a worker Ray lost included (``worker lost: ...``). The reason is one line of at most
    ``REASON_MAX`` characters."""
    inner = _cause(err)
    text = _text(inner)
    names = _ray_names(inner)
    if isinstance(inner, NonFiniteResult):
        status, reason = "diverged", f"the trainer returned a non-finite result ({text})"
    elif isinstance(inner, Divergence):
        status, reason = "diverged", text or type(inner).__name__
    elif is_oom(inner):
        where = f" on {device}" if device else ""
        if names & set(_RAY_OOM):
            status, reason = "oom", f"out of memory{where}: Ray killed the worker ({text})"
        else:
            status, reason = "oom", f"out of memory{where}: {text or type(inner).__name__}"
    elif names & set(_RAY_LOST):
        status, reason = "error", f"worker lost: {text or type(inner).__name__}"
    else:
        status, reason = "error", f"{type(inner).__name__}: {text}" if text else type(inner).__name__
    return Failure(status, reason[:REASON_MAX])


def status_of_log(text: str) -> Status:
    """The status of a training known only by the text of its error log (a worker Tune lost, with its
    ``error.txt``): ``oom`` where the log names an out-of-memory error (Ray's memory monitor, torch's,
    ``MemoryError``, the allocator's words), else ``error``."""
    low = text.lower()
    names = (*_RAY_OOM, "MemoryError")
    return "oom" if any(n.lower() in low for n in names) or any(t in low for t in OOM_TEXTS) else "error"


@dataclass
class TrialResult:
    """Outcome of one candidate's proxy training.

    ``generalization`` and ``capacity`` are the paper's two axes, each in [0, 1], higher is better
    (definitions in ``docs/objective.md``); ``score`` is their normalised weighted mean, also in [0, 1].
    A failed trial (any status but ``ok``) carries its ``reason`` and the worst values (0.0).
    ``metrics`` holds every other figure (val_acc, train_acc, gap, train_loss, params, macs,
    images_per_s, wall_s, ...); ``history`` one dict per epoch.
    """

    status: Status
    generalization: float = 0.0
    capacity: float = 0.0
    score: float = 0.0
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, status: Status, reason: str, **metrics: float) -> TrialResult:
        return cls(status=status, reason=reason, metrics=dict(metrics))

    @classmethod
    def of_error(cls, err: BaseException, *, device: str | None = None, **metrics: float) -> TrialResult:
        """The failed result of a training that raised ``err`` (:func:`classify_failure`)."""
        failure = classify_failure(err, device=device)
        return cls.failed(failure.status, failure.reason, **metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            **{
                k: data[k]
                for k in ("status", "generalization", "capacity", "score", "reason", "metrics", "history")
                if k in data
            }
        )

    def __post_init__(self) -> None:
        for name in ("generalization", "capacity", "score"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise NonFiniteResult(f"{name} must be finite, got {value}")
