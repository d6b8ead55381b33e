"""What a fidelity study runs: its architectures (sampled within the budgets, stratified over layouts) and
its jobs, each one (architecture, protocol, seed) training or the zero-cost proxies of one architecture.

A job is a dict ``{"key", "kind", "arch", "protocol", "seed"}``; its ``kind`` says what the worker does
(``train`` under the protocol, or ``zero_cost``: measure the zero-cost proxies), never its protocol's name."""

from __future__ import annotations

import random
from typing import Any

from nas.errors import UserError
from nas.fidelity.config import REFERENCE, ZERO_COST_JOB, Study
from nas.limits import RANGES
from nas.model.arch import Architecture

TRAIN_JOB = "train"  # the kind of a job that trains (ZERO_COST_JOB: one that measures the zero-cost proxies)


def sample_architectures(study: Study) -> list[Architecture]:
    """``study.architectures`` distinct candidates within the budgets, the layouts taken in turn (so every
    layout is equally represented), every candidate for ``all``, or the named ones of a list (budgets are
    not applied to a list: it names what to train)."""
    from nas.model.cost import count_cost

    exp = study.experiment
    space = exp.space
    k = exp.num_classes

    def fits(a: Architecture) -> bool:
        return space.budgets.unlimited or space.budgets.allows(
            count_cost(a, image_size=space.image_size, num_classes=k, in_chans=space.in_chans)
        )

    n = study.settings.architectures
    if isinstance(n, tuple):  # named: in the order given (checked against the space when the study was read)
        from nas.fidelity.config import named_architectures

        return named_architectures(n, space, study.file)
    if n == "all":
        most = int(RANGES["study.architectures"][1])
        if space.size() > most:
            raise UserError(
                f"`study.architectures: all` asks for every candidate, but the space has "
                f"{space.size():,} (a study trains at most {most:,}). Give a number (e.g. 30) to sample that many."
            )
        return _interleave_layouts([a for a in space.enumerate() if fits(a)], study.settings.seed)
    rng = random.Random(study.settings.seed)
    layouts = list(space.layouts)
    out: list[Architecture] = []
    seen: set[str] = set()
    misses = {lay: 0 for lay in layouts}
    i = 0
    while len(out) < n and layouts:
        want = layouts[i % len(layouts)]
        for _ in range(20_000):
            a = space.sample(rng)
            if a.layout_name == want and a.id not in seen and fits(a):
                out.append(a)
                seen.add(a.id)
                break
        else:  # this layout has no more distinct candidates within budget
            misses[want] += 1
            layouts.remove(want)
            continue
        i += 1
    return out


def _interleave_layouts(archs: list[Architecture], seed: int) -> list[Architecture]:
    """``archs`` shuffled within each layout (``seed``) and the layouts taken in turn, so that every prefix
    is a random sample stratified over layouts (the reference and the noise ceiling train prefixes)."""
    rng = random.Random(seed)
    groups: dict[str, list[Architecture]] = {}
    for a in archs:
        groups.setdefault(a.layout_name, []).append(a)
    for g in groups.values():
        rng.shuffle(g)
    out: list[Architecture] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def plan_jobs(study: Study, archs: list[Architecture]) -> list[dict[str, Any]]:
    """Every job of the study, cheapest first: zero-cost, proxies, reference seeds one after the other (so
    a study stopped early has complete architectures for the first reference seed). Seeds after the first
    train the first ``study.ceiling_architectures`` architectures, the first seed the first
    ``study.reference_architectures`` (the sample is in layout order, so each prefix is stratified)."""
    jobs = []
    if study.settings.zero_cost:
        jobs += [_job(a, ZERO_COST_JOB, ZERO_COST_JOB, 0) for a in archs]
    for p in study.proxies:
        for s in p.seeds:
            jobs += [_job(a, TRAIN_JOB, p.name, s) for a in archs]
    first, ceiling = study.settings.reference_architectures, study.settings.ceiling_architectures
    for i, s in enumerate(study.reference.seeds):
        n = first if i == 0 else ceiling if ceiling is not None else first
        some = archs if n is None else archs[:n]
        jobs += [_job(a, TRAIN_JOB, REFERENCE, s) for a in some]
    return jobs


def job_key(arch_id: str, kind: str, protocol: str, seed: int) -> str:
    """The key of a job in ``jobs.jsonl``: ``ARCH/zero_cost`` or ``ARCH/PROTOCOL/SEED``."""
    return f"{arch_id}/{ZERO_COST_JOB}" if kind == ZERO_COST_JOB else f"{arch_id}/{protocol}/{seed}"


def _job(a: Architecture, kind: str, protocol: str, seed: int) -> dict[str, Any]:
    return {"key": job_key(a.id, kind, protocol, seed), "kind": kind, "arch": a, "protocol": protocol, "seed": seed}
