"""Data, training and objectives: what a worker runs for one candidate (``data``, ``training``, ``objectives``).

Public: ``trainers.training.result.TrialResult``, what a trainer returns (docs/api.md, "A custom trainer"),
and the recorded trainer name ``trainers.proxy:train_candidate``. Everything else is internal.
"""
