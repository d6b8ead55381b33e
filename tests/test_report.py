"""nas-report: leaderboard files, a Pareto PNG and a markdown summary from a run directory."""

from __future__ import annotations

import json

from nas.cli import report as report_cli
from nas.search import RunDir, load_experiment
from nas.search.record import TrialRecord
from nas.search.report import write_report
from nas.search.rundir import RunMeta


def test_report_files(write_space, tmp_path, capsys):
    space = write_space()
    exp = load_experiment(space)
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_experiment(exp, "r")
    rd.write_meta(
        RunMeta.from_json(
            {"format": 1, "name": "r", "fingerprint": exp.space.fingerprint(), "source": str(space), "sessions": [{}]}
        )
    )
    archs = list(exp.space.enumerate(4))
    pts = [(0.8, 0.2), (0.3, 0.9), (0.2, 0.2), (0.0, 0.0)]
    for i, (a, (g, c)) in enumerate(zip(archs, pts)):
        rd.append_record(
            TrialRecord.from_json(
                {
                    "id": a.id,
                    "arch": a.to_dict(),
                    "arch_str": str(a),
                    "number": i,
                    "status": "ok" if i < 3 else "oom",
                    "reason": "" if i < 3 else "out of memory",
                    "generalization": g,
                    "capacity": c,
                    "score": (g + c) / 2,
                    "metrics": {"params": 1e4, "macs": 1e5, "wall_s": 2.0},
                    "history": [],
                }
            )
        )
    paths = write_report(rd.path)
    assert paths["pareto_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(paths["leaderboard_json"].read_text())
    assert [r["pareto"] for r in rows] == [True, True, False, False]
    md = paths["report_md"].read_text()
    assert "pareto.png" in md and "## Best per layout" in md and "out of memory" in md
    assert f"trial 1, {archs[1]}" in md  # the best by score (0.6)
    assert report_cli.main([str(rd.path)]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "pareto.png" in out
