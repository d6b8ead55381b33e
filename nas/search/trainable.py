"""The Ray Tune trainable: one proxy training of one candidate inside a worker process.

The worker uses exactly the CPUs it was given (torch threads = CPUs per trial) and loads the data set once
per process (``trainers.data.load_dataset`` caches it; Tune reuses the actors). Per-epoch estimates are
reported to Tune (so an ASHA scheduler can stop the trial); the last report carries the whole result.
"""
from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["train_trial", "FINAL_KEY", "RESULT_KEY"]

FINAL_KEY = "nas_final"
RESULT_KEY = "nas_result"


def train_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Train ``config["arch"]`` with the protocol in ``setup`` and report to Tune."""
    t_enter = time.perf_counter()
    import torch
    from ray import tune

    from nas.arch import Architecture
    from trainers.data import load_dataset
    from trainers.proxy import parse_objective, parse_train, train_candidate

    threads = max(1, int(setup["cpus_per_trial"]))
    torch.set_num_threads(threads)
    train = parse_train(setup["train"])
    objective = parse_objective(setup["objective"])
    arch = Architecture.from_dict(config["arch"])
    dataset = load_dataset(train.data, setup["image_size"], setup["in_chans"])
    t_start = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({"score": metrics["score"], "generalization": metrics["generalization"],
                     "capacity": metrics["capacity"], "epoch": epoch, FINAL_KEY: 0})

    res = train_candidate(arch, dataset, train, objective, num_threads=threads, on_epoch=on_epoch,
                          image_size=setup["image_size"])
    t_end = time.perf_counter()
    payload = res.to_dict()
    payload["metrics"] = {**payload["metrics"], "num_classes": float(dataset.num_classes),
                          "setup_s": t_start - t_enter, "trial_s": t_end - t_start}
    tune.report({"score": res.score, "generalization": res.generalization, "capacity": res.capacity,
                 "epoch": len(res.history) + 1, FINAL_KEY: 1, RESULT_KEY: json.dumps(payload)})
