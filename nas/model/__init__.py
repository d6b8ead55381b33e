"""The network: an architecture, its geometry and cost, and the PyTorch model built from it.

Public (through ``nas``): ``Architecture``, ``BlockOptions``, ``build_model``, ``CoAtNet``, ``presets``,
``count_cost``, ``Cost``; and ``nas.model.supernet`` (``Supernet``, ``SupernetSpec``, ``extract``: weight sharing).
The other modules (``arch``, ``geometry``, ``blocks``, ``builder``, ``cost``, ``presets``) are internal.
``arch``, ``geometry`` and ``cost`` import no torch.
"""
