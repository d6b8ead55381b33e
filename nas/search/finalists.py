"""Verified finalists: the search's top candidates trained again under a longer protocol with several seeds.

With a ``finalists:`` section (``nas.search.config.FinalistsConfig``), a session whose search trials are all
done ends with a verification stage: the leaderboard's top ``top_k`` ``ok`` candidates by proxy score and its
Pareto front (in proxy rank order, at most ``max``) are each trained ``seeds`` times under the verification
protocol (the search's ``train:``/``objective:`` with the section's overrides), with the training seeds
``train.seed + 1 .. train.seed + seeds`` of that protocol. The trainings are Ray Tune trials of the same run
directory (``tune/session-K-finalists``), run by the search's worker (``nas.search.trainable.train_trial``
with ``config["train_seed"]``); a signal stops them as it pauses a search, and a resume trains only the
missing ones.

Each training is one :class:`FinalistRecord` in ``RUN/finalists.jsonl`` (appended through
``nas.fsio.append_jsonl``, read back through ``nas.fsio.read_jsonl`` with :meth:`FinalistRecord.from_json`).
A record carries the fingerprint of its verification protocol (:func:`protocol_key`); experiment.json names
the current one, and only records of that protocol count, so a resume with another ``finalists:`` section
trains its own and never mixes the two.

:func:`summarize` turns the records into one :class:`Verified` per finalist: the mean score over its ``ok``
seeds, a 95% t-interval, and ``tied``: whether the 95% Welch interval of its difference with the verified
best includes 0 (``None`` where a side has a single seed: no interval). The leaderboard ranks verified
finalists first, by that mean (``nas.search.leaderboard.build_rows``), so ``best.yaml``, ``nas-export`` and the
report take the verified best.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.errors import UserError
from nas.fsio import Invalid, record_format

if TYPE_CHECKING:
    from nas.runtime.signals import StopSignals
    from nas.search.config import Experiment
    from nas.search.progress import Printer
    from nas.search.record import TrialRecord
    from nas.search.rundir import RunDir

FORMAT = 1  # the format of finalists.jsonl's records
KIND = "verification"
LEVEL = 0.95  # the intervals' confidence
_KNOWN = {
    "format",
    "kind",
    "id",
    "arch",
    "arch_str",
    "trial",
    "seed",
    "seed_index",
    "protocol",
    "status",
    "reason",
    "score",
    "generalization",
    "capacity",
    "val_acc",
    "wall_s",
    "tune_trial_id",
}


# ------------------------------------------------------------------------------------------------ the record
@dataclass(frozen=True)
class FinalistRecord:
    """One verification training: a finalist (its architecture and search trial) under one seed.

    Args:
        trial: the search trial (Optuna number) that found the candidate.
        seed: the training seed; ``seed_index``: which of the finalist's trainings (0-based).
        protocol: the verification protocol's fingerprint (:func:`protocol_key`).
        wall_s: the training's wall time in seconds.
    """

    id: str
    arch: dict[str, Any]
    arch_str: str
    trial: int | None
    seed: int
    seed_index: int
    protocol: str
    status: str
    reason: str = ""
    score: float = 0.0
    generalization: float = 0.0
    capacity: float = 0.0
    val_acc: float | None = None
    wall_s: float = 0.0
    tune_trial_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.extra.items() if k not in _KNOWN}
        out.update(
            {
                "format": FORMAT,
                "kind": KIND,
                "id": self.id,
                "arch": self.arch,
                "arch_str": self.arch_str,
                "trial": self.trial,
                "seed": self.seed,
                "seed_index": self.seed_index,
                "protocol": self.protocol,
                "status": self.status,
                "reason": self.reason,
                "score": _safe(self.score),
                "generalization": _safe(self.generalization),
                "capacity": _safe(self.capacity),
                "val_acc": None if self.val_acc is None else _safe(self.val_acc),
                "wall_s": _safe(self.wall_s),
                "tune_trial_id": self.tune_trial_id,
            }
        )
        return out

    @classmethod
    def from_json(cls, d: Any) -> FinalistRecord:
        """The record of one decoded line of ``finalists.jsonl``; raises :class:`Invalid` saying what is wrong."""
        from nas.search.record import STATUSES

        if not isinstance(d, dict):
            raise Invalid(f"it is a JSON {type(d).__name__}, not a verification record (one JSON object per line)")
        if d.get("kind") != KIND:  # before the format: a line of another file is not one of a newer coatnas
            if d.get("kind") == "search" or ("kind" not in d and "number" in d):
                raise Invalid("it is a search trial's record (a line of trials.jsonl), not a verification record")
            raise Invalid(f"its kind {d.get('kind')!r:.40} is not {KIND!r} (a line of another file?)")
        record_format(d, "finalists.jsonl", FORMAT, unversioned=FORMAT)
        for key in ("id", "arch", "seed", "seed_index", "protocol", "status", "score"):
            if key not in d:
                raise Invalid(f"the key {key!r} is missing")
        for key in ("id", "protocol"):
            if not isinstance(d[key], str) or not d[key]:
                raise Invalid(f"`{key}` must be a non-empty string (got {d[key]!r:.60})")
        try:
            from nas.model.arch import Architecture

            parsed = Architecture.from_dict(d["arch"], None, "arch")
        except Exception as err:  # noqa: BLE001 - any refusal of the architecture
            raise Invalid(f"its architecture is not one: {str(err).rstrip('.')}") from None
        if parsed.id != d["id"]:
            raise Invalid(f"`id` {d['id']!r:.40} is not the id of its architecture ({parsed.id})")
        for key in ("seed", "seed_index"):
            if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < 0:
                raise Invalid(f"`{key}` must be an integer >= 0 (got {d[key]!r:.60})")
        trial = d.get("trial")
        if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int) or trial < 0):
            raise Invalid(f"`trial` must be a trial number (an integer >= 0) or null (got {trial!r:.60})")
        if d["status"] not in STATUSES:
            raise Invalid(f"`status` must be one of {', '.join(STATUSES)} (got {d['status']!r:.60})")
        nums = {k: _finite(d.get(k, 0.0), k) for k in ("score", "generalization", "capacity", "wall_s")}
        if nums["wall_s"] < 0:
            raise Invalid(f"`wall_s` must be >= 0 (got {nums['wall_s']})")
        val_acc = d.get("val_acc")
        strings = {}
        for key in ("arch_str", "reason", "tune_trial_id"):
            v = d.get(key)
            if v is not None and not isinstance(v, str):
                raise Invalid(f"`{key}` must be a string (got {v!r:.60})")
            strings[key] = v
        return cls(
            id=d["id"],
            arch=parsed.to_dict(),
            arch_str=strings["arch_str"] or str(parsed),
            trial=trial,
            seed=d["seed"],
            seed_index=d["seed_index"],
            protocol=d["protocol"],
            status=d["status"],
            reason=strings["reason"] or "",
            val_acc=None if val_acc is None else _finite(val_acc, "val_acc"),
            tune_trial_id=strings["tune_trial_id"],
            extra={k: v for k, v in d.items() if k not in _KNOWN},
            **nums,
        )


def _finite(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"`{key}` must be a number (got {value!r:.60})")
    if not math.isfinite(value):
        raise Invalid(f"`{key}` must be a finite number (got {value})")
    return float(value)


def _safe(value: float) -> float:
    v = float(value)
    return v if math.isfinite(v) else 0.0


# ------------------------------------------------------------------------------------------------ statistics
def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` t-interval of the mean of ``values``; ``None`` for fewer than two (no interval)."""
    n = len(values)
    if n < 2:
        return None
    from scipy import stats

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` Welch interval of ``mean(a) - mean(b)``; ``None`` when a side has fewer than two values."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    from scipy import stats

    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((v - ma) ** 2 for v in a) / (na - 1) / na
    vb = sum((v - mb) ** 2 for v in b) / (nb - 1) / nb
    diff, se = ma - mb, math.sqrt(va + vb)
    if se == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff - half, diff + half


def tied_with(best: Sequence[float], other: Sequence[float], level: float = LEVEL) -> bool | None:
    """The tie rule: ``other`` is statistically tied with ``best`` when the Welch interval of the difference
    of their means includes 0; ``None`` when it cannot be told (a side with a single seed)."""
    iv = welch_interval(best, other, level)
    return None if iv is None else iv[0] <= 0.0 <= iv[1]


@dataclass(frozen=True)
class Verified:
    """One finalist's verification: ``n`` ``ok`` trainings of ``runs``, their mean score, its 95% interval
    (``lo``/``hi``: ``None`` for n = 1) and whether it is tied with the verified best (``None``: not told)."""

    id: str
    trial: int | None
    arch_str: str
    scores: tuple[float, ...]
    runs: int
    wall_s: float
    mean: float | None
    lo: float | None
    hi: float | None
    tied: bool | None = None
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def failed(self) -> int:
        """Trainings of this finalist that did not end ``ok`` (diverged, out of memory, an error)."""
        return self.runs - self.n

    def row(self) -> dict[str, Any]:
        """The leaderboard's columns of this finalist."""
        r4 = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {
            "verified": r4(self.mean),
            "verified_lo": r4(self.lo),
            "verified_hi": r4(self.hi),
            "verified_n": self.n,
            "verified_failed": self.failed,
            "tied": self.tied,
        }


def summarize(records: Sequence[FinalistRecord], proxy: dict[str, float] | None = None) -> dict[str, Verified]:
    """One :class:`Verified` per architecture of ``records`` (one protocol's), the best first: the finalists
    whose every training ended ``ok``, by mean score (ties by ``proxy`` score, then id); then those with a failed
    training (a candidate that diverges on some seeds is not a safe pick), by the mean of their ``ok`` ones;
    finalists without an ``ok`` training last. The first training of each seed counts (a later one would be a
    re-run)."""
    proxy = proxy or {}
    by_id: dict[str, dict[int, FinalistRecord]] = {}
    for r in records:
        by_id.setdefault(r.id, {}).setdefault(r.seed_index, r)
    out = []
    for rid, seeds in by_id.items():
        recs = [seeds[i] for i in sorted(seeds)]
        scores = tuple(r.score for r in recs if r.ok)
        iv = t_interval(scores)
        out.append(
            Verified(
                id=rid,
                trial=recs[0].trial,
                arch_str=recs[0].arch_str,
                scores=scores,
                runs=len(recs),
                wall_s=sum(r.wall_s for r in recs),
                mean=sum(scores) / len(scores) if scores else None,
                lo=iv[0] if iv else None,
                hi=iv[1] if iv else None,
            )
        )
    out.sort(key=lambda v: (v.mean is None, v.failed > 0, -(v.mean or 0.0), -proxy.get(v.id, 0.0), v.id))
    if not out or out[0].mean is None:
        return {v.id: v for v in out}
    best = out[0]
    ranked = [dataclasses.replace(best, tied=True, best=True)]
    ranked += [
        dataclasses.replace(v, tied=tied_with(best.scores, v.scores) if v.mean is not None else False) for v in out[1:]
    ]
    return {v.id: v for v in ranked}


# ------------------------------------------------------------------------------------------------ the run's view
def protocol_key(exp: Experiment) -> str:
    """The fingerprint of the verification protocol of ``exp`` (its flat train/objective, the trainer, the data
    files' identity); records of another protocol do not count. The settings that only choose which trainings
    run (``top_k``, ``pareto``, ``max``, ``seeds``) are not part of it: raising ``seeds`` trains only the new ones."""
    from nas.search.config import finalists_protocol

    proto = finalists_protocol(exp)
    return hashlib.sha256(json.dumps(proto, sort_keys=True, default=str).encode()).hexdigest()[:12]


def meta_entry(exp: Experiment) -> dict[str, Any] | None:
    """What experiment.json keeps of the ``finalists:`` section (the current protocol's fingerprint)."""
    f = exp.finalists
    if f is None:
        return None
    return {
        "protocol": protocol_key(exp),
        "top_k": f.top_k,
        "pareto": f.pareto,
        "max": f.max,
        "seeds": f.seeds,
        "overrides": f.overrides,
    }


def current_records(run: RunDir) -> list[FinalistRecord] | None:
    """The verification records of the run's current protocol (``None`` when the run has no ``finalists:``
    section; records of an earlier protocol are left out)."""
    if not run.finalists_jsonl.is_file():
        return None
    entry = run.read_meta().extra.get("finalists")
    if not isinstance(entry, dict) or not isinstance(entry.get("protocol"), str):
        return None
    return [r for r in run.read_finalists() if r.protocol == entry["protocol"]]


def verified_of(run: RunDir, records: Sequence[TrialRecord] | None = None) -> dict[str, Verified] | None:
    """The run's verified finalists (:func:`summarize` of :func:`current_records`), ``None`` when it has none.
    Only the trainings of the run's current finalists count, up to its current ``seeds``: a line of another run
    pasted into finalists.jsonl, or the extra seeds of a larger earlier setting, do not."""
    recs = current_records(run)
    if not recs:
        return None
    trials = run.read_records() if records is None else records
    try:
        exp = run.read_experiment()
    except UserError:
        return None
    if exp.finalists is None:
        return None
    chosen = {t.id: t.number for t in candidates(exp, trials)}
    recs = [
        r for r in recs if r.id in chosen and r.trial in (None, chosen[r.id]) and r.seed_index < exp.finalists.seeds
    ]
    if not recs:
        return None
    proxy: dict[str, float] = {}
    for t in trials:
        proxy.setdefault(t.id, t.score)
    return summarize(recs, proxy)


def candidates(exp: Experiment, records: Sequence[TrialRecord], image_size: int | None = None) -> list[TrialRecord]:
    """The finalists: the top ``top_k`` ``ok`` candidates by proxy score and (``pareto``) the Pareto front, in
    proxy rank order, at most ``max``."""
    from nas.search.leaderboard import build_rows, latest_records

    f = exp.finalists
    rows = build_rows(list(records), exp.objective.axes)  # the proxy's order, without verification
    ok = [r for r in rows if r["status"] == "ok"]
    chosen = [r for i, r in enumerate(ok) if i < f.top_k or (f.pareto and r["pareto"])][: f.max]
    by_id = {r.id: r for r in latest_records(list(records))}
    return [by_id[r["id"]] for r in chosen]


@dataclass(frozen=True)
class Job:
    """One verification training to run: a finalist's ``index``-th seed."""

    record: TrialRecord
    index: int
    seed: int


def pending_jobs(exp: Experiment, run: RunDir, records: Sequence[TrialRecord] | None = None) -> list[Job]:
    """The (finalist, seed) trainings of the current protocol not yet recorded, finalist by finalist."""
    if exp.finalists is None:
        return []
    records = run.read_records() if records is None else records
    key = protocol_key(exp)
    done = {(r.id, r.seed_index) for r in run.read_finalists() if r.protocol == key}
    return [
        Job(rec, i, exp.finalists.seed_of(i))
        for rec in candidates(exp, records)
        for i in range(exp.finalists.seeds)
        if (rec.id, i) not in done
    ]


def summary_files(run: RunDir, verified: dict[str, Verified]) -> None:
    """``finalists.csv`` and ``finalists.json``: one row per finalist, the verified best first."""
    from nas.fsio import atomic_write

    rows = []
    for rank, v in enumerate(verified.values(), 1):
        rows.append(
            {
                "rank": rank if v.mean is not None else None,
                "trial": v.trial,
                "id": v.id,
                "arch": v.arch_str,
                **v.row(),
                "runs": v.runs,
                "scores": [round(s, 4) for s in v.scores],
                "wall_s": round(v.wall_s, 2),
            }
        )
    atomic_write(run.finalists_json, json.dumps(rows, indent=1))
    buf = io.StringIO()
    cols = ["rank", "trial", "id", "arch", "verified", "verified_lo", "verified_hi", "verified_n", "tied", "runs"]
    writer = csv.DictWriter(buf, fieldnames=[*cols, "scores", "wall_s"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        cells = {k: "" if r[k] is None else r[k] for k in cols}
        writer.writerow({**cells, "scores": " ".join(map(str, r["scores"])), "wall_s": r["wall_s"]})
    atomic_write(run.finalists_csv, buf.getvalue())


def cost_of(run: RunDir, verified: dict[str, Verified] | None, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """The verification's cost beside the search's: the sums of the trainings' wall times, and the
    verification in proxy-trial equivalents (its wall time over the mean search trial's)."""
    search = [t.metric("wall_s") for t in trials if t.metric("wall_s") > 0]
    verify_s = sum(v.wall_s for v in (verified or {}).values())
    mean = sum(search) / len(search) if search else 0.0
    return {
        "verification_wall_s": round(verify_s, 2),
        "search_wall_s": round(sum(search), 2),
        "search_trials": len(search),
        "proxy_trial_equivalents": round(verify_s / mean, 2) if mean > 0 else None,
        "trainings": sum(v.runs for v in (verified or {}).values()),
    }


def cost_line(cost: dict[str, Any]) -> str:
    eq = cost["proxy_trial_equivalents"]
    search_s = cost["search_wall_s"]
    share = f" ({cost['verification_wall_s'] / search_s:.0%} of the search's)" if search_s else ""
    return (
        f"nas-search: verification cost {cost['verification_wall_s']:.0f} s of training in "
        f"{cost['trainings']} trainings{share}, against {cost['search_wall_s']:.0f} s for "
        f"{cost['search_trials']} search trials" + (f"; {eq:.1f} proxy-trial equivalents" if eq is not None else "")
    )


# ------------------------------------------------------------------------------------------------ Tune
def _searcher(jobs: list[Job], key: str, run: RunDir, on_record: Callable[[FinalistRecord], None]):
    """A Tune searcher that hands out ``jobs`` once each and records every finished one."""
    from ray.tune.search import Searcher

    from nas.search.trainable import FINAL_KEY, RESULT_KEY

    class FinalistSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="score", mode="max")
            self.queue = list(jobs)
            self.live: dict[str, Job] = {}
            self.last: dict[str, dict] = {}
            self.stopping = False

        def suggest(self, trial_id: str):
            if self.stopping or not self.queue:
                return Searcher.FINISHED
            job = self.queue.pop(0)
            self.live[trial_id] = job
            rec = job.record
            return {
                "arch": rec.arch,
                "arch_id": rec.id,
                "number": rec.number if rec.number is not None else 0,
                "train_seed": job.seed,
                "seed_index": job.index,
            }

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.last[trial_id] = result

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            job = self.live.pop(trial_id, None)
            last = self.last.pop(trial_id, None)
            if job is None:
                return
            result = result or last or {}
            base = {
                "id": job.record.id,
                "arch": job.record.arch,
                "arch_str": job.record.arch_str,
                "trial": job.record.number,
                "seed": job.seed,
                "seed_index": job.index,
                "protocol": key,
                "tune_trial_id": trial_id,
            }
            if result.get(FINAL_KEY) == 1:
                payload = json.loads(result[RESULT_KEY])
                m = payload.get("metrics", {})
                val = m.get("val_acc")
                rec = FinalistRecord(
                    **base,
                    status=payload["status"],
                    reason=payload.get("reason") or "",
                    score=_safe(payload["score"]),
                    generalization=_safe(payload["generalization"]),
                    capacity=_safe(payload["capacity"]),
                    val_acc=float(val) if isinstance(val, (int, float)) and math.isfinite(val) else None,
                    wall_s=_safe(m.get("wall_s") or m.get("trial_s") or 0.0),
                )
            elif self.stopping or not error:
                return  # interrupted: not recorded, trained again on resume
            else:
                rec = FinalistRecord(**base, status="error", reason="the worker failed (its log is under tune/)")
            run.append_finalist(rec)
            on_record(rec)

        def __getstate__(self) -> dict[str, Any]:
            return {"_metric": self._metric, "_mode": self._mode}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the state is finalists.jsonl."""

        def restore(self, checkpoint_path: str) -> None:
            """Nothing to restore."""

    return FinalistSearcher()


@dataclass
class VerifyOutcome:
    """How the verification stage of a session ended."""

    jobs: int  # trainings it had to run
    done: int  # of them recorded
    stopped: bool = False
    stopped_by: int | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    why: str = ""  # who stopped it: a signal's name, ``time_budget``


def _job_name(trial) -> str:
    c = trial.config
    return f"verify-{c['number']:04d}-{c['arch_id']}-s{c['seed_index']}"


def verify(
    exp: Experiment,
    run: RunDir,
    study,
    session: int,
    say: Printer,
    signals: StopSignals,
    deadline: float | None = None,
) -> VerifyOutcome | None:
    """Run the missing verification trainings of ``exp``'s finalists (Ray must be running), record each,
    rewrite the leaderboard and the summary files, tell the study, and say the cost. ``deadline``: a
    ``time.perf_counter()`` at which it stops as a signal stops it (the session's time budget)."""
    from nas.runtime.signals import StopFlag
    from nas.search.leaderboard import write_leaderboard
    from nas.search.trainable import WorkerSetup
    from nas.search.tuning import _callbacks, concurrency, fit_pausable, make_tuner

    f = exp.finalists
    if f is None:
        return None
    trials = run.read_records()
    jobs = pending_jobs(exp, run, trials)
    if not jobs:
        return VerifyOutcome(0, 0, cost=_after(exp, run, study, trials)[0])
    key = protocol_key(exp)
    finalists = {j.record.id for j in jobs}
    shown = {k: v for k, v in f.overrides.items() if v}
    say(
        f"nas-search: verifying {len(finalists)} finalist(s) x {f.seeds} seed(s) ({len(jobs)} training(s) to run) "
        f"under train overrides {shown.get('train', {})}"
        + (f", objective overrides {shown['objective']}" if shown.get("objective") else "")
    )
    flag = StopFlag()
    done: list[FinalistRecord] = []

    def on_record(rec: FinalistRecord) -> None:
        done.append(rec)
        what = f"score {rec.score:.3f}" if rec.ok else f"{rec.status}: {rec.reason[:60]}"
        say(f"verify [{len(done)}/{len(jobs)}] {rec.arch_str} seed {rec.seed}: {what}")
        write_leaderboard(run, axes=exp.objective.axes)
        ver = verified_of(run)
        if ver:
            summary_files(run, ver)

    searcher = _searcher(jobs, key, run, on_record)

    def tick() -> None:
        if deadline is not None and not flag.set and time.perf_counter() >= deadline:
            flag.request("time_budget")
            searcher.stopping = True
            say("nas-search: the time budget is spent: stopping the verification (the rest runs on resume)")

    s = exp.search
    setup = WorkerSetup(
        trainer=f.trainer,
        train=f.train,
        objective=f.objective,
        image_size=exp.space.image_size,
        in_chans=exp.space.in_chans,
        cpus_per_trial=s.cpus_per_trial,
    ).sharing()
    callbacks = _callbacks(say, s.max_retries, lambda: None, tick)
    tuner = make_tuner(
        exp,
        run,
        setup,
        searcher,
        len(jobs),
        f"session-{session}-finalists",
        flag,
        callbacks,
        name=_job_name,
        max_concurrent=concurrency(exp),
    )

    fit_pausable(
        tuner,
        flag,
        searcher,
        signals,
        say,
        "stopping the verification",
        "its running trainings will be re-run on resume",
    )
    stopped = flag.set or len(done) < len(jobs)
    cost, verified = _after(exp, run, study, trials)
    if not stopped:
        say(cost_line(cost))
        if not any(v.mean is not None for v in (verified or {}).values()):
            say(
                f"nas-search: no finalist was verified: every one of the {len(done)} verification training(s) "
                f"failed (their reasons are in {run.finalists_jsonl}); the pick stays the proxy's best. Check the "
                "`finalists.train` overrides, then `nas-search --resume` trains them again under a changed protocol."
            )
    return VerifyOutcome(len(jobs), len(done), stopped=stopped, stopped_by=signals.received, cost=cost, why=flag.why)


def _after(
    exp: Experiment, run: RunDir, study, trials: Sequence[TrialRecord]
) -> tuple[dict[str, Any], dict[str, Verified] | None]:
    """Summary files, the study's user attributes (optuna-dashboard shows them); the cost and the verified
    finalists."""
    verified = verified_of(run, trials)
    if verified:
        summary_files(run, verified)
        if study is not None:
            _tell_study(study, verified)
    return cost_of(run, verified, trials), verified


def _tell_study(study, verified: dict[str, Verified]) -> None:
    """One study user attribute per finalist, ``verified trial N``: ``{arch, verified_mean, verified_interval,
    verified_n, tied}`` (optuna-dashboard shows a study's user attributes; a finished trial's own attributes
    cannot be changed)."""
    for v in verified.values():
        if v.trial is None:
            continue
        study.set_user_attr(
            f"verified trial {v.trial}",
            {
                "arch": v.arch_str,
                "verified_mean": None if v.mean is None else round(v.mean, 4),
                "verified_interval": None if v.lo is None else [round(v.lo, 4), round(v.hi, 4)],
                "verified_n": v.n,
                "tied": v.tied,
            },
        )
