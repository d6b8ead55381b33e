"""What a trial is measured on: the registry of objectives (``registry``: names, directions, failed values,
generalization, capacity, score, the Pareto front; the zero-cost proxies' names), ``latency`` and ``zerocost``.
Internal; ``registry`` imports no torch.
"""
