"""What the weight-sharing proxy costs against the shipped proxy, timed in one process with one thread.

    python scripts/bench_supernet.py                       # coatnet-cifar.yaml, 12 architectures, 1,000 steps

For a sample of the space's candidates (stratified over layouts, ViT_REL included), times in the same process:
one shipped-proxy trial of each (``train_candidate`` under the space's protocol, trained from scratch), a
``--measure-steps`` stretch of each supernet's training (``train_chunk``, both regimes), and the inherited trial
of each (``train_candidate`` under ``train.supernet``: slices, BatchNorm recalibration, the proxy's measurement;
with ``--finetune`` steps too). The trial order alternates between the two protocols so that drift hits both.
Prints the per-candidate ratio, the supernet's training in shipped-trial equivalents (its measured seconds per
step times ``--steps`` per regime), and the cost of a 100- and a 1,000-candidate search under each protocol,
against the target (the 1,000-candidate weight-sharing search at most 3x 100 shipped trials). The trials run
in-process: Ray's per-trial overhead, the same for both protocols, is not in these figures (docs/supernet.md
gives a search's). Needs data/cifar10-train.npz (scripts/prepare_cifar.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from bench_stage_stride import sample

    from nas.errors import UserError
    from nas.search.config import load_experiment
    from trainers.data.loading import load_dataset
    from trainers.training.config import SupernetConfig
    from trainers.training.proxy import train_candidate
    from trainers.training.supernet import train_chunk
    from trainers.training.supernet_state import regimes_of, weights_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="coatnet-cifar.yaml")
    p.add_argument("--per-layout", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000, help="supernet steps per regime of the protocol costed")
    p.add_argument("--measure-steps", type=int, default=100, help="supernet steps timed per regime")
    p.add_argument("--finetune", type=int, default=0, help="fine-tuning steps of each inherited trial")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        exp = load_experiment(a.space)
        ds = load_dataset(exp.train.data, exp.space.image_size, exp.space.in_chans)
    except UserError as err:
        print(f"bench_supernet.py: {err}", file=sys.stderr)
        return 2
    sn = SupernetConfig(steps=a.steps, checkpoint_every=a.measure_steps, finetune_steps=a.finetune)
    ws = dataclasses.replace(exp.train, supernet=sn)
    archs = sample(exp.space, a.per_layout, a.seed, vit=True)
    print(f"{len(archs)} architectures of {a.space}, one thread; supernet {a.steps} steps per regime")

    weights, per_step = {}, []
    for regime in regimes_of(ws, exp.objective):
        warm = dataclasses.replace(ws, supernet=dataclasses.replace(sn, checkpoint_every=5))
        train_chunk(exp.space, ds, warm, exp.objective, regime, None, 0)  # warm-up (allocations, caches)
        t0 = time.perf_counter()
        arrays, fig = train_chunk(exp.space, ds, ws, exp.objective, regime, None, 0)
        per_step.append((time.perf_counter() - t0) / fig["step"])
        weights[regime] = {k: torch.from_numpy(v) for k, v in weights_of(arrays).items()}
    step_s = statistics.fmean(per_step)

    proxy_s, inherit_s = [], []
    for i, arch in enumerate(archs):
        order = [("proxy", exp.train, None), ("inherit", ws, weights)]
        for name, train, w in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            res = train_candidate(arch, ds, train, exp.objective, supernet=w)
            dt = time.perf_counter() - t0
            if res.status != "ok":
                print(f"  {arch}: {name} {res.status}: {res.reason}")
            (proxy_s if name == "proxy" else inherit_s).append(dt)
        print(f"  {arch.layout_name:8s} proxy {proxy_s[-1]:6.2f} s   inherited {inherit_s[-1]:5.2f} s")

    trial = statistics.fmean(proxy_s)
    cand = statistics.fmean(inherit_s) / trial
    supernet = len(per_step) * a.steps * step_s / trial
    print(f"\nshipped-proxy trial: {trial:.2f} s (mean of {len(proxy_s)}); inherited trial {cand * trial:.2f} s")
    print(f"per-candidate cost: {cand:.3f} of a shipped trial (target <= 0.25)")
    print(
        f"supernet: {step_s * 1000:.0f} ms per step x {a.steps} steps x {len(per_step)} regime(s) = "
        f"{supernet:.1f} shipped-trial equivalents"
    )
    print("\nsearch of N candidates, in shipped-trial equivalents:")
    for n in (100, 1000):
        print(f"  N={n:5d}: shipped proxy {n:6.0f}   weight sharing {supernet + n * cand:6.1f}")
    total = supernet + 1000 * cand
    print(f"1,000-candidate weight-sharing search: {total:.0f} = {total / 100:.2f}x 100 shipped trials (target <= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
