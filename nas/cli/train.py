"""``nas-train``: fully train a preset or an exported model config; write a checkpoint and metrics.

    nas-train coatnet-0 --data digits --epochs 5 --image-size 32
    nas-train best.yaml --data cifar10 --data-path ~/data/cifar-10-batches-py --epochs 30 --out runs/best

CONFIG is a preset name (``coatnet-0`` .. ``coatnet-4``) or a model config YAML (``nas-export``'s output).
The protocol starts from the defaults (or the ``train:`` section of ``--protocol FILE``, e.g. a search
space YAML) and the flags override it. Writes the trained model into ``--out``: ``model.safetensors`` (the
weights) and ``model.yaml`` (architecture, input, preprocessing: the resize policy and the training split's
mean/std, class names, provenance), plus ``metrics.json``. ``nas-eval`` and ``nas-predict`` read that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from nas.cli import ArgumentParser, run_cli
from nas.errors import UserError, yaml_problem
from nas.model.arch import ModelConfig
from nas.yamlio import load_yaml_file

PROG = "nas-train"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Train a preset or an exported model config fully.")
    p.add_argument("config", metavar="CONFIG", help="preset name (coatnet-0..4) or model config YAML")
    p.add_argument(
        "--protocol",
        metavar="FILE",
        help="YAML whose `train:` section sets the protocol (e.g. the search space file); flags override it",
    )
    p.add_argument(
        "--data",
        choices=["digits", "synthetic", "cifar10", "cifar100", "imagefolder", "npz"],
        help="data source (default: the protocol's `train.data.name`, else digits)",
    )
    p.add_argument("--data-path", metavar="PATH", help="folder/file for cifar10, cifar100, imagefolder, npz")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the training split (1 to 10_000)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps instead of whole epochs (1 to 100_000_000)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per step (2 to 65_536)")
    p.add_argument("--lr", type=float, metavar="LR", help="AdamW learning rate (> 0, at most 10; usually 1e-4 to 1e-2)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the weights and the batches (0 to 4_294_967_295)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="random crop + flip")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present, else CPU")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--image-size", type=int, help="input size for presets (model configs bring theirs; default 32)")
    p.add_argument("--in-chans", type=int, help="input channels for presets (default 3)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default runs/train-<name>); checked before "
        "training: its model.safetensors, model.yaml, metrics.json are only replaced with --force",
    )
    p.add_argument("--force", action="store_true", help="replace model.safetensors, model.yaml, metrics.json in --out")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    return p


def resolve_model(config: str, image_size: int | None, in_chans: int | None) -> tuple[ModelConfig, str]:
    """(model config, short name) of a preset name or a model config YAML path."""
    import nas.model.presets as presets
    from nas.export.model_config import load_model_config

    if config.endswith((".yaml", ".yml")) or os.path.sep in config or Path(config).is_file():
        if config.endswith((".pt", ".pth")):
            raise UserError(
                f"CONFIG {config} is a checkpoint; nas-train trains a model config: pass the model.yaml "
                "written beside it (or a preset name)."
            )
        try:
            mc = load_model_config(config)
        except UserError as err:
            raise _not_a_model_config(config) or err from None
        if image_size and image_size != mc.image_size:
            mc = replace(mc, image_size=image_size)
        if in_chans and in_chans != mc.in_chans:
            mc = replace(mc, in_chans=in_chans)
        return mc, Path(config).stem
    try:
        arch = presets.get(config)
    except UserError as err:
        raise UserError(
            f"CONFIG {config!r} is neither an existing model config YAML file nor a preset: {err}"
        ) from None
    return ModelConfig(
        arch=arch, num_classes=1000, image_size=image_size or 32, in_chans=in_chans or 3, provenance={"preset": config}
    ), config


def _not_a_model_config(config: str) -> UserError | None:
    """The error for a search YAML (or a fidelity study YAML) given as CONFIG, a file or a bundled name: what
    it is and how to get a model config from it; ``None`` for any other file (the model config's own error)."""
    from nas.space.reading import bundled_spaces, resolve_space_path

    path = Path(config)
    bundled = not path.is_file() and config in bundled_spaces()
    if bundled:
        path = resolve_space_path(config)
    elif not path.is_file():
        return None
    try:
        data = load_yaml_file(path)
    except (OSError, yaml.YAMLError, UserError):
        return None
    if not isinstance(data, dict):
        return None
    if "space" in data:
        run = Path("runs") / path.stem
        best = run / "best.yaml"
        ran = f"; {best} exists, so `nas-train {best}` trains that one" if best.is_file() else ""
        return UserError(
            f"CONFIG {config} is {'a bundled' if bundled else 'a'} search YAML (it has a `space:` section): a "
            "space of architectures to search, while nas-train trains one model config. Search it first: "
            f"`nas-search --space {config}` writes the best trial's model config to {best}, and `nas-export "
            f"{run} --rank K --out model.yaml` exports another trial{ran}. Then pass that YAML to nas-train (or a "
            f"preset: coatnet-0 .. coatnet-4); add `--protocol {path}` to train with this file's `train:` section."
        )
    if "study" in data:
        return UserError(
            f"CONFIG {config} is a fidelity study YAML (it has a `study:` section), which `nas-fidelity {config}` "
            "runs; nas-train trains one model config: the YAML written by `nas-export` or a search's "
            "best.yaml (or a preset: coatnet-0 .. coatnet-4)."
        )
    return None


def load_protocol(path: str | None):
    from trainers.training.config import parse_train

    if path is None:
        return parse_train(None)
    p = Path(path)
    if not p.is_file():
        what = "no such file" if not os.path.lexists(p) else "a folder" if p.is_dir() else "not a regular file"
        raise UserError(f"--protocol {path}: {what}. Pass a YAML with a `train:` section (a search space file works).")
    try:
        data = load_yaml_file(p) or {}
    except yaml.YAMLError as err:
        raise UserError(
            f"--protocol {path}: not valid YAML {yaml_problem(err)}. Pass a YAML with a `train:` "
            "section (a search space file works)."
        ) from None
    except OSError as err:
        raise UserError(f"--protocol {path}: cannot read it ({err.strerror}).") from None
    if not isinstance(data, dict):
        raise UserError(f"--protocol {path}: expected a mapping with a `train:` section, got {type(data).__name__}.")
    from nas.errors import check_keys
    from nas.limits import check_ranges

    # a search YAML's sections are welcome (only `train:` is read); anything else is not a protocol file (a
    # study YAML, a model config), which would otherwise train with the defaults without a word
    check_keys(data, ("train", "space", "objective", "search", "finalists"), str(p), "")
    if "train" not in data:
        raise UserError(
            f"--protocol {path}: has no `train:` section (its keys: {', '.join(map(str, data)) or 'none'}), so it "
            "sets no protocol. Pass a YAML with a `train:` section (a search space file works), or leave out "
            "--protocol to train with the defaults and the flags."
        )

    train = parse_train(data.get("train"), str(p))
    check_ranges(train, "train", str(p))
    return train


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _main(args))


def _check_positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name} must be a positive integer (got {value}).")


def _main(args) -> int:
    import torch

    from nas.fsio import check_output_dir
    from nas.model.cost import count_cost
    from trainers.training.fit import resolve_device

    _check_args(args)
    train = _protocol_of(args)
    mc, name = resolve_model(args.config, args.image_size, args.in_chans)
    _check_model_limits(mc, args.config)
    device = resolve_device(train)  # before loading any data: `--device cuda` without a GPU fails at once
    # the output is checked before training: nothing is trained for an output that would be refused
    out = check_output_dir(args.out or f"runs/train-{name}", OUT_FILES, force=args.force, trained_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, mc = _load_data(args, train, mc)
    data = train.data
    cost = count_cost(mc)
    if not args.quiet:
        print(
            f"{PROG}: {mc.arch}  {cost}  data {data.name} ({len(dataset.y_train)} train / "
            f"{len(dataset.y_val)} val, {mc.image_size}px x{mc.in_chans})  device {device}",
            flush=True,
        )
    model = _build(mc, train, cost)
    t0 = time.perf_counter()
    res = _train(model, dataset, train, device, mc, t0, quiet=args.quiet)
    metrics = {**res.metrics, "params": cost.params, "macs": cost.macs, "wall_s": time.perf_counter() - t0}
    _write_outputs(out, mc, train, res, metrics)
    print(
        f"{PROG}: val_acc {metrics['val_acc']:.4f}  train_acc {metrics['train_acc']:.4f}  "
        f"{metrics['images_per_s']:.0f} img/s  -> {out}/ (model.safetensors, model.yaml, metrics.json)"
    )
    return 0


def _check_args(args) -> None:
    """Refuse numeric flags outside their allowed ranges before anything is loaded."""
    import math

    from nas.limits import check_value

    for name in ("epochs", "steps", "batch_size", "threads", "image_size", "in_chans"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.lr is not None and (not math.isfinite(args.lr) or args.lr <= 0):
        raise UserError(
            f"--lr must be a finite number > 0 (got {args.lr}). Allowed: > 0 and at most 10; "
            "AdamW's usual range is 1e-4 to 1e-2."
        )
    for name, key in (
        ("epochs", "train.epochs"),
        ("steps", "train.steps"),
        ("batch_size", "train.batch_size"),
        ("lr", "train.lr"),
        ("seed", "train.seed"),
        ("threads", "threads"),
        ("image_size", "image_size"),
        ("in_chans", "in_chans"),
    ):
        check_value(getattr(args, name), key, None, "--" + name.replace("_", "-"))


def _protocol_of(args):
    """The training protocol: the defaults or the --protocol file, with the flags laid over it."""
    train = load_protocol(args.protocol)
    data = train.data
    if args.data:
        data = replace(data, name=args.data)
    if args.data_path:
        from trainers.data.config import SOURCES

        if SOURCES[data.name].path is None:
            raise UserError(
                f"--data-path {args.data_path} has no effect with the `{data.name}` data source, which reads no "
                "files. Drop --data-path, or choose a source that reads it (--data cifar10, cifar100, "
                "imagefolder or npz)."
            )
        data = replace(data, path=args.data_path)
    over = {
        k: getattr(args, k)
        for k in ("epochs", "steps", "batch_size", "lr", "seed", "augment", "device")
        if getattr(args, k) is not None
    }
    train = replace(train, data=data, **over)
    if args.epochs is not None and args.steps is None:
        train = replace(train, steps=None)
    return train


def _load_data(args, train, mc: ModelConfig):
    """Load the data set; return it and the model config with a classifier head sized for its classes."""
    from nas.limits import check_value
    from trainers.data.loading import load_dataset

    data = train.data
    # messages name what the user set the data path with: the protocol file's key, else --data-path
    from_file = args.protocol is not None and not args.data_path and train.data.path is not None
    dataset = load_dataset(
        train.data,
        mc.image_size,
        mc.in_chans,
        file=args.protocol if from_file else None,
        key="train.data.path" if from_file else "--data-path",
    )
    where = args.protocol if from_file else "--data-path"
    check_value(
        dataset.num_classes,
        "num_classes",
        None,
        f"the number of classes of the data ({data.name}{', ' + str(data.path) if data.path else ''}, "
        f"set by {where}: the largest label + 1)",
    )
    if dataset.num_classes != mc.num_classes:
        if "preset" not in mc.provenance:
            print(
                f"{PROG}: note: the model config has {mc.num_classes} classes, the data {dataset.num_classes}; "
                "training a new classifier head for the data",
                file=sys.stderr,
            )
        mc = replace(mc, num_classes=dataset.num_classes)
    return dataset, with_preprocessing(mc, dataset)


def with_preprocessing(mc: ModelConfig, dataset) -> ModelConfig:
    """``mc`` with what inference needs from the data it is trained on: the training split's per-channel
    mean/std (the resize policy is the one of ``nas.model.arch.RESIZE_POLICY``) and the class names."""
    from nas.model.arch import Preprocessing

    mean = tuple(float(v) for v in dataset.x_train.mean.flatten())
    std = tuple(float(v) for v in dataset.x_train.std.flatten())
    return replace(mc, preprocessing=Preprocessing(mean, std), class_names=dataset.class_names)


def _build(mc: ModelConfig, train, cost):
    """Seed, then build the model; running out of memory doing so is the user's to fix."""
    from nas.model.builder import build_model
    from trainers.training.fit import seed_everything
    from trainers.training.result import is_oom

    seed_everything(train.seed)
    try:
        return build_model(mc, drop_path_rate=train.drop_path)
    except Exception as err:  # noqa: BLE001 - a model too large for this machine's memory is the user's to fix
        if not is_oom(err):
            raise
        raise UserError(
            f"Out of memory while building {mc.arch} ({cost}): {str(err).splitlines()[0][:200]}. "
            "Nothing was written. Use a smaller model (depths, widths) or a machine with more "
            "memory."
        ) from None


def _train(model, dataset, train, device, mc: ModelConfig, t0: float, quiet: bool):
    """Run the training to its end, printing one line per epoch unless quiet; return fit's result."""
    from trainers.training.fit import Diverged, fit
    from trainers.training.proxy import fit_eval_subset
    from trainers.training.result import is_oom

    it = fit(model, dataset, train, device=device, eval_idx=fit_eval_subset(dataset.y_train, 4096, train.seed))
    while True:
        try:
            row = next(it)
        except StopIteration as stop:
            return stop.value
        except Diverged as err:
            raise UserError(
                f"Training diverged: {err}. Nothing was written. Lower the learning rate (--lr, or "
                "`train.lr` in the --protocol file; AdamW's usual range is 1e-4 to 1e-2) or keep "
                "`train.grad_clip` on."
            ) from None
        except Exception as err:  # noqa: BLE001 - only an out-of-memory failure is the user's to fix
            if not is_oom(err):
                raise
            raise UserError(
                f"Out of memory while training {mc.arch} at {mc.image_size}px x{mc.in_chans}, batch "
                f"{train.batch_size} on {device}: {str(err).splitlines()[0][:200]}. Nothing was "
                "written. Lower --batch-size or --image-size, or use a smaller model."
            ) from None
        if not quiet:
            epochs = train.epochs if train.steps is None else "?"
            print(
                f"epoch {row['epoch']:>3}/{epochs}  loss {row['running_loss']:.4f}  train_acc "
                f"{row['train_acc']:.3f}  val_acc {row['val_acc']:.3f}  {time.perf_counter() - t0:6.1f}s",
                flush=True,
            )


def _write_outputs(out: Path, mc: ModelConfig, train, res, metrics: dict) -> None:
    """Write the trained model (model.safetensors, model.yaml: ``save_trained``) and metrics.json into the output
    folder (checked writable before training)."""
    from nas.export.model_config import save_trained
    from nas.fsio import atomic_write

    mc = replace(
        mc,
        provenance={
            **dict(mc.provenance),
            "trained": {
                "data": train.data.name,
                "epochs": res.metrics["epochs"],
                "val_acc": round(metrics["val_acc"], 4),
            },
        },
    )
    save_trained(out, mc, res.model.state_dict(), force=True)
    atomic_write(
        out / "metrics.json", json.dumps({"metrics": metrics, "history": res.history, "train": _plain(train)}, indent=2)
    )


OUT_FILES = ("model.safetensors", "model.yaml", "metrics.json")


def _check_model_limits(mc: ModelConfig, config: str) -> None:
    """The documented maxima (nas.limits) of a model config: sizes that could not be allocated. The same
    check as every reader of a model config (``nas.export.model_config.check_model_config``), run again
    after --image-size / --in-chans replaced the config's own."""
    from nas.export.model_config import check_model_config

    file = config if config.endswith((".yaml", ".yml")) or os.path.sep in config else None
    check_model_config(mc, file)


def _plain(train) -> dict:
    from dataclasses import asdict

    return asdict(train)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
