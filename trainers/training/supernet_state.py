"""The torch-free side of the weight-sharing proxy (``train.supernet``): which supernets a protocol trains, and the
layout of a supernet's state, so that the driver (``nas.search.supernet``, which writes and reads the checkpoints)
and the dry run never import torch. The training itself is ``trainers.training.supernet``.

A supernet's state is a flat mapping of numpy arrays: its tensors under ``w/`` (by supernet key), AdamW's two
moments and step count per tensor under ``m/``, ``v/``, ``s/``, and the batch generator's state as ``rng``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GENERALIZATION, FULL = "generalization", "full"
WEIGHTS, EXP_AVG, EXP_AVG_SQ, ADAM_STEP, RNG = "w/", "m/", "v/", "s/", "rng"


def regimes_of(train, objective) -> tuple[str, ...]:
    """The supernets a protocol trains: one per regime of ``objective.mode: both`` (``regimes: separate``), else
    one on the full split."""
    if objective.mode == "both" and train.supernet is not None and train.supernet.regimes == "separate":
        return (GENERALIZATION, FULL)
    return (FULL,)


def weights_of(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """The supernet's tensors (what a trial inherits from) of a state, by supernet key."""
    return {k[len(WEIGHTS) :]: v for k, v in arrays.items() if k.startswith(WEIGHTS)}
