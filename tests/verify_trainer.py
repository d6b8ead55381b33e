"""A proxy trainer whose verification trainings (a training seed other than the search's 0) take a few
seconds longer, so that a test can stop a search during its verification stage (``search.trainer``)."""

from __future__ import annotations

import time

from trainers.training.proxy import train_candidate


def train(arch, dataset, train, objective, **kwargs):
    if train.seed != 0:
        time.sleep(3.0)
    return train_candidate(arch, dataset, train, objective, **kwargs)
