"""nas.export.model_config.export_from_run: a trial of a run by rank, number or id; its config rebuilds the network."""

from __future__ import annotations

import pytest

from nas.errors import UserError
from nas.export.model_config import export_from_run, load_model_config
from nas.model.builder import build_model
from nas.model.cost import count_cost
from nas.search import RunDir, load_experiment
from nas.search.record import TrialRecord
from nas.search.rundir import RunMeta


def _run_with_records(space, path, scores):
    exp = load_experiment(space)
    rd = RunDir(path)
    rd.path.mkdir()
    rd.write_experiment(exp, "r")
    rd.write_meta(
        RunMeta.from_json(
            {"format": 1, "name": "r", "fingerprint": exp.space.fingerprint(), "source": str(space), "sessions": []}
        )
    )
    archs = list(exp.space.enumerate(len(scores)))
    for i, (a, s) in enumerate(zip(archs, scores)):
        cost = count_cost(a, image_size=32, num_classes=4, in_chans=1)
        rd.append_record(
            TrialRecord.from_json(
                {
                    "id": a.id,
                    "arch": a.to_dict(),
                    "arch_str": str(a),
                    "number": i,
                    "status": "ok",
                    "reason": "",
                    "generalization": s,
                    "capacity": s,
                    "score": s,
                    "metrics": {"params": float(cost.params), "macs": float(cost.macs), "num_classes": 4.0},
                    "history": [],
                }
            )
        )
    return rd, archs


def test_export_by_rank_trial_and_id(write_space, tmp_path):
    rd, archs = _run_with_records(write_space(), tmp_path / "r", [0.2, 0.9, 0.5])
    best = load_model_config(export_from_run(rd.path, tmp_path / "best.yaml"))
    assert best.arch == archs[1] and best.provenance["trial"] == 1 and best.provenance["metrics"]["score"] == 0.9
    second = load_model_config(export_from_run(rd.path, tmp_path / "2.yaml", rank=2))
    assert second.arch == archs[2] and second.provenance["rank"] == 2
    assert load_model_config(export_from_run(rd.path, tmp_path / "t.yaml", trial=0)).arch == archs[0]
    assert load_model_config(export_from_run(rd.path, tmp_path / "i.yaml", trial=archs[2].id)).arch == archs[2]
    model = build_model(second)
    assert sum(p.numel() for p in model.parameters()) == count_cost(second).params
    assert (second.image_size, second.in_chans, second.num_classes) == (32, 1, 4)


def test_export_errors_say_what_exists(write_space, tmp_path):
    rd, _ = _run_with_records(write_space(), tmp_path / "r", [0.2, 0.9])
    with pytest.raises(UserError, match=r"1\.\.2"):
        export_from_run(rd.path, tmp_path / "x.yaml", rank=3)
    with pytest.raises(UserError, match="no finished trial '7'.*Finished trials: 1"):
        export_from_run(rd.path, tmp_path / "x.yaml", trial=7)
    with pytest.raises(UserError, match="experiment.json"):
        export_from_run(tmp_path, tmp_path / "x.yaml")
