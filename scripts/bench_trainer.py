"""Proxy-trainer benchmark: training images/s per layout, trainer overhead, SDPA-with-bias vs matmul-softmax.

    .venv/bin/python scripts/bench_trainer.py [--threads 1] [--steps 20] [--batch-size 64] [--device cpu]
                                              [--trials 3]

1. images/s of a training step (forward, backward, AdamW) for C-C-C-C, C-C-C-T, C-C-T-T, C-T-T-T at 32 px,
   equal depths and widths, on CPU and on CUDA when present (bf16 autocast + channels_last there).
2. Share of training time outside forward/backward/optimizer: ``trainers.training.proxy.fit`` (index batching,
   metrics, schedule, clipping) against a bare loop over the same pre-sliced batches, same model and steps.
3. Relative attention through ``scaled_dot_product_attention`` with the bias as ``attn_mask`` against a
   plain matmul-softmax of the same maths, forward + backward, same inputs, same run: the ratio.
4. With ``--trials E``: whole proxy trials on digits (both objective modes), wall time and the axes.
Figures are ratios within one run; absolute numbers depend on the machine (see docs/trainer.md).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from nas import Architecture
from nas.model.blocks import RelPosAttention
from nas.model.builder import build_model
from trainers.data.config import DataConfig
from trainers.data.loading import load_dataset
from trainers.training.config import TrainConfig
from trainers.training.fit import fit
from trainers.training.measure import autocast

LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_steps(model, batches, device, train, channels_last) -> float:
    """Seconds for forward + backward + AdamW over ``batches`` (nothing else)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=device.type == "cuda")
    sync(device)
    t0 = time.perf_counter()
    for xb, yb in batches:
        with autocast(device, train):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def bench_layouts(device: torch.device, steps: int, batch: int, width: str, depth: str) -> None:
    data = load_dataset(
        DataConfig(
            name="synthetic", synthetic_samples=int(batch * (steps + 2) / 0.9), synthetic_classes=10, val_fraction=0.1
        ),
        32,
        3,
    ).to(device)
    assert len(data.y_train) >= batch * steps
    train = TrainConfig(batch_size=batch, steps=steps, warmup=0.0, device=device.type)
    cl = device.type == "cuda"
    print(f"\n== training step, {device}, 32 px, batch {batch}, {steps} steps, L={depth} D={width} ==")
    print(f"{'layout':<9} {'params':>8} {'bare img/s':>11} {'fit img/s':>10} {'outside fwd/bwd/opt':>20}")
    for layout in LAYOUTS:
        arch = Architecture.parse(f"{layout} L={depth} D={width}")
        torch.manual_seed(0)
        model = build_model(arch, num_classes=10, image_size=32, in_chans=3).to(device)
        if cl:
            model.to(memory_format=torch.channels_last)
        model.train()
        idx = torch.arange(len(data.y_train), device=device)
        batches = []
        for i in range(steps):
            xb = data.x_train[idx[i * batch : (i + 1) * batch]]
            batches.append(
                (
                    xb.contiguous(memory_format=torch.channels_last) if cl else xb,
                    data.y_train[idx[i * batch : (i + 1) * batch]],
                )
            )
        bare_steps(model, batches[:3], device, train, cl)  # warm-up
        t_bare = bare_steps(model, batches, device, train, cl)
        torch.manual_seed(0)
        model = build_model(arch, num_classes=10, image_size=32, in_chans=3)
        it = fit(model, data, train, device=device)
        try:
            while True:
                next(it)
        except StopIteration as stop:
            m = stop.value.metrics
        n = steps * batch
        # per-epoch metrics are part of fit's train_s; validation is outside it
        print(
            f"{layout:<9} {sum(p.numel() for p in model.parameters()) / 1e6:7.2f}M {n / t_bare:11.0f} "
            f"{m['images_per_s']:10.0f} {max(0.0, 1 - t_bare / m['train_s']):19.1%}"
        )


class MatmulSoftmaxAttention(torch.nn.Module):
    """The same relative attention as ``RelPosAttention(rel_attn='pre')`` with explicit matmul-softmax."""

    def __init__(self, ref: RelPosAttention):
        super().__init__()
        self.ref = ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ref
        b, n, _ = x.shape
        q, k, v = r.qkv(x).reshape(b, n, 3, r.num_heads, r.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) * r.head_dim**-0.5 + r.bias().to(q.dtype)
        out = attn.softmax(-1) @ v
        return r.proj(out.transpose(1, 2).reshape(b, n, -1))


def bench_attention(device: torch.device, reps: int) -> None:
    print(f"\n== relative attention fwd+bwd, {device}: SDPA with bias vs matmul-softmax ==")
    print(f"{'tokens':>7} {'chs':>5} {'batch':>6} {'sdpa ms':>9} {'matmul ms':>10} {'matmul/sdpa':>12} {'max diff':>9}")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for size, chs, batch in ((8, 64, 64), (4, 128, 64), (16, 64, 16)):
        torch.manual_seed(0)
        attn = RelPosAttention(chs, chs, (size, size), head_dim=32, rel_attn="pre").to(device)
        plain = MatmulSoftmaxAttention(attn)
        x = torch.randn(batch, size * size, chs, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            diff = (attn(x).float() - plain(x).float()).abs().max().item()
        times = {}
        for name, mod in (("sdpa", attn), ("plain", plain)):

            def step():
                with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                    mod(x).float().sum().backward()

            for _ in range(3):
                step()
            sync(device)
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps):
                    step()
                sync(device)
                best = min(best, (time.perf_counter() - t0) / reps)
            times[name] = best * 1e3
        print(
            f"{size * size:7d} {chs:5d} {batch:6d} {times['sdpa']:9.2f} {times['plain']:10.2f} "
            f"{times['plain'] / times['sdpa']:12.2f} {diff:9.1e}"
        )


TRIAL_ARCHS = (
    "C-C-T-T L=2,1,2,2,1 D=32,64,64,96,128",
    "C-C-C-C L=2,1,1,1,1 D=16,32,32,64,96",
    "T-T-T-T L=2,2,2,3,2 D=32,64,64,96,128",
)


def bench_trials(epochs: int) -> None:
    """Whole proxy trials on digits (32 px, grey) with the coatnet.yaml protocol, both objective modes."""
    from trainers.objectives.registry import ObjectiveConfig
    from trainers.training.proxy import train_candidate

    data = load_dataset(DataConfig(), 32, 1)
    print(f"\n== proxy trials on digits, 32 px x1, {epochs} epochs, cpu ==")
    print(f"{'architecture':<40} {'mode':<7} {'wall s':>7} {'gen':>6} {'cap':>6} {'score':>6} {'val_acc':>8}")
    for text in TRIAL_ARCHS:
        for mode in ("both", "single"):
            t0 = time.perf_counter()
            r = train_candidate(
                Architecture.parse(text), data, TrainConfig(epochs=epochs, device="cpu"), ObjectiveConfig(mode=mode)
            )
            print(
                f"{text:<40} {mode:<7} {time.perf_counter() - t0:7.1f} {r.generalization:6.3f} "
                f"{r.capacity:6.3f} {r.score:6.3f} {r.metrics.get('val_acc', 0.0):8.3f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--depths", default="1,1,2,2,1")
    p.add_argument("--widths", default="32,32,64,96,128")
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    p.add_argument(
        "--trials",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also time whole proxy trials on digits with this many epochs (0: skip)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), cuda: "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    for dev in devices:
        bench_layouts(dev, args.steps, args.batch_size, args.widths, args.depths)
        bench_attention(dev, args.reps)
    if args.trials:
        bench_trials(args.trials)


if __name__ == "__main__":
    main()
