"""A trained model on images it has not seen: the Python API behind ``nas-eval`` (score labelled images) and
``nas-predict`` (label images).

Every image reaches the network exactly as in training (docs/model.md, "Trained models and preprocessing"): an
image file is decoded to RGB and fitted to the model's size by the one resize policy
(:func:`trainers.data.readers.decode_rgb`), an array by the same policy on tensors
(:func:`trainers.data.images.to_images`); grey and colour are converted as the training data was; pixel values
are scaled to [0, 1] (uint8) and normalised with the **model's** mean/std (those of its training split, from its
``model.yaml``), never with the statistics of the data being scored.

    from nas.export.model_config import load_trained_model
    from trainers.training.evaluate import evaluate, load_eval_data, predict

    model, config = load_trained_model("runs/train-m")
    data = load_eval_data("data/test", config)          # class folders, an .npz or a CIFAR python folder
    ev = evaluate(model, config, data.images, data.labels)
    ev.accuracy, ev.interval                            # 95% Wilson score interval
    for p in predict(model, config, ["cat.jpg"], top=3):
        print(p.path, p.top)

Labels are the model's class indices: an image folder's sub-folders are matched to the model's class names by
name, an npz's labels are indices (or matched by name when the npz and the model both name their classes).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import UserError
from nas.model.arch import ModelConfig
from trainers.data.config import IMAGE_EXTS, DataConfig, Origin

CONFIDENCE = 0.95
Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
INTERVAL_METHOD = "Wilson score interval"
MAX_BATCH = 65_536

ImagesLike = np.ndarray | torch.Tensor | Sequence[str | os.PathLike]


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for the default ``z``): unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or ``n`` correct. ``(0.0, 1.0)`` for ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if correct <= 0 else max(0.0, centre - half)
    high = 1.0 if correct >= n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ClassScore:
    """One class of the scored data: its name and index in the model, its number of images and how many the
    model labelled correctly."""

    name: str
    index: int
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class Evaluation:
    """The score of a model on ``n`` labelled images: accuracy with its 95% Wilson score interval, the mean
    cross-entropy and, for each class present in the data (in the model's order), its accuracy."""

    n: int
    correct: int
    loss: float
    per_class: tuple[ClassScore, ...]
    source: str = ""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of :attr:`accuracy`."""
        return wilson_interval(self.correct, self.n)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "source": self.source,
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "interval": {"low": low, "high": high, "confidence": CONFIDENCE, "method": INTERVAL_METHOD},
            "loss": self.loss,
            "per_class": [
                {"class": c.name, "index": c.index, "n": c.n, "correct": c.correct, "accuracy": c.accuracy}
                for c in self.per_class
            ],
        }


@dataclass(frozen=True)
class EvalData:
    """Labelled images to score: ``images`` (NCHW array, or image files decoded batch by batch), ``labels`` (the
    model's class indices) and ``source`` (what they are, for messages and reports)."""

    images: np.ndarray | list[Path]
    labels: np.ndarray
    source: str


@dataclass(frozen=True)
class Prediction:
    """The model's labels of one image: ``top`` holds (class name, probability) pairs, most probable first."""

    path: str
    index: int
    top: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.label,
            "index": self.index,
            "probability": self.probability,
            "top": [{"class": n, "probability": p} for n, p in self.top],
        }


# ------------------------------------------------------------------------------------------ preprocessing
def check_inference_config(config: ModelConfig, where: str = "the model") -> None:
    """Refuse a model that images cannot be fed to as in its training: no stored mean/std (an untrained export
    or a model of an older coatnas), or an input that is neither grey nor RGB."""
    if config.preprocessing is None:
        raise UserError(
            f"{where}: its config has no `preprocessing` (the mean/std of the data it was trained on): it is an "
            "untrained export or was trained by an older coatnas, so images cannot be normalised as in its training. "
            "Train it with `nas-train CONFIG --data ... --out DIR` and pass DIR."
        )
    if config.in_chans not in (1, 3):
        raise UserError(
            f"{where}: takes {config.in_chans}-channel input; images are grey or RGB, so only a model of 1 or 3 "
            "input channels can be fed images. Call `trainers.training.evaluate.logits` with your own normalised "
            "tensors instead."
        )


def preprocess(x: np.ndarray | torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """NCHW (or grey NHW) images of any size (uint8 0-255, or floats in the units the training data had: [0, 1]
    for images) as the network's input: the resize policy to the model's size, grey/RGB conversion,
    ``(x - mean) / std`` with the model's mean/std (float32, NCHW)."""
    from trainers.data.images import Images, to_images

    check_inference_config(config)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 3:  # N, H, W: grey
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3, config.in_chans):
        raise UserError(
            f"images of shape {tuple(arr.shape)} cannot be fed to a model of {config.in_chans} input channel(s): "
            "pass NCHW images with 1 (grey) or 3 (RGB) channels."
        )
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32, copy=False)
    pre = config.preprocessing
    t = to_images(arr, config.image_size, config.in_chans)
    return Images(t, torch.tensor(pre.mean), torch.tensor(pre.std))[:]


def read_image_files(files: Sequence[str | os.PathLike], size: int) -> np.ndarray:
    """RGB uint8 NCHW of image ``files``, each fitted to ``size`` by the resize policy
    (:func:`trainers.data.readers.decode_rgb`); a file that is not a readable image is one paragraph naming it."""
    from trainers.data.readers import decode_rgb

    out = np.empty((len(files), 3, size, size), np.uint8)
    for i, f in enumerate(files):
        try:
            out[i] = decode_rgb(f, (size, size)).transpose(2, 0, 1)
        except Exception as err:  # noqa: BLE001 - PIL raises many types for a file that is not an image
            why = re.sub(r"\s*<_io\.\w+ name=[^>]*>", "", " ".join(str(err).split()))[:200] or type(err).__name__
            raise UserError(
                f"{f}: not an image that can be read ({why}). Images are {', '.join(IMAGE_EXTS)} files; remove or "
                "replace this one."
            ) from None
    return out


def _batches(images: ImagesLike, config: ModelConfig, batch_size: int) -> Iterator[torch.Tensor]:
    """The network's input, ``batch_size`` images at a time (files are decoded batch by batch)."""
    n = len(images)
    for i in range(0, n, batch_size):
        part = images[i : i + batch_size]
        if not isinstance(part, (np.ndarray, torch.Tensor)):
            part = read_image_files(list(part), config.image_size)
        yield preprocess(part, config)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` without a GPU is a :class:`UserError`."""
    from trainers.training.config import TrainConfig
    from trainers.training.fit import resolve_device as resolve

    return resolve(TrainConfig(), device)


@torch.no_grad()
def logits(
    model: torch.nn.Module,
    config: ModelConfig,
    images: ImagesLike,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """The model's float32 logits (on the CPU) of ``images`` (NCHW array or image files), batch by batch, each
    batch preprocessed as in training (:func:`preprocess`); the model is put in eval mode and moved to
    ``device``, and runs in full precision."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise UserError(f"the batch size must be 1 to {MAX_BATCH:,} images (got {batch_size}).")
    device = resolve_device(device)
    model.eval().to(device)
    done = 0
    for xb in _batches(images, config, batch_size):
        xb = xb.to(device).contiguous(memory_format=torch.channels_last)
        out = model(xb).float().cpu()
        bad = ~torch.isfinite(out).all(-1)
        if bool(bad.any()):
            first = done + int(bad.nonzero()[0])
            raise UserError(
                f"the model's outputs are not finite numbers (NaN or infinite) for image {first} "
                "and maybe others, so no score or label would mean anything: its weights or its preprocessing "
                "(model.yaml's mean/std) are damaged. Re-train it with `nas-train`, or restore the files it wrote."
            )
        done += len(out)
        yield out


# ------------------------------------------------------------------------------------------------ scoring
def evaluate(
    model: torch.nn.Module,
    config: ModelConfig,
    images: ImagesLike,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    source: str = "",
) -> Evaluation:
    """Score ``model`` on ``images`` (NCHW array of any size, uint8 or floats, or image files) with ``labels``
    (the model's class indices): accuracy, its 95% Wilson score interval, mean cross-entropy, per-class accuracy.
    The images go through the model's own preprocessing (:func:`preprocess`)."""
    check_inference_config(config)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if len(y) != len(images):
        raise UserError(f"{source or 'the data'}: {len(images)} images but {len(y)} labels; give one label per image.")
    if len(y) == 0:
        raise UserError(f"{source or 'the data'}: holds no images to score.")
    if int(y.min()) < 0 or int(y.max()) >= config.num_classes:
        raise UserError(
            f"{source or 'the data'}: labels from {int(y.min())} to {int(y.max())}, but the model has "
            f"{config.num_classes} classes (labels 0 to {config.num_classes - 1})."
        )
    k = config.num_classes
    hits = torch.zeros(k, dtype=torch.int64)
    counts = torch.bincount(y, minlength=k)
    loss = 0.0
    start = 0
    for out in logits(model, config, images, batch_size=batch_size, device=device):
        yb = y[start : start + len(out)]
        start += len(out)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        hits += torch.bincount(yb[out.argmax(-1) == yb], minlength=k)
    names = config.labels()
    per_class = tuple(ClassScore(names[c], c, int(counts[c]), int(hits[c])) for c in range(k) if int(counts[c]) > 0)
    return Evaluation(n=len(y), correct=int(hits.sum()), loss=loss / len(y), per_class=per_class, source=source)


def predict(
    model: torch.nn.Module,
    config: ModelConfig,
    files: Sequence[str | os.PathLike],
    *,
    top: int = 1,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Iterator[Prediction]:
    """The ``top`` most probable classes (softmax probabilities) of each image file, in order, one
    :class:`Prediction` per file as soon as its batch is done. ``top`` above the model's classes gives all.
    The arguments are checked when called, the images read while iterating."""
    if top < 1:
        raise UserError(f"`top` must be at least 1 (got {top}): the number of most probable classes to give.")
    if not 1 <= batch_size <= MAX_BATCH:
        raise UserError(f"the batch size must be 1 to {MAX_BATCH:,} images (got {batch_size}).")
    check_inference_config(config)
    return _predictions(model, config, list(files), min(top, config.num_classes), batch_size, device)


def _predictions(model, config: ModelConfig, files: list, k: int, batch_size: int, device) -> Iterator[Prediction]:
    names = config.labels()
    start = 0
    for out in logits(model, config, files, batch_size=batch_size, device=device):
        probs = out.softmax(-1)
        p, idx = probs.topk(k, dim=-1)
        for row in range(len(out)):
            pairs = tuple((names[int(c)], float(q)) for q, c in zip(p[row], idx[row]))
            yield Prediction(str(files[start + row]), int(idx[row, 0]), pairs)
        start += len(out)


# ----------------------------------------------------------------------------------------- reading data
def _origin() -> Origin:
    return Origin(None, "DATA")


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _image_entries(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name. An entry with an image name that is not a regular file
    (a FIFO, a folder, a dangling link) is refused: it would otherwise be skipped without a word."""
    out = []
    with os.scandir(folder) as entries:
        for e in entries:
            if not _visible(e.name) or os.path.splitext(e.name)[1].lower() not in IMAGE_EXTS:
                continue
            if not e.is_file():  # follows a link: a link to an image file is one
                raise UserError(
                    f"{e.path}: has an image name but is not a regular file (a folder, a FIFO, a device or a dangling "
                    "link). Move it out of the folder."
                )
            out.append(Path(e.path))
    return sorted(out)


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files ``paths`` name: a file as it is (whatever its extension: it is decoded to tell), a folder's
    image files (by extension, in its sub-folders too, in name order; hidden ones and links to folders are
    skipped). A missing path or a folder without images is one paragraph."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = []
            for root, dirs, _ in os.walk(p, onerror=_walk_error):
                dirs[:] = sorted(d for d in dirs if _visible(d))
                found.extend(_image_entries(Path(root)))
            if not found:
                raise UserError(
                    f"{raw}: a folder with no image files ({', '.join(IMAGE_EXTS)}), in it or its sub-folders. Pass "
                    "image files or folders holding them."
                )
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif os.path.lexists(p):
            what = "a dangling link" if p.is_symlink() else "not a regular file (a FIFO, socket or device)"
            raise UserError(f"{raw}: is {what}, not an image file. Pass image files or folders holding them.")
        else:
            raise UserError(f"{raw}: no such file or folder. Pass image files or folders holding them.")
    return out


def _walk_error(err: OSError) -> None:
    raise UserError(f"{err.filename}: cannot list this folder ({err.strerror}).") from None


def _data_kind(path: Path) -> str:
    """``imagefolder``, ``npz``, ``cifar10`` or ``cifar100`` for what is at ``path``."""
    if path.is_dir():
        for sub in (path, path / "cifar-10-batches-py"):
            if (sub / "test_batch").is_file():
                return "cifar10"
        for sub in (path, path / "cifar-100-python"):
            if (sub / "test").is_file() and (sub / "meta").is_file():
                return "cifar100"
        return "imagefolder"
    if path.is_file():
        return "npz"
    if os.path.lexists(path):
        raise UserError(f"{path}: is not a regular file nor a folder. {_DATA_FIX}")
    raise UserError(f"{path}: no such file or folder. {_DATA_FIX}")


_DATA_FIX = (
    "DATA is a folder with one sub-folder of images per class (named as the model's classes), an .npz with arrays "
    "`x` (images) and `y` (labels), or an unpacked CIFAR-10/100 python folder (its test split)."
)


def load_eval_data(path: str | os.PathLike, config: ModelConfig, kind: str | None = None) -> EvalData:
    """The labelled images at ``path``, labels as the model's class indices. ``kind`` (default: told from
    ``path``): ``imagefolder`` (one sub-folder per class, matched to the model's class names by name; a subset of
    the classes is fine), ``npz`` (``x``, ``y``; labels are class indices, or matched by name when the npz has
    a ``classes`` array and the model names its classes), ``cifar10``/``cifar100`` (the test split of an
    unpacked python archive)."""
    path = Path(path).expanduser()
    kind = kind or _data_kind(path)
    if kind == "imagefolder":
        return _imagefolder(path, config)
    if kind == "npz":
        return _npz(path, config)
    if kind in ("cifar10", "cifar100"):
        return _cifar_test(path, config, kind)
    raise UserError(f"unknown kind of data {kind!r}. Allowed: imagefolder, npz, cifar10, cifar100.")


def _named(config: ModelConfig) -> bool:
    """The model's classes have names of their own (not their indices as text)."""
    return config.class_names is not None and config.class_names != tuple(str(i) for i in range(config.num_classes))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


def _shown_classes(config: ModelConfig, limit: int = 20) -> str:
    names = config.labels()
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _by_name(names: Sequence[str], config: ModelConfig, path: Path, what: str) -> list[int]:
    """The model's index of each of ``names``; names the model does not know are one paragraph."""
    index = {n: i for i, n in enumerate(config.labels())}
    unknown = [n for n in names if n not in index]
    if unknown:
        listed = ", ".join(f"`{n}`" for n in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        one = len(unknown) == 1
        raise UserError(
            f"{path}: the {what}{'' if one else 's'} {listed} {'is' if one else 'are'} not among the model's classes "
            f"({_shown_classes(config)}). Classes are matched by name; rename or remove {'it' if one else 'them'}, "
            f"or score a model trained on {'it' if one else 'them'}."
        )
    return [index[n] for n in names]


def _imagefolder(path: Path, config: ModelConfig) -> EvalData:
    try:
        classes = sorted(p.name for p in path.iterdir() if p.is_dir() and _visible(p.name))
        files = {c: _image_entries(path / c) for c in classes}
    except OSError as err:
        raise UserError(f"{err.filename or path}: cannot list this folder ({err.strerror}).") from None
    classes = [c for c in classes if files[c]]
    if not classes:
        loose = _image_entries(path)
        hint = (
            f" It holds {len(loose)} image file(s) directly, which have no label: `nas-predict {path}` labels them."
            if loose
            else ""
        )
        raise UserError(f"{path}: no class sub-folder with images ({', '.join(IMAGE_EXTS)}).{hint} {_DATA_FIX}")
    index = _by_name(classes, config, path, "class folder")
    paths = [f for c in classes for f in files[c]]
    labels = np.asarray([i for i, c in zip(index, classes) for _ in files[c]], dtype=np.int64)
    what = f"image folder, {_count(len(classes), 'class')}, {_count(len(paths), 'image')}"
    return EvalData(paths, labels, f"{path} ({what})")


def _labels_to_model(
    y: np.ndarray, data_names: tuple[str, ...] | None, config: ModelConfig, path: Path, what: str
) -> np.ndarray:
    """``y`` (indices into ``data_names``) as the model's class indices: by name where both name their classes,
    else as they are (checked against the model's number of classes)."""
    if data_names is not None and _named(config):
        present = np.unique(y)
        mapped = _by_name([data_names[int(c)] for c in present], config, path, f"{what} class")
        table = np.full(int(y.max()) + 1, -1, dtype=np.int64)
        table[present] = mapped
        return table[y]
    if int(y.max()) >= config.num_classes:
        raise UserError(
            f"{path}: `y` has labels up to {int(y.max())}, but the model has {config.num_classes} classes (labels 0 "
            f"to {config.num_classes - 1}: {_shown_classes(config)}). An {what}'s labels are the model's class "
            "indices; score it with a model trained on these classes."
        )
    return y.astype(np.int64)


def _npz(path: Path, config: ModelConfig) -> EvalData:
    from trainers.data.npz import read_npz

    cfg = DataConfig(name="npz", path=str(path))
    x, y, names = read_npz(cfg, path, config.image_size, config.in_chans, _origin(), min_classes=1)
    names = names if isinstance(names, tuple) else None
    labels = _labels_to_model(y, names, config, path, "npz")
    what = f"npz, {_count(len(np.unique(labels)), 'class')}, {_count(len(labels), 'image')}"
    return EvalData(x, labels, f"{path} ({what})")


def _cifar_test(path: Path, config: ModelConfig, kind: str) -> EvalData:
    from trainers.data.readers import CIFAR10_CLASSES, unpickle_batch

    cfg = DataConfig(name=kind, path=str(path))
    sub, name = ("cifar-10-batches-py", "test_batch") if kind == "cifar10" else ("cifar-100-python", "test")
    folder = path / sub if not (path / name).is_file() and (path / sub / name).is_file() else path
    x, y = unpickle_batch(cfg, folder / name, _origin())
    names = CIFAR10_CLASSES if kind == "cifar10" else None  # CIFAR-100's labels are the indices of its training
    labels = _labels_to_model(y, names, config, folder / name, kind)
    return EvalData(x, labels, f"{folder / name} ({kind} test split, {_count(len(labels), 'image')})")
