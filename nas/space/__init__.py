"""The search space: reading the ``space:`` YAML section, its choices and layouts, and ``SearchSpace``.

Public (through ``nas``): ``SearchSpace``, ``load_space``. The modules (``reading``, ``choices``, ``layouts``,
``search_space``) are internal. Nothing here imports torch.
"""
