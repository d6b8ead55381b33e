"""Data: the ``train.data`` configuration and its source registry, readers, downloads, loading (cache, split,
resize), image folders streamed batch by batch, and one copy per Ray node. Internal; ``config`` imports no torch.
"""
