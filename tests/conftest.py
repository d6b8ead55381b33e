"""Shared fixtures: one local Ray instance for the whole session (2 CPUs, no dashboard)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray started once for every test that needs it; shut down at the end of the session."""
    import os
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    import ray
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
