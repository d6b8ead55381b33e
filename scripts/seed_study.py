"""Copy the finished jobs of some protocols from one fidelity study into another that defines them identically,
so that a new study compares new proxies against the same reference trainings without training them again.

    python scripts/seed_study.py runs/s3-cifar search_spaces/studies/supernet-cifar.yaml \
        --study-dir runs/supernet-cifar --protocol default --protocol reference

Both folders are read through the study readers (``nas.fidelity.StudyDir``); the target study is created from its
YAML as ``nas-fidelity`` creates it (or, when it exists, must be that study), then ``nas-fidelity --resume``
runs what is left. A protocol is copied only if it resolves to the same training in both
studies (its ``train:``, ``objective:`` and the base search YAML's identity: the same space fingerprint and data
files), and only jobs of architectures both studies share and of seeds the target asks for; a job the target
already holds is left as it is. Prints what it copied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def seed(source: str, study_yaml: str, target: str, protocols: list[str]) -> dict[str, int]:
    """Copy the jobs of ``protocols`` from the study in ``source`` into the study of ``study_yaml`` in ``target``
    (created if new); return the count copied per protocol."""
    from nas.errors import UserError
    from nas.fidelity import StudyDir, load_study
    from nas.fidelity.config import _plain
    from nas.fidelity.studydir import prepare
    from nas.search.config import data_identity
    from trainers.training.config import flat

    src, dst = StudyDir(source), StudyDir(target)
    if not src.exists():
        raise UserError(f"{source} is not a study directory (it has no study.json): nothing to copy from.")
    s_study, d_study = src.read_study(), load_study(study_yaml)
    if s_study.experiment.space.fingerprint() != d_study.experiment.space.fingerprint():
        raise UserError(f"{source} and {target} study different spaces; their jobs are not comparable.")
    s_protos = {p.name: p for p in s_study.protocols}
    d_protos = {p.name: p for p in d_study.protocols}
    for name in protocols:
        if name not in s_protos or name not in d_protos:
            raise UserError(
                f"The protocol {name!r} is not in both studies ({source}: {', '.join(s_protos)}; {study_yaml}: "
                f"{', '.join(d_protos)}); nothing was copied or created."
            )
        a, b = (flat(_plain(x), name) for x in (s_protos[name], d_protos[name]))
        diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        diff = [d for d in diff if not d.startswith(f"{name}.seeds")]
        if data_identity(s_protos[name].train.data) != data_identity(d_protos[name].train.data):
            diff.append("its data files")
        if diff:
            raise UserError(
                f"The protocol {name!r} trains otherwise in {source} than in {study_yaml} ({'; '.join(diff[:3])}); "
                "nothing was copied or created."
            )
    d_study, _ = prepare(dst, d_study)  # the target study, created as nas-fidelity creates it
    shared_archs = {x.id for x in src.read_architectures()} & {x.id for x in dst.read_architectures(d_study)}
    have = {r.key for r in dst.read_records()}
    copied = dict.fromkeys(protocols, 0)
    for rec in src.read_records():
        p = d_protos.get(rec.protocol)
        if rec.protocol not in copied or rec.arch_id not in shared_archs or rec.key in have:
            continue
        if rec.kind == "train" and rec.seed not in p.seeds:
            continue
        dst.append(rec)
        copied[rec.protocol] += 1
    return copied


def main(argv: list[str] | None = None) -> int:
    from nas.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="the study folder whose jobs are copied")
    ap.add_argument("study", help="the study YAML of the study that receives them")
    ap.add_argument("--study-dir", required=True, help="its folder (created if new)")
    ap.add_argument("--protocol", action="append", required=True, help="a protocol to copy (repeat the flag)")
    args = ap.parse_args(argv)
    try:
        copied = seed(args.source, args.study, args.study_dir, args.protocol)
    except UserError as err:
        print(f"seed_study.py: {err}", file=sys.stderr)
        return 2
    for name, n in copied.items():
        print(f"{name}: {n} job(s) copied from {args.source} into {args.study_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
