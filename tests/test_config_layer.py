"""The configuration layer is torch-free: a whole experiment is parsed and validated without torch or Ray."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

HEAVY = ("torch", "ray")


def _imports_after(code: str) -> set[str]:
    """Top-level packages among HEAVY that ``code`` leaves imported, in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_loading_the_shipped_space_imports_neither_torch_nor_ray():
    assert (
        _imports_after(
            "from nas.search import load_experiment\ne = load_experiment('coatnet.yaml')\nassert e.space.size() > 0"
        )
        == set()
    )


def test_an_npz_source_counts_its_classes_without_torch(write_space, tmp_path):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 5)
    path = write_space()
    path.write_text(
        path.read_text().replace(
            "data: {name: synthetic, synthetic_samples: 160, synthetic_classes: 4, synthetic_difficulty: 0.3}",
            f"data: {{name: npz, path: {npz}}}",
        )
    )
    code = f"from nas.search import load_experiment\ne = load_experiment({str(path)!r})\nassert e.num_classes == 5"
    assert _imports_after(code) == set()


def test_cost_model_and_space_import_without_torch():
    assert (
        _imports_after(
            "import nas.model.cost, nas.space.search_space, nas.model.arch, trainers.training.config, "
            "trainers.objectives.registry, nas.search.config"
        )
        == set()
    )


def test_the_weight_sharing_driver_and_dry_run_import_without_torch(tmp_path):
    """The driver trains supernets (nas.search.supernet) and describes them (the dry run) without torch."""
    text = (
        "from nas.search.dryrun import dry_run\nimport nas.search.supernet as s\n"
        "from nas.search.config import load_experiment\n"
        "e = load_experiment('coatnet.yaml')\nimport dataclasses\n"
        "from trainers.training.config import SupernetConfig\n"
        "e = dataclasses.replace(e, train=dataclasses.replace(e.train, supernet=SupernetConfig()))\n"
        "assert len(s.jobs_of('search', e.space, e.train, e.objective)) == 2\n"
        "assert 'weight sharing' in dry_run(e)"
    )
    assert _imports_after(text) == set()
