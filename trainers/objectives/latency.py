"""The ``latency`` objective: inference latency of a candidate on the worker's own device.

Measured before training on a freshly built model in eval mode (the weights do not change the cost), as
the median of ``objective.latency.repeats`` timed forward passes of one batch after ``warmup`` untimed
ones, with the worker's threads (CPU) or synchronised CUDA timing (GPU). Deployment-minded users add it
as a third axis (``objective.axes: [generalization, capacity, latency]``) or as a budget
(``objective.latency.max_ms``); see docs/objective.md.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from nas.model.arch import Architecture
from trainers.objectives.registry import ObjectiveConfig


@torch.inference_mode()
def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of ``repeats`` forward passes of ``x`` after ``warmup`` untimed ones."""
    cuda = x.device.type == "cuda"
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return times


def measure_latency(
    arch: Architecture,
    cfg: ObjectiveConfig,
    *,
    image_size: int,
    in_chans: int,
    num_classes: int,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    **_: Any,
) -> float:
    """Median latency in milliseconds of one ``cfg.latency.batch_size`` batch through ``arch``."""
    from nas.model.builder import build_model

    lat = cfg.latency
    if threads:
        torch.set_num_threads(int(threads))
    device = torch.device(device)
    model = build_model(arch, num_classes=num_classes, image_size=image_size, in_chans=in_chans).to(device).eval()
    x = torch.randn(lat.batch_size, in_chans, image_size, image_size, device=device)
    return 1000.0 * statistics.median(time_forward(model, x, lat.repeats, lat.warmup))
