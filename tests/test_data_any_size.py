"""Data of any size: one copy per node in Ray's object store (trainers.data.shared), and image folders streamed
batch by batch above `train.data.stream_above_mb` (trainers.data.stream)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nas import Architecture
from nas.errors import ConfigError, UserError, parse_dataclass
from trainers.data.config import DataConfig
from trainers.data.images import Images
from trainers.data.loading import clear_dataset_cache, load_dataset, read_dataset
from trainers.data.stream import StreamedImages, sample_stats
from trainers.objectives.registry import ObjectiveConfig
from trainers.training.config import TrainConfig
from trainers.training.proxy import train_candidate


def _npz(path, n=240, size=12, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), y=np.arange(n) % 3)
    return str(path)


def _folder(root, per_class=8, sizes=((12, 12), (12, 12), (14, 10))):
    """Three classes of PNG (lossless) and JPEG files, some of another size than the first (resized)."""
    rng = np.random.default_rng(1)
    for c in ("ant", "bee", "cow"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            img.save(root / c / (f"{i:02d}.png" if i % 2 == 0 else f"{i:02d}.jpg"), quality=90)
    return str(root)


# --------------------------------------------------------------------------- the shared path (Ray)


def _in_worker(cfg: DataConfig, size: int, chans: int, shared: dict, idx: torch.Tensor) -> dict:
    """In a Ray worker: the shared dataset's batches, and where its images live."""
    import ray

    from trainers.data.shared import worker_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's non-writable warning must not escape
        ds = worker_dataset(cfg, size, chans, shared)
    again = worker_dataset(cfg, size, chans, shared)
    store = ray.get(shared[cfg])["x_train"]  # another zero-copy view of the stored array
    ptr = ds.x_train.raw.data_ptr()
    mapping = next(
        line.split()
        for line in open("/proc/self/maps")
        if int(line.split("-")[0], 16) <= ptr < int(line.split()[0].split("-")[1], 16)
    )
    return {
        "train": ds.x_train[idx],
        "val": ds.x_val[:17],
        "y_train": ds.y_train.clone(),
        "y_val": ds.y_val.clone(),
        "same_ptr": ptr == store.ctypes.data,
        "store_writeable": store.flags.writeable,
        "mapping_perms": mapping[1],
        "cached": again is ds,
        "stored": str(ds.x_train.raw.dtype),
    }


@pytest.mark.parametrize("size", [12, 16])  # 12: uint8 at its own size; 16: resampled, float32
def test_shared_batches_bitwise_equal_and_not_copied(ray_local, tmp_path, size):
    from trainers.data.shared import share_datasets

    cfg = DataConfig(name="npz", path=_npz(tmp_path / "d.npz"), val_fraction=0.25)
    shared = share_datasets([cfg, cfg], size, 3)
    assert list(shared) == [cfg]
    idx = torch.tensor([5, 0, 77, 3, 150, 9])
    got = ray_local.get(ray_local.remote(_in_worker).remote(cfg, size, 3, shared, idx))
    clear_dataset_cache()
    ref = load_dataset(cfg, size, 3)
    assert torch.equal(got["train"], ref.x_train[idx]) and torch.equal(got["val"], ref.x_val[:17])
    assert torch.equal(got["y_train"], ref.y_train) and torch.equal(got["y_val"], ref.y_val)
    assert got["stored"] == str(ref.x_train.raw.dtype)
    # the worker's tensor is the object store's buffer: shared memory (rw-s), read-only to numpy, no copy
    assert got["same_ptr"] and not got["store_writeable"] and got["mapping_perms"].endswith("s")
    assert got["cached"]


def test_shared_only_file_sources_and_load_errors_on_the_driver(ray_local, tmp_path):
    from trainers.data.shared import share_datasets, worker_dataset

    synth = DataConfig(name="synthetic", synthetic_samples=40, synthetic_classes=2)
    assert share_datasets([synth], 8, 1) == {}
    assert isinstance(worker_dataset(synth, 8, 1, {}).x_train, Images)  # the per-process path
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"`train.data.path` for source `npz`: not a readable .npz") as err:
        share_datasets([DataConfig(name="npz", path=str(tmp_path / "bad.npz"))], 8, 3)
    assert "Traceback" not in str(err.value) and type(err.value) is UserError


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("size,chans", [(12, 3), (16, 3), (8, 1)])
def test_streamed_matches_in_memory(tmp_path, size, chans):
    """Same labels and classes; the same pixels (same decoding and resampling) normalised with statistics
    accumulated in float64 over the same images: batches agree to 1e-5 (float32 rounding of the stats)."""
    cfg = DataConfig(name="imagefolder", path=_folder(tmp_path / "imgs"), val_fraction=0.25)
    mem = read_dataset(dataclasses.replace(cfg, stream_above_mb=None), size, chans)
    st = read_dataset(dataclasses.replace(cfg, stream_above_mb=0), size, chans)
    assert isinstance(st.x_train, StreamedImages) and type(mem.x_train) is Images
    assert (st.num_classes, st.in_chans, st.image_size) == (mem.num_classes, chans, size) == (3, chans, size)
    assert torch.equal(st.y_train, mem.y_train) and torch.equal(st.y_val, mem.y_val)
    assert st.x_train.shape == mem.x_train.shape and len(st.x_val) == len(mem.x_val)
    idx = torch.tensor([4, 0, 11, 7, 2])
    for a, b in [
        (st.x_train[idx], mem.x_train[idx]),
        (st.x_val[:], mem.x_val[:]),
        (st.x_train[3], mem.x_train[3]),
        (st.x_train.subset(idx)[1:3], mem.x_train.subset(idx)[1:3]),
    ]:
        assert a.dtype == torch.float32 and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_sample_statistics_close_to_the_full_split(tmp_path):
    """A sample of 12 of the 18 training images estimates the per-channel mean within 0.05 (the images are
    uniform noise: spread ~0.29 / sqrt(12 * 144 pixels))."""
    cfg = DataConfig(name="imagefolder", path=_folder(tmp_path / "imgs"), val_fraction=0.25, stream_above_mb=0)
    st = read_dataset(cfg, 12, 3)
    mean, std = sample_stats(st.x_train.root, st.x_train.names, 12, 3, seed=0, sample=12)
    torch.testing.assert_close(mean, st.x_train.mean, rtol=0, atol=0.05)
    torch.testing.assert_close(std, st.x_train.std, rtol=0, atol=0.05)


def test_stream_chosen_by_size(tmp_path):
    """24 RGB images (12x12 and 14x10 px), each resized to the image size and kept uint8 in colour: 24 * 3 * 144
    = 10,368 bytes at 12 px, 24 * 3 * 256 = 18,432 bytes at 16 px; in grey float32: 24 * 256 * 4 = 24,576 bytes
    at 16 px. The limit counts after `limit`."""
    cfg = DataConfig(name="imagefolder", path=_folder(tmp_path / "imgs"), val_fraction=0.25)

    def streamed(size: int = 12, chans: int = 3, **kw) -> bool:
        clear_dataset_cache()
        return isinstance(load_dataset(dataclasses.replace(cfg, **kw), size, chans).x_train, StreamedImages)

    assert not streamed() and not streamed(stream_above_mb=None) and streamed(stream_above_mb=0)
    assert streamed(stream_above_mb=0.0103) and not streamed(stream_above_mb=0.0104)
    assert streamed(16, stream_above_mb=0.0184) and not streamed(16, stream_above_mb=0.0185)
    assert streamed(16, 1, stream_above_mb=0.0245) and not streamed(16, 1, stream_above_mb=0.0246)
    assert not streamed(stream_above_mb=0.0103, limit=12)
    npz = DataConfig(name="npz", path=_npz(tmp_path / "d.npz"), stream_above_mb=0)
    assert type(load_dataset(npz, 12, 3).x_train) is Images  # only image folders stream


def test_streamed_dataset_trains_and_names_a_broken_file(tmp_path):
    cfg = DataConfig(
        name="imagefolder", path=_folder(tmp_path / "imgs", per_class=12), val_fraction=0.25, stream_above_mb=0
    )
    ds = read_dataset(cfg, 32, 3)
    arch = Architecture.parse("C-C-T-T L=1,1,1,1,1 D=8,8,16,16,32")
    res = train_candidate(
        arch,
        ds,
        TrainConfig(data=cfg, epochs=1, batch_size=8, eval_batch_size=16, bn_recalibrate=16, augment=True),
        ObjectiveConfig(mode="single"),
        num_threads=1,
    )
    assert res.status == "ok" and res.metrics["steps"] == 3
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "imgs" / "ant" / "00.png")  # another size: ok
    (tmp_path / "imgs" / "bee" / "01.jpg").write_bytes(b"broken")
    with pytest.raises(UserError, match=r"unreadable image .*bee/01.jpg"):
        ds.x_train[:]


def test_stream_key_bad_values():
    for bad, problem in [
        (-1, r"is out of range \(got -1\)\. Allowed: a number of megabytes >= 0 \(0: always"),
        ("lots", "has the wrong type"),
        (True, "has the wrong type"),
    ]:
        with pytest.raises(ConfigError, match=rf"s.yaml: `train.data.stream_above_mb`: {problem}"):
            parse_dataclass(DataConfig, {"stream_above_mb": bad}, "s.yaml", "train.data")
    assert parse_dataclass(DataConfig, {"stream_above_mb": None}).stream_above_mb is None
    assert parse_dataclass(DataConfig, {"stream_above_mb": 0}).stream_above_mb == 0.0


@pytest.mark.slow
def test_search_on_a_file_source_runs_through_the_shared_path(ray_local, write_space, tmp_path, monkeypatch):
    """A search on an npz source: the driver shares the data once (a spy counts it), the trials train on it."""
    import trainers.data.shared as shared
    from nas.search import run
    from nas.search.rundir import RunDir

    calls = []
    real = shared.share_datasets
    monkeypatch.setattr(shared, "share_datasets", lambda *a: calls.append(a) or real(*a))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "g.npz", x=rng.integers(0, 256, (160, 32, 32), dtype=np.uint8), y=np.arange(160) % 4)
    space = write_space()
    space.write_text(space.read_text().replace("name: synthetic,", f"name: npz, path: {tmp_path / 'g.npz'},"))
    res = run(space, trials=1, run_dir=tmp_path / "run", progress=False)
    assert res.completed == 1 and len(calls) == 1 and calls[0][0][0].name == "npz"
    assert all(r.ok for r in RunDir(res.run_dir).read_records())
