"""``nas-predict``: label images with a trained model's class names.

    nas-predict runs/train-m cat.jpg photos/            # one line per image: path, class, probability
    nas-predict runs/train-m photos/ --top 3            # the three most probable classes
    nas-predict runs/train-m photos/ --json > labels.jsonl   # one JSON object per line

MODEL is the folder ``nas-train --out`` wrote. A folder is searched for image files (png, jpg, bmp, gif, tiff,
webp), its sub-folders too; a file is read whatever its name. Images go through the model's own preprocessing,
as in ``nas-eval``. The Python API is :func:`trainers.training.evaluate.predict`.
"""

from __future__ import annotations

import json
import sys

from nas.cli import ArgumentParser, run_cli
from nas.cli.evaluate import add_inference_options, check_common_flags, load_model, set_threads
from nas.errors import UserError

PROG = "nas-predict"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Label images with a trained model (nas-train's output folder).")
    p.add_argument("model", metavar="MODEL", help="the folder nas-train --out wrote (model.safetensors + model.yaml)")
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help="image files, or folders searched (sub-folders too) for png, jpg, bmp, gif, tiff and webp files",
    )
    p.add_argument(
        "--top",
        type=int,
        default=1,
        metavar="K",
        help="show the K most probable classes of each image (default 1; more than the model's classes shows all)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: path, class, index, probability and the top K classes",
    )
    add_inference_options(p, batch_size=64)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


def _main(args) -> int:
    from trainers.training.evaluate import image_files, predict

    if args.top < 1:
        raise UserError(f"--top must be at least 1 (got {args.top}): the number of most probable classes to show.")
    check_common_flags(args.batch_size, args.threads)
    set_threads(args.threads)
    model, config, device = load_model(args.model, args.device)
    files = image_files(args.images)
    for p in predict(model, config, files, top=args.top, batch_size=args.batch_size, device=device):
        if args.json:
            print(json.dumps(p.to_dict(), allow_nan=False), flush=True)
        else:
            print(f"{p.path}\t" + "\t".join(f"{name} {prob:.4f}" for name, prob in p.top), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
