"""The search driver's throughput with an instant trainer: cost per trial as a run grows (issue 22).

    .venv/bin/python scripts/bench_driver.py                      # quick look: random 1,000 + tpe 300 trials
    .venv/bin/python scripts/bench_driver.py --full               # every mode below at its full size
    .venv/bin/python scripts/bench_driver.py --mode tpe:500 --mode local-8
    .venv/bin/python scripts/bench_driver.py --full --trials 50   # every mode, each capped at 50 trials (smoke)
    .venv/bin/python scripts/bench_driver.py --mode random --set search.max_skips=400   # any search: key

Modes (``--mode NAME[:TRIALS]``, repeatable; ``--full`` runs all of them):

    random   random sampler, 10,000 trials, 2 concurrent
    nsga2    NSGA-II, 10,000 trials, 2 concurrent
    tpe      TPE, 2,000 trials, 2 concurrent
    gp       Optuna's GP sampler, 300 trials, 2 concurrent
    local-2  random, 1,000 trials, 2 concurrent on Ray's local instance
    local-8  random, 1,000 trials, 8 concurrent on Ray's local instance (CPUs per trial = CPUs / 8 when the
             machine has fewer than 8, so that 8 fit; the trainer uses no CPU)
    cluster  random, 1,000 trials, 2 concurrent on a 2-node loopback cluster: two ``ray start`` nodes of 1 CPU on
             127.0.0.1, each with its own temp dir, joined with ``address=``; stopped afterwards (also on Ctrl-C)

Every search runs ``search_spaces/coatnet.yaml``'s space (11,520 candidates) and objective with a tiny synthetic
data set (so a worker's data loading is negligible) and ``search.trainer: instant_trainer:train``
(scripts/instant_trainer.py: a deterministic result from the architecture at once, no torch work). Each
measurement is a fresh Python process (Ray start-up counted where it belongs) that calls only the public
``nas.search.run`` (progress lines printed to its log file, as a terminal would cost), stamps the time of every
finished trial in ``should_stop`` (called after each one), and afterwards reads the run directory's files and
the study (``optuna.load_study`` on ``RUN/optuna.journal``). Printed per measurement:

- total seconds (process start to ``run`` returning) and the trial loop (first to last finished trial);
- ms per trial in segments of 500 trials (runs of 1,000+) and in fifths (runs under 2,500): the gap between
  finished trials, averaged over the segment; the ratio of the last segment's cost to the first's, and the
  issue's target, the cost at trials 2,001-2,500 over trials 1-500 (at most 1.3x);
- the study's trials against the real ones (trials.jsonl), the rest by kind (duplicates, infeasible, ...);
- the sizes of trials.jsonl, optuna.journal, leaderboard.*, and of tune/;
- every key of ``SearchResult.timings`` the driver returns, whatever they are;
- the machine's 1-minute load average before and after (other work skews every figure: compare modes
  measured under similar load, or rerun), the driver process's CPU seconds, and the mean number of other
  trials running when one finished (at most concurrent - 1: how busy the workers were kept).

It ends with a markdown table for docs/search.md and the command. ``--json FILE`` also writes every figure
(and the time stamps) as JSON; ``--work DIR`` keeps each measurement's run directory and its driver's output
(``DIR/MODE-TRIALS/child.log``). ``--max-minutes M`` stops each search cleanly after M minutes (its figures
are those of the trials done). Ctrl-C or SIGTERM stops the measurement and the loopback cluster, and prints
the figures so far. Nothing here is timed against a threshold: the script prints ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
SPACE_FILE = ROOT / "search_spaces" / "coatnet.yaml"
TRAINER = "instant_trainer:train"
SEGMENT = 500
RESULT = "result.json"


class Mode(NamedTuple):
    name: str
    sampler: str
    trials: int
    concurrent: int = 2
    where: str = "local"  # local: Ray's local instance started by run(); cluster: the 2-node loopback cluster
    what: str = ""


MODES = {
    m.name: m
    for m in (
        Mode("random", "random", 10_000, what="random sampler"),
        Mode("nsga2", "nsga2", 10_000, what="NSGA-II"),
        Mode("tpe", "tpe", 2_000, what="TPE"),
        Mode("gp", "gp", 300, what="GP"),
        Mode("local-2", "random", 1_000, 2, what="random, 2 at a time on Ray's local instance"),
        Mode("local-8", "random", 1_000, 8, what="random, 8 at a time on Ray's local instance"),
        Mode("cluster", "random", 1_000, 2, "cluster", what="random on a 2-node loopback cluster"),
    )
}
QUICK = ("random:1000", "tpe:300")


# --------------------------------------------------------------------------------------------- the search YAML
def search_yaml(mode: Mode, trials: int, cpus_per_trial: float, seed: int, sets: list[tuple[str, Any]]) -> dict:
    """coatnet.yaml's space and objective, a tiny synthetic data set, the instant trainer, the mode's search."""
    from nas.yamlio import load_yaml_file

    base = load_yaml_file(SPACE_FILE)
    doc = {
        "space": base["space"],
        "train": {"data": {"name": "synthetic", "synthetic_samples": 40, "synthetic_classes": 10}, "epochs": 1},
        "objective": base.get("objective", {}),
        "search": {
            "trials": trials,
            "sampler": mode.sampler,
            "seed": seed,
            "startup_trials": base.get("search", {}).get("startup_trials", 4),
            "max_concurrent": mode.concurrent,
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": 0,
            "trainer": TRAINER,
        },
    }
    for key, value in sets:
        node = doc
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return doc


def parse_set(text: str) -> tuple[str, Any]:
    from nas.errors import UserError
    from nas.yamlio import load_yaml_text

    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"(space|train|objective|search)(\.[A-Za-z_]\w*)+", key):
        raise UserError(
            f"bench_driver: --set {text!r} is not KEY=VALUE with KEY a dotted key of the search YAML under "
            "space, train, objective or search (e.g. search.max_skips=400)."
        )
    return key, load_yaml_text(raw, f"--set {key}")


# --------------------------------------------------------------------------------------------- one measurement
def child(spec_path: str) -> None:
    """One measurement, in its own process: ``run`` with time stamps, then the run directory and the study."""
    t_proc = time.perf_counter()
    import warnings

    from nas.fsio import atomic_write, read_json

    spec = read_json(spec_path, dict, what="bench_driver spec", fix="It is written by bench_driver.py.")
    from nas.search import RunDir, run

    stamps: list[float] = []
    running: list[int] = []

    def should_stop(prog) -> bool:
        stamps.append(time.perf_counter())
        running.append(prog.running)
        return spec["max_s"] is not None and time.perf_counter() - t_call > spec["max_s"]

    # Progress lines go to this process's stdout, the measurement's child.log (a file object as ``progress``
    # cannot be pickled with the searcher by Ray Tune; sys.stdout can).
    t_call = time.perf_counter()
    res = run(spec["space"], run_dir=spec["run_dir"], address=spec["address"], progress=True, should_stop=should_stop)
    t_ret = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    rd = RunDir(res.run_dir)
    records = rd.read_records()

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_load = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(
            study_name=rd.read_meta().study or "nas",
            storage=JournalStorage(JournalFileBackend(str(rd.path / "optuna.journal"))),
        )
        trials = study.get_trials(deepcopy=False)
    load_s = time.perf_counter() - t_load
    real = {r.number for r in records}
    kinds: dict[str, int] = {}
    for t in trials:
        a = t.user_attrs
        if t.number in real:
            kind = "real"
        elif "duplicate_of" in a or a.get("status") == "duplicate" or a.get("duplicate_of_running"):
            kind = "duplicate"
        elif a.get("status") == "infeasible":
            kind = "infeasible"
        else:
            kind = f"other {t.state.name.lower()}"
        kinds[kind] = kinds.get(kind, 0) + 1

    files = {}
    for f in sorted(rd.path.iterdir()):
        if f.is_file() and (f.name in ("trials.jsonl", "optuna.journal") or f.name.startswith("leaderboard.")):
            files[f.name] = f.stat().st_size
    tune_bytes, tune_files = 0, 0
    for folder, _, names in os.walk(rd.path / "tune"):
        for n in names:
            tune_files += 1
            tune_bytes += os.lstat(os.path.join(folder, n)).st_size
    files["tune/"] = tune_bytes
    out = {
        "completed": res.completed,
        "target": res.target,
        "interrupted": res.interrupted,
        "exhausted": res.exhausted,
        "stopped_by": signal.Signals(res.stopped_by).name if res.stopped_by else None,
        "records": len(records),
        "distinct_ids": len({r.id for r in records}),
        "statuses": sorted({r.status for r in records}),
        "study_trials": len(trials),
        "study_kinds": kinds,
        "files": files,
        "tune_files": tune_files,
        "timings": {k: float(v) for k, v in res.timings.items()},
        "proposals": dict(getattr(res, "proposals", None) or {}),
        "import_s": t_call - t_proc,
        "total_s": t_ret - t_proc,
        "run_s": t_ret - t_call,
        "stamps": [s - t_call for s in stamps],
        "running": running,
        "driver_cpu_s": cpu.ru_utime + cpu.ru_stime,
        "load_study_s": load_s,
    }
    atomic_write(spec["out"], __import__("json").dumps(out))


def measure(mode: Mode, trials: int, args, work: Path, address: str | None, env: dict) -> dict:
    """Run one measurement in a fresh process; return its figures (``child``'s JSON plus the set-up)."""
    import json

    import yaml

    from nas.fsio import atomic_write, read_json

    folder = work / f"{mode.name}-{trials}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cpus = 2 if mode.where == "cluster" else len(os.sched_getaffinity(0))  # the cluster: 2 nodes of 1 CPU
    cpus_per_trial = 1.0 if mode.concurrent <= cpus else cpus / mode.concurrent
    doc = search_yaml(mode, trials, cpus_per_trial, args.seed, args.set)
    atomic_write(folder / "bench.yaml", yaml.safe_dump(doc, sort_keys=False))
    spec = {
        "space": str(folder / "bench.yaml"),
        "run_dir": str(folder / "run"),
        "address": address,
        "max_s": args.max_minutes * 60 if args.max_minutes else None,
        "out": str(folder / RESULT),
    }
    atomic_write(folder / "spec.json", json.dumps(spec))
    log = folder / "child.log"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(folder / "spec.json")],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            rc = proc.wait()
        except BaseException:  # Ctrl-C reached the child too (same process group); SIGTERM only us: pass it on
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"bench_driver: the {mode.name} measurement exited with {rc}; its output ends:\n{tail}")
    res = read_json(folder / RESULT, dict, what="bench_driver result", fix="Run the measurement again.")
    res.update(
        mode=mode.name,
        sampler=mode.sampler,
        asked=trials,
        concurrent=mode.concurrent,
        cpus_per_trial=cpus_per_trial,
        where=mode.where,
        process_s=time.perf_counter() - t0,
        load_avg=[load_before, os.getloadavg()[0]],
        run_dir=spec["run_dir"],
    )
    return res


# ------------------------------------------------------------------------------------------------ the figures
def bounds_of(n: int, size: int | None) -> list[int]:
    """Segment ends: every ``size`` trials (a trailing part of at least half a segment kept), or fifths."""
    if size is None:
        return sorted({round(n * k / 5) for k in range(1, 6)} - {0}) if n >= 5 else [n]
    ends = list(range(size, n + 1, size))
    if n - (ends[-1] if ends else 0) >= size // 2:
        ends.append(n)
    return ends


def segments(stamps: list[float], size: int | None) -> list[tuple[int, int, float]]:
    """(first trial, last trial, ms per trial) per segment: the mean gap between finished trials in it (the
    first segment starts at the first finished trial, so start-up is not in it)."""
    out, start = [], 0
    for end in bounds_of(len(stamps), size):
        lo = max(start - 1, 0)
        gaps = end - 1 - lo
        if gaps > 0:
            out.append((start + 1, end, 1000 * (stamps[end - 1] - stamps[lo]) / gaps))
        start = end
    return out


def at_target(stamps: list[float]) -> float | None:
    """The issue's target: ms per trial at trials 2,001-2,500 over trials 1-500."""
    if len(stamps) < 2500:
        return None
    seg = {(a, b): ms for a, b, ms in segments(stamps[:2500], SEGMENT)}
    return seg[(2001, 2500)] / seg[(1, 500)]


def primary(res: dict) -> list[tuple[int, int, float]]:
    n = len(res["stamps"])
    return segments(res["stamps"], SEGMENT if n >= 2500 else None)


def mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def report(res: dict) -> None:
    n = len(res["stamps"])
    where = "a 2-node loopback cluster" if res["where"] == "cluster" else "Ray's local instance"
    print(
        f"\n== {res['mode']}: {res['sampler']}, {res['completed']}/{res['asked']} trials, {res['concurrent']} "
        f"concurrent ({res['cpus_per_trial']:g} CPU each, {where})"
        + (f" (stopped by {res['stopped_by'] or '--max-minutes'})" if res["interrupted"] else "")
        + (" (the space counted as exhausted)" if res["exhausted"] else "")
    )
    loop = res["stamps"][-1] - res["stamps"][0] if n > 1 else 0.0
    print(
        f"  total {res['total_s']:.1f} s (imports {res['import_s']:.1f} s, run() {res['run_s']:.1f} s); trial loop "
        f"{loop:.1f} s from the first to the last finished trial; driver CPU {res['driver_cpu_s']:.1f} s; "
        f"load average {res['load_avg'][0]:.1f} before, {res['load_avg'][1]:.1f} after"
    )
    for size in (SEGMENT, None):
        if (size is SEGMENT and n < 1000) or (size is None and n >= 2500):
            continue
        segs = segments(res["stamps"], size)
        label = f"per {SEGMENT} trials" if size else "per fifth"
        print(f"  ms per trial, {label}: " + ", ".join(f"{a:,}-{b:,} {ms:.1f}" for a, b, ms in segs))
    segs = primary(res)
    if len(segs) >= 2:
        print(f"  cost per trial, last segment / first: {segs[-1][2] / segs[0][2]:.2f}x")
    target = at_target(res["stamps"])
    if target is not None:
        print(f"  issue 22 target, trials 2,001-2,500 / 1-500: {target:.2f}x (at most 1.3x)")
    extra = res["study_trials"] - res["records"]
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(res["study_kinds"].items()))
    print(
        f"  Optuna study {res['study_trials']:,} trials for {res['records']:,} real ones ({extra:,} more: {kinds}); "
        f"load_study {res['load_study_s']:.1f} s"
    )
    files = ", ".join(f"{k} {mb(v)} MB" for k, v in res["files"].items())
    print(f"  files: {files} ({res['tune_files']:,} files under tune/)")
    if res["running"]:
        print(
            f"  other trials running when one finished: mean {sum(res['running']) / len(res['running']):.2f}, "
            f"max {max(res['running'])} (at most {res['concurrent'] - 1})"
        )
    print("  res.timings: " + ", ".join(f"{k} {v:.4g}" for k, v in res["timings"].items()))
    if res.get("proposals"):
        print(f"  res.proposals: {res['proposals']}; {rejected(res)}")


def rejected(res: dict) -> str:
    """The share of the sampler's proposals that were not new, and of the run's time spent replacing them."""
    p = res.get("proposals") or {}
    if not p.get("proposals"):
        return "-"
    return f"{p.get('rejected_share', 0):.0%} of proposals; {p.get('rejected_s', 0) / res['run_s']:.1%} of the time"


def table(results: list[dict]) -> None:
    print(
        "\n| mode | sampler | concurrent | trials | total s | ms/trial first seg | ms/trial last seg | last/first "
        "| 2,001-2,500 / 1-500 | study trials / real | rejected proposals | trials.jsonl MB | optuna.journal MB "
        "| leaderboard MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        segs = primary(r)
        first = f"{segs[0][2]:.1f} ({segs[0][0]:,}-{segs[0][1]:,})" if segs else "-"
        last = f"{segs[-1][2]:.1f} ({segs[-1][0]:,}-{segs[-1][1]:,})" if segs else "-"
        ratio = f"{segs[-1][2] / segs[0][2]:.2f}x" if len(segs) >= 2 else "-"
        target = at_target(r["stamps"])
        board = sum(v for k, v in r["files"].items() if k.startswith("leaderboard."))
        where = "2 nodes" if r["where"] == "cluster" else "local"
        print(
            f"| {r['mode']} | {r['sampler']} | {r['concurrent']} ({where}) | {r['completed']:,} | "
            f"{r['total_s']:.1f} | {first} | {last} | {ratio} | {f'{target:.2f}x' if target else '-'} | "
            f"{r['study_trials']:,} / {r['records']:,} | {rejected(r)} | {mb(r['files'].get('trials.jsonl', 0))} | "
            f"{mb(r['files'].get('optuna.journal', 0))} | {mb(board)} |"
        )
    tpe = next((r for r in results if r["sampler"] == "tpe"), None)
    rnd = next((r for r in results if r["mode"] == "random"), None) or next(
        (r for r in results if r["sampler"] == "random" and r["where"] == "local" and r["concurrent"] == 2), None
    )
    if tpe and rnd:
        k = min(len(tpe["stamps"]), len(rnd["stamps"]), 1500)
        if k:
            ratio = tpe["stamps"][k - 1] / rnd["stamps"][k - 1]
            print(
                f"\ntpe / random, time from run() to trial {k:,}: {ratio:.2f}x "
                f"({tpe['stamps'][k - 1]:.1f} s vs {rnd['stamps'][k - 1]:.1f} s; issue 22 target at 1,500: "
                "at most 2.5x)"
            )


# ----------------------------------------------------------------------------------- the 2-node loopback cluster
def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _procs() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process readable in /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


class LoopbackCluster:
    """Two ``ray start`` nodes (1 CPU each) on 127.0.0.1, each with its own temp dir under a private folder.
    On exit exactly their processes are killed: those whose command line names the folder, and their
    descendants (never ``ray stop``, which stops every Ray of the user), as scripts/cluster_demo.sh does."""

    def __init__(self, env: dict):
        self.env = env
        self.folder: Path | None = None
        self.address: str | None = None

    def __enter__(self) -> LoopbackCluster:
        self.folder = Path(tempfile.mkdtemp(prefix="cbd.", dir="/tmp"))  # Unix socket paths stay under 108 bytes
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        port, dash, agent_head, agent_node = free_ports(4)
        self.address = f"127.0.0.1:{port}"
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
        head = [ray, "start", "--head", f"--port={port}", *common, f"--temp-dir={self.folder}/head"]
        head += ["--include-dashboard=false", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent_head}"]
        node = [ray, "start", f"--address={self.address}", *common, f"--temp-dir={self.folder}/node"]
        node += [f"--dashboard-agent-listen-port={agent_node}"]
        for what, cmd in (("head node", head), ("second node", node)):
            out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
            if out.returncode != 0:
                raise RuntimeError(f"bench_driver: `ray start` of the {what} failed:\n{out.stdout}\n{out.stderr}")
        probe = (
            "import sys, time, ray\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False, logging_level='ERROR')\n"
            "for _ in range(60):\n"
            "    n = sum(1 for x in ray.nodes() if x['Alive'])\n"
            "    if n >= 2: break\n"
            "    time.sleep(0.5)\n"
            "print(n)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, self.address], env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.stdout.strip().splitlines()[-1:] != ["2"]:
            raise RuntimeError(f"bench_driver: the cluster does not show 2 live nodes:\n{out.stdout}\n{out.stderr}")

    def __exit__(self, *exc) -> None:
        if self.folder is None:
            return
        mark = f"{self.folder}/"
        procs = _procs()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            kids.setdefault(ppid, []).append(pid)
        todo = [pid for pid, (_, cmd) in procs.items() if mark in cmd and pid != os.getpid()]
        mine: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid not in mine:
                mine.add(pid)
                todo += kids.get(pid, [])
        for pid in mine:  # SIGKILL, as `ray stop --force` does: on SIGTERM a raylet drains ~10 s, the GCS stays
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in mine):
            time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="NAME[:TRIALS]",
        help=f"one of {', '.join(MODES)}, optionally with its trial count; repeatable (default: {' '.join(QUICK)})",
    )
    p.add_argument("--full", action="store_true", help="every mode at its full size (with --mode: added to them)")
    p.add_argument("--trials", type=int, default=None, help="cap every mode's trial count (a smoke run)")
    p.add_argument("--seed", type=int, default=0, help="search.seed of every search (default 0)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop each search cleanly after this long")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a search YAML key, e.g. search.max_skips=400"
    )
    p.add_argument("--json", default=None, help="also write every figure and time stamp to this JSON file")
    p.add_argument("--work", default=None, help="keep the run directories here (default: a temp dir, removed)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[Mode, int]]:
    from nas.errors import UserError

    specs = list(args.mode) + ([f"{m}" for m in MODES] if args.full else [])
    out = []
    for spec in specs or QUICK:
        name, _, count = spec.partition(":")
        if name not in MODES or (count and not (count.isdigit() and int(count) >= 1)):
            raise UserError(
                f"bench_driver: --mode {spec!r}: the modes are {', '.join(MODES)}, each optionally with a trial "
                "count (tpe:500)."
            )
        trials = int(count) if count else MODES[name].trials
        if args.trials is not None:
            trials = min(trials, args.trials)
        out.append((MODES[name], trials))
    return out


def code_version() -> str:
    """The commit, and the files of the driver's packages changed since it (the figures belong to that code)."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "nas", "trainers").splitlines()]
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")


def _interrupt(signum, frame):  # SIGTERM / SIGHUP: unwind like Ctrl-C, so the cluster is stopped
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    from nas.errors import UserError

    try:
        if args.trials is not None and args.trials < 2:
            raise UserError("bench_driver: --trials must be at least 2.")
        todo = plan(args)
        args.set = [parse_set(s) for s in args.set]
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SCRIPTS), env.get("PYTHONPATH")) if p)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # loopback only (docs/cluster.md)
    env.pop("RAY_ADDRESS", None)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-driver."))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_driver: code {code_version()}")
    print(
        f"bench_driver: {len(todo)} measurement(s): "
        + ", ".join(f"{m.name} {n:,}" for m, n in todo)
        + f"; space {SPACE_FILE.name} (11,520 candidates), trainer {TRAINER}, seed {args.seed}"
        + (f", {', '.join(f'{k}={v!r}' for k, v in args.set)}" if args.set else ""),
        flush=True,
    )
    results = []
    try:
        for mode, trials in todo:
            if mode.where == "cluster":
                with LoopbackCluster(env) as cluster:
                    res = measure(mode, trials, args, work, cluster.address, env)
            else:
                res = measure(mode, trials, args, work, None, env)
            results.append(res)
            report(res)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\nbench_driver: interrupted; the figures so far follow", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        table(results)
        print(f"\ncommand: {' '.join([Path(sys.executable).name, 'scripts/bench_driver.py', *sys.argv[1:]])}")
    if args.json:
        import json

        from nas.fsio import atomic_write

        doc = {"args": sys.argv[1:], "code": code_version(), "results": results}
        atomic_write(args.json, json.dumps(doc, indent=1))
    return 0 if len(results) == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
