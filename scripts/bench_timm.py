"""coatnas vs timm: parameters of CoAtNet-0..4, and training-step throughput of the same networks.

    make bench-timm        # = .venv-timm/bin/python scripts/bench_timm.py [--rounds 7] [--steps 4] [--batch-size 64]

Needs timm (``.venv-timm``, created by ``make test-timm``/``make bench-timm``).

1. Parameters at 224 px, 1,000 classes: coatnas's presets (``count_cost``, equal to the built module), timm's
   ``coatnet_N_224`` (built on the meta device) and the paper, with timm's surplus split into its parts:
   the pre-logits layer (D4^2 + D4), SE bottlenecks (timm: output width / 4, coatnas: input width / 4) and
   the stem's second conv bias (timm: none).
2. Training-step throughput (forward, cross-entropy, backward, AdamW) at 32 px, one thread, of a coatnas
   network and timm's identical network (``nas-export --format timm``, same weights, same torch), per layout;
   rounds alternate between them so load changes hit all. The ratio is timm's time / coatnas's time (above
   1: coatnas is faster), the median over rounds. Times are the process's CPU time (``time.process_time``;
   one thread, so wall time on an idle machine), which other jobs on a shared machine disturb less than wall
   time. coatnas builds its networks in channels-last memory (``nas.model.builder.CoAtNet``); timm does when asked
   (``train.py --channels-last``), so timm is measured both ways; and coatnas in NCHW shows what its
   channels-last layout gains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import timm
import torch
import torch.nn.functional as F

from nas.export.timm import export_timm
from nas.export.timm_model import register
from nas.model.arch import Architecture, ModelConfig
from nas.model.builder import build_model
from nas.model.cost import count_cost
from nas.model.presets import PRESETS

PAPER = {"coatnet-0": 25, "coatnet-1": 42, "coatnet-2": 75, "coatnet-3": 168, "coatnet-4": 275}
LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "T-T-T-T")


def param_table() -> None:
    print("== parameters at 224 px, 1,000 classes (M) ==")
    print(
        f"{'preset':<10} {'coatnas':>10} {'timm':>10} {'paper':>6} {'timm-ours':>10} {'pre-logits':>11} "
        f"{'SE':>8} {'stem bias':>10} {'rest':>5}"
    )
    for i, (name, arch) in enumerate(PRESETS.items()):
        with torch.device("meta"):
            theirs = sum(p.numel() for p in timm.create_model(f"coatnet_{i}_224").parameters())
        ours = count_cost(arch).params
        w = arch.widths
        se = 0
        for s, block in enumerate(arch.layout):
            out, mid = w[s + 1], 4 * w[s + 1]
            for j in range(arch.depths[s + 1] if block == "C" else 0):
                rd_ours, rd_timm = round((w[s] if j == 0 else out) * 0.25), int(0.25 * out)
                se += (rd_timm - rd_ours) * (2 * mid + 1)
        pre = w[4] ** 2 + w[4]
        rest = theirs - ours - pre - se + w[0]
        print(
            f"{name:<10} {ours / 1e6:10.2f} {theirs / 1e6:10.2f} {PAPER[name]:6d} {theirs - ours:10,d} "
            f"{pre:11,d} {se:8,d} {-w[0]:10,d} {rest:5d}"
        )


def step_time(model: torch.nn.Module, opt: torch.optim.Optimizer, batches, channels_last: bool = False) -> float:
    t0 = time.process_time()
    for xb, yb in batches:
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.process_time() - t0


def throughput(rounds: int, steps: int, batch: int, depth: str, width: str) -> None:
    torch.set_num_threads(1)
    print(
        f"\n== training step, CPU, 1 thread, 32 px, batch {batch}, {steps} steps x {rounds} alternating rounds, "
        f"L={depth} D={width}, torch {torch.__version__}, timm {timm.__version__} =="
    )
    print(
        f"{'layout':<8} {'params':>9} {'coatnas img/s':>14} {'timm img/s':>11} {'timm/coatnas':>13} {'range':>10} "
        f"{'timm-CL/coatnas':>16} {'range':>10} {'NCHW/coatnas':>13} {'range':>10} {'max diff':>9}"
    )
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(steps)
    ]
    for layout in LAYOUTS:
        mc = ModelConfig(arch=Architecture.parse(f"{layout} L={depth} D={width}"), num_classes=10, image_size=32)
        torch.manual_seed(0)
        ours = build_model(mc)
        models = [ours]
        with tempfile.TemporaryDirectory() as tmp:
            name = register(export_timm(mc, tmp, state=ours.state_dict(), name="coatnas_bench"), replace=True)
            models += [timm.create_model(name, pretrained=True) for _ in range(2)]
        models[2].to(memory_format=torch.channels_last)
        models.append(build_model(mc).to(memory_format=torch.contiguous_format))  # coatnas in NCHW
        models[3].load_state_dict(ours.state_dict())
        with torch.no_grad():
            diff = (ours.eval()(batches[0][0]) - models[1].eval()(batches[0][0])).abs().max().item()
        for m in models:
            m.train()
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in models]
        for k in range(4):  # warm-up
            step_time(models[k], opts[k], batches[:1], k == 2)
        times: dict[int, list[float]] = {0: [], 1: [], 2: [], 3: []}
        for r in range(rounds):
            for k in ((0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1))[r % 4]:
                times[k].append(step_time(models[k], opts[k], batches, k == 2))
        rat = [sorted(b / a for a, b in zip(times[0], times[k])) for k in (1, 2, 3)]
        med = [statistics.median(times[k]) for k in (0, 1)]
        print(
            f"{layout:<8} {count_cost(mc).params:9,d} {batch * steps / med[0]:14.0f} {batch * steps / med[1]:11.0f} "
            f"{statistics.median(rat[0]):13.3f} {rat[0][0]:4.2f}-{rat[0][-1]:.2f} "
            f"{statistics.median(rat[1]):16.3f} {rat[1][0]:4.2f}-{rat[1][-1]:.2f} "
            f"{statistics.median(rat[2]):13.3f} {rat[2][0]:4.2f}-{rat[2][-1]:.2f} {diff:9.1e}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--depth", default="2,2,2,2,2")
    p.add_argument("--width", default="32,64,96,128,192")
    p.add_argument("--no-params", action="store_true", help="skip the parameter table")
    args = p.parse_args(argv)
    if not args.no_params:
        param_table()
    throughput(args.rounds, args.steps, args.batch_size, args.depth, args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
