"""``nas-eval``: score a trained model on held-out labelled images; accuracy with a 95% interval.

    nas-eval runs/train-m data/test                  # one sub-folder of images per class, named as the model's classes
    nas-eval runs/train-m data/cifar10-test.npz      # arrays x (images) and y (labels)
    nas-eval runs/train-m ~/data/cifar-10-batches-py --out test-metrics.json   # CIFAR's test split

MODEL is the folder ``nas-train --out`` wrote (model.safetensors + model.yaml). Images go through the model's own
preprocessing: the resize policy to its size, then its training split's mean/std. The Python API is
:func:`trainers.training.evaluate.evaluate` (docs/model.md, "Evaluate and predict").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nas.cli import ArgumentParser, run_cli
from nas.errors import UserError

PROG = "nas-eval"
KINDS = ("auto", "imagefolder", "npz", "cifar10", "cifar100")
MAX_CLASSES_SHOWN = 20
METRICS_FORMAT = 1


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Score a trained model (nas-train's output folder) on held-out labelled images: accuracy with "
        "its 95% Wilson score interval and per-class accuracy.",
    )
    p.add_argument("model", metavar="MODEL", help="the folder nas-train --out wrote (model.safetensors + model.yaml)")
    p.add_argument(
        "data",
        metavar="DATA",
        help="a folder with one sub-folder of images per class (matched to the model's class names by name; a "
        "subset of the classes is fine), an .npz with arrays x (images) and y (labels: the model's class "
        "indices), or an unpacked CIFAR-10/100 python folder (its test split)",
    )
    p.add_argument(
        "--data",
        dest="kind",
        choices=KINDS,
        default="auto",
        help="what DATA is (default auto: a CIFAR python folder, another folder, or an .npz file)",
    )
    add_inference_options(p, batch_size=256)
    p.add_argument(
        "--out",
        metavar="FILE",
        help="also write the metrics as JSON here (checked before scoring; an existing file only with --force)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


def check_common_flags(batch_size: int, threads: int | None) -> None:
    """``--batch-size`` and ``--threads`` in range (shared with ``nas-predict``)."""
    from trainers.training.evaluate import MAX_BATCH

    if not 1 <= batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be 1 to {MAX_BATCH:,} images (got {batch_size}).")
    if threads is not None and not 1 <= threads <= 1024:
        raise UserError(f"--threads must be 1 to 1,024 (got {threads}).")


def add_inference_options(p, *, batch_size: int) -> None:
    """``--batch-size``, ``--device`` and ``--threads``, as ``nas-eval`` and ``nas-predict`` both take them
    (checked by :func:`check_common_flags`)."""
    p.add_argument(
        "--batch-size", type=int, default=batch_size, metavar="N", help=f"images per batch (1 to 65,536; {batch_size})"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when present, else CPU"
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: the CPUs this process may use)")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads: ``threads``, else the CPUs this process may use."""
    import os

    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def load_model(path: str, device: str):
    """(model, config, device) of a trained model, refused early when images cannot be fed to it."""
    from nas.export.model_config import load_trained_model
    from trainers.training.evaluate import check_inference_config, resolve_device

    dev = resolve_device(device)  # `--device cuda` without a GPU fails before anything is read
    p = Path(path)
    if p.is_file() and p.suffix.lower() not in (".safetensors", ".yaml", ".yml", ".pt", ".pth"):
        raise UserError(
            f"MODEL {path} is a file that holds no trained model. MODEL is the folder `nas-train --out DIR` wrote "
            "(model.safetensors and model.yaml), and it comes first: `nas-eval MODEL DATA`, `nas-predict MODEL "
            "IMAGE...`."
        )
    model, config = load_trained_model(path)
    check_inference_config(config, path)
    return model, config, dev


def _main(args) -> int:
    from nas.fsio import atomic_write, check_output_file, make_dirs
    from trainers.training.evaluate import INTERVAL_METHOD, evaluate, load_eval_data

    check_common_flags(args.batch_size, args.threads)
    out = check_output_file(args.out, force=args.force) if args.out else None
    set_threads(args.threads)
    model, config, device = load_model(args.model, args.device)
    data = load_eval_data(args.data, config, None if args.kind == "auto" else args.kind)
    print(f"{PROG}: {config.arch} ({args.model}) on {data.source}, device {device}", flush=True)
    ev = evaluate(
        model, config, data.images, data.labels, batch_size=args.batch_size, device=device, source=data.source
    )
    low, high = ev.interval
    print(
        f"accuracy {ev.accuracy:.4f} ({ev.correct:,}/{ev.n:,})  95% {INTERVAL_METHOD} {low:.4f} to {high:.4f}  "
        f"loss {ev.loss:.4f} (mean cross-entropy)"
    )
    _print_classes(ev)
    if out is not None:
        doc = {"format": METRICS_FORMAT, "model": str(args.model), "architecture": str(config.arch), **ev.to_dict()}
        make_dirs(out.parent)  # a folder on the way that does not exist yet is created, as nas-train does
        atomic_write(out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        print(f"{PROG}: metrics -> {out}")
    return 0


def _print_classes(ev) -> None:
    """Per-class accuracy: every class up to :data:`MAX_CLASSES_SHOWN`, else the lowest ones."""
    rows = list(ev.per_class)
    if len(rows) > MAX_CLASSES_SHOWN:
        print(f"per class: {len(rows)} classes, the {MAX_CLASSES_SHOWN} lowest shown (all in --out FILE)")
        rows = sorted(rows, key=lambda c: (c.accuracy, c.index))[:MAX_CLASSES_SHOWN]
    width = max(5, *(len(c.name) for c in rows))
    print(f"{'class':<{width}}  {'n':>7}  {'correct':>7}  accuracy")
    for c in rows:
        print(f"{c.name:<{width}}  {c.n:>7,}  {c.correct:>7,}  {c.accuracy:.4f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
