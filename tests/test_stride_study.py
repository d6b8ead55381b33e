"""The paired stem-stride study of docs/fidelity.md (issue 9): both arms must train the same architectures,
the canonical strings differing only in ``stem_stride``. Sampling only (no training, no CIFAR-10 files): the
spaces' data source is swapped for a synthetic one of the same 10 classes, which the sample does not see
beyond the classifier's size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import search_spaces
from nas.errors import UserError
from nas.fidelity import load_study, sample_architectures

ROOT = Path(search_spaces.__file__).parent


def _copy(src: Path, dst: Path) -> None:
    data = yaml.safe_load(src.read_text())
    if "train" in data and "data" in data["train"]:  # a search YAML: no data files needed to sample it
        data["train"]["data"] = {"name": "synthetic", "synthetic_classes": 10}
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(yaml.safe_dump(data, sort_keys=False))


def test_stride_arms_sample_the_same_architectures(tmp_path):
    for name in (
        "coatnet-cifar-halving.yaml",
        "coatnet-cifar-stride1.yaml",
        "stride1-cifar.yaml",
        "stride2-cifar.yaml",
    ):
        _copy(ROOT / "studies" / name, tmp_path / "studies" / name)
    s1, s2 = (load_study(tmp_path / "studies" / f"stride{s}-cifar.yaml") for s in (1, 2))
    assert s1.experiment.space.stem_stride == 1 and s2.experiment.space.stem_stride == 2
    a1, a2 = sample_architectures(s1), sample_architectures(s2)
    assert len(a1) == len(a2) == 12
    assert [str(a).replace(" stem_stride=1", "") for a in a1] == [str(a) for a in a2]
    for x, y in zip(a1, a2):
        assert x.stem_stride == (2 if x.is_vit else 1) and y.stem_stride == 2
    # the same protocols apart from the space: proxy and reference train alike in both arms
    assert [p.train for p in s1.protocols] == [p.train for p in s2.protocols]
    assert [p.objective for p in s1.protocols] == [p.objective for p in s2.protocols]


def test_stride_pairs_script_pairs_rows_across_strides(tmp_path, capsys, load_script):
    import json

    mod = load_script("stride_pairs")
    archs = ["C-C-C-C L=1 D=1", "C-C-C-T L=1 D=1", "C-C-T-T L=1 D=1", "ViT_REL L=1 D=1 patch=8"]
    for name, suffix, sign in (("s2", "", 1), ("s1", " stem_stride=1", -1)):
        rows = [
            {
                "arch": a + ("" if a.startswith("ViT") else suffix),
                "ref_wall_s": 10.0,
                "ref": {"score": sign * i, "generalization": i, "capacity": sign * i},
                "layout": a.split()[0],
                "proxies": {"default": {"score": i, "generalization": i, "capacity": i, "wall_s": 1.0}},
            }
            for i, a in enumerate(archs)
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "fidelity.json").write_text(json.dumps({"rows": rows}))
    assert mod.main([str(tmp_path / "s2"), str(tmp_path / "s1")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 architectures with a reference result in both s2 and s1.")
    assert "| s2 reference score | s1 reference score | 4 | -1.00 [" in out
    assert "| s2 reference generalization | s1 reference generalization | 4 | 1.00 [" in out
    assert "| s1 proxy default score | s2 reference score | 4 | 1.00 [" in out
    assert "| s1 proxy default score | s1 reference score | 4 | -1.00 [" in out
    assert mod.main([str(tmp_path / "s2"), str(tmp_path / "s1"), "--without", "ViT_REL"]) == 0
    assert capsys.readouterr().out.startswith(
        "3 architectures with a reference result in both s2 and s1 (without ViT_REL)."
    )


def test_stride_pairs_pairs_stage_strides_and_reports_paired_differences(tmp_path, capsys, load_script):
    """The S3 study's view: arms that differ by ``strides=``, proxies named differently in each arm, and the
    second arm's reference score minus the first's, per architecture pair (a t interval over pairs)."""
    import json

    mod = load_script("stride_pairs")
    archs = ["C-C-C-C L=1 D=1", "C-C-C-C L=2 D=1", "C-C-T-T L=1 D=1", "C-C-T-T L=2 D=1", "ViT_REL L=1 D=1 patch=8"]
    for name, suffix, proxy, gain in (("halving", "", "v500", 0.0), ("s3", " strides=2,2,1,2", "default", 0.01)):
        rows = [
            {
                "arch": a + ("" if a.startswith("ViT") else suffix),
                "ref_wall_s": 10.0,
                "ref": {
                    "score": 0.4 + i / 10 + (0 if a.startswith("ViT") else gain * (1 + i / 10)),
                    "generalization": i,
                    "capacity": i,
                },
                "layout": a.split()[0],
                "proxies": {proxy: {"score": i, "generalization": i, "capacity": i, "wall_s": 1.0}},
            }
            for i, a in enumerate(archs)
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "fidelity.json").write_text(json.dumps({"rows": rows}))
    assert mod.main([str(tmp_path / "halving"), str(tmp_path / "s3"), "--proxy-a", "v500"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 architectures with a reference result in both halving and s3.")
    assert "| halving proxy v500 score | s3 reference score | 5 | 1.00 [" in out
    # differences: 1.0, 1.1, 1.2, 1.3 pp for the four conv-stem networks, 0 for ViT_REL
    assert "| all | 5 | +0.92 | [" in out and "| 4 | 1 |" in out
    assert "| C-C-T-T | 2 | +1.25 | [" in out and "| ViT_REL | 1 | +0.00 | - | 0 | 1 |" in out
    (tmp_path / "s3" / "fidelity.json").write_text("{not json")
    with pytest.raises(UserError, match="nas-fidelity --resume"):
        mod.main([str(tmp_path / "halving"), str(tmp_path / "s3"), "--proxy-a", "v500"])
