"""Search-framework figures: overhead share for short trials, command-to-first-trial time, 2-way parallelism.

    .venv/bin/python scripts/bench_search.py [--trials 6] [--samples 1200] [--epochs 2]

Each measurement runs a real search (local Ray, synthetic data, a random sampler with a fixed seed so the
runs train the same candidates) in a fresh Python process, so Ray start-up is counted where it belongs.

- overhead: 1 - (sum of in-worker training time) / (search wall time x concurrency), with one trial at a
  time; the rest is Ray scheduling, actor start, data loading, Optuna ask/tell and record keeping.
- first trial: from the process start (imports included) to Tune's first ``on_trial_start``.
- parallelism: wall time of K trials one at a time / wall time of the same K trials two at a time, one
  thread each, on 2 cores (ideal 2.0); the ceiling the hardware allows is 2 x (mean training time alone) /
  (mean training time when two run at once), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SPACE = """\
space:
  input: {{image_size: 32, channels: 1}}
  stem: {{width: 16}}
  stages:
    S1: {{block: [C], depth: [1, 2], width: [16, 32]}}
    S2: {{block: [C, T], depth: 1, width: 32}}
    S3: {{block: [C, T], depth: [1, 2], width: [32, 64]}}
    S4: {{block: [T], depth: 1, width: 64}}
  blocks: {{head_dim: 16, mbconv_expansion: 2, ffn_expansion: 2}}
train:
  data: {{name: synthetic, synthetic_samples: {samples}, synthetic_classes: 10}}
  epochs: {epochs}
  batch_size: 64
objective: {{mode: single}}
search: {{trials: {trials}, sampler: random, seed: 0, cpus_per_trial: 1}}
"""

CHILD = """\
import time, json, sys
t0 = time.perf_counter()
from nas.search import run
res = run(sys.argv[1], run_dir=sys.argv[2], max_concurrent=int(sys.argv[3]), progress=False)
from nas.search import RunDir
recs = RunDir(res.run_dir).read_records()
print(json.dumps({"import_s": 0.0, "t_import": time.perf_counter() - t0, **res.timings,
                  "trial_s": [r.metrics["trial_s"] for r in recs],
                  "setup_s": [r.metrics["setup_s"] for r in recs],
                  "ids": sorted(r.id for r in recs), "statuses": [r.status for r in recs]}))
"""


def search(space: Path, run_dir: Path, concurrent: int) -> dict:
    t_start = __import__("time").perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(space), str(run_dir), str(concurrent)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = __import__("time").perf_counter() - t_start
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = wall
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--samples", type=int, default=1200, help="synthetic images (trial length)")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "bench.yaml"
        space.write_text(SPACE.format(samples=args.samples, epochs=args.epochs, trials=args.trials))
        seq = search(space, Path(tmp) / "seq", 1)
        par = search(space, Path(tmp) / "par", 2)
    assert seq["ids"] == par["ids"], "the two runs trained different candidates"
    n = len(seq["trial_s"])
    train_seq, train_par = sum(seq["trial_s"]), sum(par["trial_s"])
    over_seq = 1 - train_seq / seq["search_s"]
    over_par = 1 - train_par / (2 * par["search_s"])
    first = seq["t_import"] - seq["total_s"] + seq["first_trial_s"]
    print(
        textwrap.dedent(f"""\
        bench_search: {n} trials, {args.samples} synthetic images x {args.epochs} epochs, 1 thread per trial
          mean trial (in-worker training) .......... {train_seq / n:6.2f} s  (two at a time: {train_par / n:.2f} s)
          mean in-worker set-up (data, model import)  {sum(seq["setup_s"]) / n:6.3f} s
          Ray ready after run() called ............. {seq["ray_ready_s"]:6.2f} s
          process start -> first trial running ..... {first:6.2f} s
          search wall, one at a time ............... {seq["search_s"]:6.2f} s  overhead share {100 * over_seq:5.1f} %
          search wall, two at a time ............... {par["search_s"]:6.2f} s  overhead share {100 * over_par:5.1f} %
          throughput two at a time / one at a time . {seq["search_s"] / par["search_s"]:6.2f} x  (aim >= 1.7)
          hardware ceiling 2 x t_alone / t_together  {2 * train_seq / train_par:6.2f} x  (the trials' own slowdown)""")
    )


if __name__ == "__main__":
    main()
