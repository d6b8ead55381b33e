"""A proxy trainer that fails on purpose, by architecture, for the fault tests (``search.trainer``).

Stage S3 and the S1 width pick the fault; every other candidate is trained for real:

    S1 width 8:  S3 = C x1 -> raises      S3 = C x2 -> returns NaN axes   S3 = T x1 -> real out of memory
    S1 width 16: S3 = C x1 -> the worker process dies (os._exit)

``train_marked`` trains every candidate for real but first leaves a file ``<node id>.<arch id>`` in
``$CHAOS_MARKERS``, so a test knows which node a trial is running on.
"""

from __future__ import annotations

import os

import torch

from trainers.training.proxy import train_candidate
from trainers.training.result import TrialResult


def fault_of(arch) -> str | None:
    s3 = (arch.layout[2], arch.depths[3])
    if arch.widths[1] == 8:
        return {("C", 1): "raise", ("C", 2): "nan", ("T", 1): "oom"}.get(s3)
    return "die" if s3 == ("C", 1) else None


def train(arch, dataset, train, objective, **kwargs) -> TrialResult:
    fault = fault_of(arch)
    if fault == "raise":
        raise ValueError(f"chaos: refusing {arch}")
    if fault == "nan":
        return TrialResult(status="ok", generalization=float("nan"), capacity=0.5, score=0.5)
    if fault == "oom":
        torch.empty(2**50, dtype=torch.uint8)  # a real allocation failure of the CPU allocator
    if fault == "die":
        os._exit(3)
    return train_candidate(arch, dataset, train, objective, **kwargs)


def train_marked(arch, dataset, train, objective, **kwargs) -> TrialResult:
    import ray

    folder = os.environ["CHAOS_MARKERS"]
    open(os.path.join(folder, f"{ray.get_runtime_context().get_node_id()}.{arch.id}"), "w").close()
    return train_candidate(arch, dataset, train, objective, **kwargs)
