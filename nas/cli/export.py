"""``nas-export``: write the model config of a trial of a search run, or export a network to timm or ONNX.

    nas-export runs/coatnet --out model.yaml             # the best trial
    nas-export runs/coatnet --rank 3 --out third.yaml
    nas-export runs/coatnet --trial 12 --out t12.yaml    # Optuna trial number or architecture id
    nas-export runs/coatnet --format timm --out best-timm           # timm MaxxVit config (no weights)
    nas-export runs/train-best --format timm --out timm1   # a trained model (nas-train --out): weights,
                                                           # mean/std and class names in timm's config
    nas-export runs/train-best --format onnx --out best-onnx   # model.onnx + model.yaml, checked in onnxruntime

``nas.build_model(nas.load_model_config("model.yaml"))`` rebuilds the network; ``nas-train model.yaml``
trains it. A timm export is loaded with ``nas.export.timm_model.register(FOLDER)`` then ``timm.create_model``.
An ONNX export (``model.onnx`` + ``model.yaml``, the preprocessing in its metadata) runs in onnxruntime; it is
compared with PyTorch's outputs before it is written (``nas.export.onnx``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nas.cli import ArgumentParser, run_cli
from nas.errors import UserError

PROG = "nas-export"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Export a trial of a search run as a model config YAML, or a network for timm (--format timm) "
        "or ONNX (--format onnx).",
    )
    p.add_argument(
        "run_dir",
        metavar="SOURCE",
        help="the run directory of a search (e.g. runs/coatnet); with "
        "--format timm also a trained model (the folder nas-train --out wrote, or an older model.pt) or a model "
        "config YAML; the same with --format onnx (a model config is exported with random weights)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, metavar="K", help="leaderboard rank (1 = best, the default)")
    which.add_argument("--trial", metavar="ID", help="Optuna trial number or architecture id")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="output YAML (default model.yaml), or folder for "
        "--format timm (default: the timm model name) and --format onnx (default: onnx-<architecture id>); "
        "an existing file is only replaced with --force, and never a file of a run directory",
    )
    p.add_argument(
        "--format",
        choices=["yaml", "timm", "onnx"],
        default="yaml",
        help="yaml: coatnas model config "
        "(default); timm: config.json for timm's MaxxVit (with the trained model's mean/std, crop 1.0, class "
        "names) and, from a trained model, model.safetensors; onnx: model.onnx (preprocessing and class names "
        "in its metadata) + model.yaml, checked against PyTorch in onnxruntime (`pip install 'coatnas[onnx]'`)",
    )
    p.add_argument("--name", metavar="NAME", help="timm model name for --format timm (default coatnas_<id>)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    onnx = p.add_argument_group("--format onnx")
    onnx.add_argument(
        "--opset",
        type=int,
        metavar="N",
        default=None,
        help="ONNX opset (18 up to what the installed onnx knows; default 20)",
    )
    onnx.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size at 1 (default: a dynamic batch axis)",
    )
    onnx.add_argument(
        "--no-check",
        action="store_true",
        help="skip the comparison with PyTorch's outputs in onnxruntime (default: refuse an export whose "
        "logits differ)",
    )
    return p


def _main(args) -> int:
    from nas.export.model_config import export_from_run, load_model_config

    if args.rank is not None and args.rank < 1:
        raise UserError(f"--rank must be >= 1 (got {args.rank}).")
    onnx_only = [
        f
        for f, on in (
            ("--opset", args.opset is not None),
            ("--static-batch", args.static_batch),
            ("--no-check", args.no_check),
        )
        if on
    ]
    if onnx_only and args.format != "onnx":
        raise UserError(f"{', '.join(onnx_only)} only appl{'ies' if len(onnx_only) == 1 else 'y'} with --format onnx.")
    if args.format == "timm":
        return _export_timm(args)
    if args.format == "onnx":
        return _export_onnx(args)
    if args.name is not None:
        raise UserError("--name names a timm model; it only applies with --format timm.")
    if Path(args.run_dir).is_file():
        raise UserError(
            f"{args.run_dir} is a file; the yaml format exports a trial of a search run directory. "
            "A nas-train checkpoint or a model config YAML is exported for timm with --format timm."
        )
    args.out = args.out or "model.yaml"
    path = export_from_run(args.run_dir, args.out, rank=args.rank, trial=args.trial, force=args.force)
    mc = load_model_config(path)
    prov = mc.provenance
    print(
        f"{PROG}: trial {prov.get('trial')} {mc.arch} ({mc.image_size}px x{mc.in_chans}, {mc.num_classes} "
        f"classes, score {prov.get('metrics', {}).get('score')}) -> {path}"
    )
    return 0


def _export_timm(args) -> int:
    from nas.export.timm import WEIGHTS_FILE, export_note, export_timm, load_source, timm_name

    mc, state = load_source(args.run_dir, rank=args.rank, trial=args.trial)
    name = timm_name(mc, args.name)
    folder = export_timm(mc, args.out or name, state=state, name=name, force=args.force)
    weights = f" + {WEIGHTS_FILE}" if state is not None else " (no weights: timm initialises them)"
    print(
        f"{PROG}: {mc.arch} ({mc.image_size}px x{mc.in_chans}, {mc.num_classes} classes) -> {folder}/config.json"
        f"{weights}; timm model {name!r}: nas.export.timm_model.register({str(folder)!r}) then "
        f"timm.create_model({name!r}{', pretrained=True' if state is not None else ''})"
    )
    note = export_note(mc, weights=state is not None)
    if note:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return 0


def _export_onnx(args) -> int:
    from nas.export.onnx import DEFAULT_OPSET, describe, export_onnx, load_onnx_source, require_onnx

    if args.name is not None:
        raise UserError("--name names a timm model; it only applies with --format timm.")
    require_onnx()  # before any work: the one paragraph naming the extra
    model, mc, trained = load_onnx_source(args.run_dir, rank=args.rank, trial=args.trial)
    result = export_onnx(
        model,
        mc,
        args.out or f"onnx-{mc.arch.id}",
        opset=DEFAULT_OPSET if args.opset is None else args.opset,
        dynamic_batch=not args.static_batch,
        check=not args.no_check,
        trained=trained,
        force=args.force,
    )
    print(f"{PROG}: {describe(result, mc)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
