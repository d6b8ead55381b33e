"""A dataset loaded once and shared by the trial workers of every node through Ray's object store.

Without it each worker process loads the source and holds its own copy (``trainers.data.loading`` caches it per
process). Here the driver runs one Ray task that loads it (:func:`share_datasets`: the driver itself stays
torch-free and never holds the images), whose result, the images as numpy arrays, lands in the object
store once per node; each worker's :func:`worker_dataset` ``ray.get``\\ s it: numpy arrays backed by the
node's shared memory, read-only, wrapped by ``torch.from_numpy`` without a copy. Nothing writes them (the
batches are new tensors: ``Images.normalize``), so the read-only flag only costs torch's warning that
writing would be undefined, which is silenced for exactly these arrays.

Only file-backed sources are shared (``SHARED_SOURCES``: those of :data:`trainers.data.config.SOURCES` that read a
path); ``digits`` and ``synthetic`` are small or cheap
to regenerate and keep the per-process path, as do ``nas-train`` and the tests (no Ray). A streamed image
folder is shared too: its names and statistics, so that workers skip the statistics sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from nas.errors import UserError
from trainers.data.config import SOURCES, DataConfig

SHARED_SOURCES = tuple(name for name, source in SOURCES.items() if source.path is not None)
_WORKER: dict[str, Any] = {}  # object id -> Dataset, in this worker process (its device copies memoised)


def pack(ds) -> dict[str, Any]:
    """``ds`` as plain numpy arrays (views of its tensors; ``ray.put`` copies them into the store once)."""
    from trainers.data.stream import StreamedImages

    def images(x) -> Any:
        return x if isinstance(x, StreamedImages) else x.raw.numpy()

    return {
        "x_train": images(ds.x_train),
        "x_val": images(ds.x_val),
        "y_train": ds.y_train.numpy(),
        "y_val": ds.y_val.numpy(),
        "mean": ds.x_train.mean.numpy(),
        "std": ds.x_train.std.numpy(),
        "num_classes": ds.num_classes,
        "in_chans": ds.in_chans,
        "name": ds.name,
        "classes": ds.classes,
    }


def unpack(packed: dict[str, Any]):
    """The :class:`~trainers.data.loading.Dataset` over ``packed``'s arrays, without copying them."""
    import torch

    from trainers.data.images import Images
    from trainers.data.loading import Dataset

    def tensor(a: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():  # read-only shared memory: never written (see the module docstring)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(a)

    mean, std = tensor(packed["mean"]), tensor(packed["std"])

    def images(x: Any) -> Images:
        return Images(tensor(x), mean, std) if isinstance(x, np.ndarray) else x

    return Dataset(
        images(packed["x_train"]),
        tensor(packed["y_train"]),
        images(packed["x_val"]),
        tensor(packed["y_val"]),
        int(packed["num_classes"]),
        int(packed["in_chans"]),
        packed["name"],
        tuple(packed["classes"]),
    )


def load_packed(cfg: DataConfig, image_size: int, in_chans: int) -> dict[str, Any]:
    """The body of the loading task: read the source (no per-process cache: the task's process keeps
    nothing) and pack it."""
    from trainers.data.loading import read_dataset

    return pack(read_dataset(cfg, image_size, in_chans))


def share_datasets(configs: Iterable[DataConfig], image_size: int, in_chans: int) -> dict[DataConfig, Any]:
    """``{config: object ref}`` of each distinct file-backed source in ``configs``, loaded by one Ray task
    each and waited for (Ray must be initialised). A source that fails to load raises its own
    :class:`UserError` here, on the driver, before any trial starts."""
    import ray

    task = ray.remote(load_packed).options(num_cpus=1, max_retries=1)
    refs = {cfg: task.remote(cfg, image_size, in_chans) for cfg in dict.fromkeys(configs) if cfg.name in SHARED_SOURCES}
    for ref in refs.values():
        try:
            ray.get(ref)  # zero-copy views, dropped at once: only to surface a loading error
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, UserError):
                raise err.cause from None
            raise
    return refs


def worker_dataset(cfg: DataConfig, image_size: int, in_chans: int, shared: dict[DataConfig, Any] | None = None):
    """The dataset of ``cfg`` in a worker: from the object store when the driver shared it (``shared``
    from :func:`share_datasets`), else ``trainers.data.loading.load_dataset`` (loaded and cached per process)."""
    ref = (shared or {}).get(cfg)
    if ref is None:
        from trainers.data.loading import load_dataset

        return load_dataset(cfg, image_size, in_chans)
    key = ref.hex()
    if key not in _WORKER:
        import ray

        if len(_WORKER) >= 4:
            _WORKER.pop(next(iter(_WORKER)))
        _WORKER[key] = unpack(ray.get(ref))
    return _WORKER[key]
