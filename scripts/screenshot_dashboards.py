"""Screenshots of optuna-dashboard and TensorBoard over a small real search, for docs/dashboards.md.

    .venv/bin/python scripts/screenshot_dashboards.py [--trials 4] [--space coatnet.yaml] [--max-params 3e5]
        [--run-dir DIR] [--out docs/figures] [--width 1400] [--height 1000]

Runs a real search (``nas.search.run``; the bundled ``coatnet.yaml`` trains on the embedded digits, no
download) with its parameter budget set to ``--max-params`` (default 3e5, so that some proposals are over it
and shown as infeasible; 0 keeps the YAML's) into ``--run-dir`` (default: a temporary folder; an existing
run there is resumed), starts
``optuna-dashboard`` on its ``optuna.journal`` and ``tensorboard --logdir RUN/tune`` on 127.0.0.1, and takes
each page with Debian's headless Chromium (``apt-get install -y chromium``; ``--chromium`` names another
binary). It writes ``dashboard-optuna.png`` (the study page: history and Pareto front),
``dashboard-optuna-trials.png`` (the trial list) and ``dashboard-tensorboard.png`` (the scalars) into
``--out``, and prints what the study and the TensorBoard runs hold, as the dashboards' own APIs say.

Needs the ``dashboard`` extra (optuna-dashboard, tensorboard) in the same environment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, proc: subprocess.Popen, timeout: float = 90.0):
    """GET ``url`` as JSON, retrying while the server starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"screenshot_dashboards: the server exited: {proc.communicate()[0][-2000:]}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def server(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def screenshot(chromium: str, url: str, out: Path, size: tuple[int, int], wait_ms: int) -> None:
    """Chromium's headless screenshot of ``url``, written to ``out`` with ``nas.fsio.atomic_write``."""
    from nas.fsio import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "shot.png"
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={wait_ms}",  # let the page's scripts fetch and draw before the shot
            f"--screenshot={png}",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if not png.is_file():
            sys.exit(f"screenshot_dashboards: chromium took no screenshot of {url}: {done.stderr[-2000:]}")
        atomic_write(out, png.read_bytes())
    print(f"  {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  <- {url}")


def budgeted(space: str, max_params: float, folder: Path) -> Path:
    """A copy of the search YAML ``space`` (a file or a bundled name) with ``space.budgets.max_params`` set."""
    import yaml

    from nas.fsio import atomic_write
    from nas.space.reading import resolve_space_path
    from nas.yamlio import load_yaml_file

    src = resolve_space_path(space)
    data = load_yaml_file(src)
    data["space"].setdefault("budgets", {})["max_params"] = float(max_params)
    return atomic_write(folder / src.name, yaml.safe_dump(data, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4, help="trials of the search (default 4)")
    ap.add_argument("--space", default="coatnet.yaml", help="search YAML or bundled name (default coatnet.yaml)")
    ap.add_argument("--max-params", type=float, default=3e5, help="space.budgets.max_params (0: the YAML's)")
    ap.add_argument("--run-dir", type=Path, help="run directory (default: a temporary folder, removed after)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="where the PNGs go")
    ap.add_argument("--width", type=int, default=1400, help="browser window width in pixels")
    ap.add_argument("--height", type=int, default=1000, help="browser window height in pixels")
    ap.add_argument("--wait-ms", type=int, default=20000, help="virtual time each page gets before its shot")
    ap.add_argument("--chromium", default="chromium", help="the Chromium binary (Debian: apt-get install chromium)")
    a = ap.parse_args()
    chromium = shutil.which(a.chromium)
    if chromium is None:
        sys.exit(f"screenshot_dashboards: no {a.chromium!r} on PATH; install Debian's: apt-get install -y chromium")
    for tool in ("optuna-dashboard", "tensorboard"):
        if not (BIN / tool).exists():
            sys.exit(f"screenshot_dashboards: {BIN / tool} is missing; install the extra: pip install '.[dashboard]'")

    from nas.search import RunDir, run
    from nas.search.optuna_bridge import open_study

    tmp = Path(tempfile.mkdtemp(prefix="coatnas-dash-"))  # the YAML's copy; the run unless --run-dir
    a.run_dir = a.run_dir or tmp / "run"
    try:
        space = budgeted(a.space, a.max_params, tmp) if a.max_params else a.space
        res = run(space, trials=a.trials, run_dir=a.run_dir, progress=True)
        rd = RunDir(res.run_dir)
        study = open_study(rd)
        print(f"\nstudy: {len(study.trials)} trials")
        kinds = Counter((t.state.name, t.user_attrs.get("status", "-")) for t in study.trials)
        for (state, status), n in sorted(kinds.items()):
            print(f"  {n:3d}  {state:8s}  status {status}")

        a.out.mkdir(parents=True, exist_ok=True)
        size = (a.width, a.height)
        port = free_port()
        proc = server([str(BIN / "optuna-dashboard"), str(rd.journal), "--host", "127.0.0.1", "--port", str(port)])
        try:
            base = f"http://127.0.0.1:{port}"
            sid = get_json(f"{base}/api/studies", proc)["study_summaries"][0]["study_id"]
            detail = get_json(f"{base}/api/studies/{sid}", proc)
            infeasible = sum(1 for t in detail["trials"] if any(c > 0 for c in t["constraints"]))
            print(
                f"optuna-dashboard API: {len(detail['trials'])} trials, {infeasible} with a constraint > 0 "
                f"(drawn infeasible), best trials {sorted(t['number'] for t in detail['best_trials'])}"
            )
            screenshot(chromium, f"{base}/dashboard/studies/{sid}", a.out / "dashboard-optuna.png", size, a.wait_ms)
            screenshot(
                chromium,
                f"{base}/dashboard/studies/{sid}/trials",
                a.out / "dashboard-optuna-trials.png",
                size,
                a.wait_ms,
            )
        finally:
            stop(proc)

        port = free_port()
        tb = [str(BIN / "tensorboard"), "--logdir", str(rd.tune_dir), "--host", "127.0.0.1", "--port", str(port)]
        proc = server(tb)
        try:
            base = f"http://127.0.0.1:{port}"
            want = len([r for r in rd.read_records() if r.history])
            runs = get_json(f"{base}/data/runs", proc)
            deadline = time.monotonic() + 60
            while len(runs) < want and time.monotonic() < deadline:  # TensorBoard's first scan of the folder
                time.sleep(1)
                runs = get_json(f"{base}/data/runs", proc)
            tags = get_json(f"{base}/data/plugin/scalars/tags", proc)
            print(f"TensorBoard API: {len(runs)} runs: {runs}")
            print(f"  tags of the first: {sorted(next(iter(tags.values()), {}))}")
            url = f"{base}/#scalars&_smoothingWeight=0"  # a few rounds per curve: no smoothing
            screenshot(chromium, url, a.out / "dashboard-tensorboard.png", size, a.wait_ms)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
