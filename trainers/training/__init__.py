"""One training: the ``train:`` protocol (``config``, torch-free), ``fit`` and ``measure``, the proxy protocol of a
trial (``proxy``), ``result`` (``TrialResult`` and the failure classifier, public) and ``tabular`` (table replay).
"""
