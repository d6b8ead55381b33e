"""Shared fixtures: one local Ray instance for the whole session (2 CPUs, no dashboard)."""

from __future__ import annotations

import os

import pytest

# Ray workers started by the tests inherit this, so test-only modules (tests/chaos_trainer.py) import there.
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_HERE, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray started once for every test that needs it; shut down at the end of the session."""
    import os

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


TINY_SPACE = """\
space:
  input: {image_size: 32, channels: 1}
  stem: {width: 8}
  stages:
    S1: {block: [C], depth: 1, width: [8, 16]}
    S2: {block: [C, T], depth: 1, width: 16}
    S3: {block: [C, T], depth: [1, 2], width: [16, 32]}
    S4: {block: [T], depth: 1, width: 32}
  blocks: {head_dim: 8, mbconv_expansion: 2, ffn_expansion: 2}
  budgets: {max_params: MAX_PARAMS, max_macs: null}
train:
  data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}
  epochs: EPOCHS
  batch_size: 32
objective: {mode: single}
search: {trials: 4, sampler: SAMPLER, max_concurrent: 2, seed: 0}
"""


@pytest.fixture
def write_space(tmp_path):
    """``write_space(name, max_params=..., sampler=..., epochs=...) -> Path``: a tiny search YAML (24
    candidates of ~10-40 k parameters, synthetic data, one-second trials)."""

    def make(
        name: str = "tiny.yaml", *, max_params: str = "null", sampler: str = "random", epochs: int = 1, extra: str = ""
    ):
        path = tmp_path / name
        text = (
            TINY_SPACE.replace("MAX_PARAMS", str(max_params)).replace("SAMPLER", sampler).replace("EPOCHS", str(epochs))
        )
        path.write_text(text + extra)
        return path

    return make


@pytest.fixture
def load_script():
    """Import a script of ``scripts/`` by name (scripts/ on the path while it loads, as when it runs)."""
    import importlib.util
    import sys

    scripts = os.path.join(os.path.dirname(_HERE), "scripts")

    def load(name: str):
        sys.path.insert(0, scripts)
        try:
            spec = importlib.util.spec_from_file_location(name, os.path.join(scripts, f"{name}.py"))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
        finally:
            sys.path.remove(scripts)

    return load
