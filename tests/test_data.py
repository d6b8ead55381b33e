import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from nas.errors import ConfigError, UserError, parse_dataclass
from trainers.data.config import DataConfig
from trainers.data.loading import load_dataset, stratified_split, stratified_subset


def check_dataset(d, size, chans, classes, stored=torch.float32):
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.x_train.raw.dtype == stored and d.x_val.raw.dtype == stored
    assert d.x_train.shape[1:] == (chans, size, size) and d.x_val.shape[1:] == (chans, size, size)
    assert d.num_classes == classes and d.in_chans == chans
    assert set(d.y_val.tolist()) == set(range(classes)) == set(d.y_train.tolist())
    x = d.x_train.float()
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    # normalised with the training split's statistics
    assert x.mean().abs() < 0.05 and (x.std() - 1).abs() < 0.1


def test_digits_grey_to_rgb_and_cached():
    d = load_dataset(DataConfig(), 16, 3)
    check_dataset(d, 16, 3, 10)
    assert len(d.y_train) + len(d.y_val) == 1797
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 2])  # grey repeated into 3 channels
    assert load_dataset(DataConfig(), 16, 3) is d


def test_split_is_stratified_deterministic_and_seeded():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    tr, va = stratified_split(y, 0.2, seed=3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100)) and not set(tr) & set(va)
    assert np.bincount(y[va]).tolist() == [2, 4, 6, 8]
    tr2, va2 = stratified_split(y, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(y, 0.2, seed=4)[1])
    sub = stratified_subset(torch.from_numpy(y), 0.1, seed=0)
    assert np.bincount(y[sub.numpy()]).tolist() == [1, 2, 3, 4]


def test_synthetic_deterministic_and_limit():
    cfg = DataConfig(name="synthetic", synthetic_samples=200, synthetic_classes=4, seed=7, limit=100)
    a = load_dataset(cfg, 12, 1)
    check_dataset(a, 12, 1, 4)
    assert len(a.y_train) + len(a.y_val) == 100
    from trainers.data.loading import _load_cached

    b = _load_cached.__wrapped__(cfg, 12, 1, None)
    assert torch.equal(a.x_train.float(), b.x_train.float()) and torch.equal(a.y_val, b.y_val)


def write_cifar(folder, n_files, key, n=20, classes=10):
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] if n_files == 5 else ["train"]
    for name in names:
        with open(folder / name, "wb") as fh:
            pickle.dump(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: [i % classes for i in range(n)]}, fh
            )


def test_cifar10_happy_and_missing_batches(tmp_path):
    write_cifar(tmp_path / "c10", 5, b"labels")
    d = load_dataset(DataConfig(name="cifar10", path=str(tmp_path / "c10")), 16, 3)
    check_dataset(d, 16, 3, 10)
    assert len(d.y_train) + len(d.y_val) == 100
    (tmp_path / "c10" / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"missing data_batch_3.*data_batch_1` \.\.\. `data_batch_5"):
        load_dataset(DataConfig(name="cifar10", path=str(tmp_path / "c10"), seed=1), 16, 3)


def test_cifar100_happy_and_malformed(tmp_path):
    write_cifar(tmp_path / "c100", 1, b"fine_labels", n=40, classes=4)
    d = load_dataset(DataConfig(name="cifar100", path=str(tmp_path / "c100")), 32, 1)
    assert d.num_classes == 100 and d.x_train.shape[1:] == (1, 32, 32)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"could not read this pickle.*CIFAR-100 python pickles `train`"):
        load_dataset(DataConfig(name="cifar100", path=str(tmp_path / "bad")), 32, 3)


def test_imagefolder_happy_and_empty(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "eel"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    d = load_dataset(DataConfig(name="imagefolder", path=str(tmp_path / "imgs"), val_fraction=0.25), 8, 3)
    check_dataset(d, 8, 3, 3, stored=torch.uint8)  # each file resized to 8 px on its own: uint8 in colour
    assert len(d.y_val) == 3
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match=r"found 0 class folder.*one sub-folder per class"):
        load_dataset(DataConfig(name="imagefolder", path=str(tmp_path / "empty")), 8, 3)


def test_npz_happy_and_bad(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (30, 9, 9, 3), dtype=np.uint8), y=np.arange(30) % 3)
    d = load_dataset(DataConfig(name="npz", path=str(tmp_path / "d.npz")), 9, 3)
    check_dataset(d, 9, 3, 3, stored=torch.uint8)
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 4, 4)))
    with pytest.raises(UserError, match=r"has arrays \['images'\], not `x` and `y`"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "bad.npz")), 9, 3)
    with pytest.raises(UserError, match=r"no such file.*missing.npz"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "missing.npz")), 9, 3)


def test_data_yaml_errors():
    with pytest.raises(ConfigError, match=r"`train.data.name`.*'digits'"):
        parse_dataclass(DataConfig, {"name": "mnist"}, "s.yaml", "train.data")
    with pytest.raises(ConfigError, match=r"`train.data.val_fraction`.*out of range"):
        parse_dataclass(DataConfig, {"val_fraction": 1.5}, "s.yaml", "train.data")
    with pytest.raises(ConfigError, match="train.data.path`: is required"):
        load_dataset(DataConfig(name="cifar10"), 32, 3, file="s.yaml")


def old_float32(x, y, cfg, image_size, in_chans):
    """The float32 tensors every source was held as before images were kept as uint8 (the old loader's
    arithmetic: x / 255, resize, then (x - mean) / std with the training split's float32 statistics)."""
    import torch.nn.functional as F

    from trainers.data.loading import stratified_split

    tr, va = stratified_split(y, cfg.val_fraction, cfg.seed)
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if t.shape[1] != in_chans:
        t = t.expand(-1, in_chans, -1, -1)
    if t.shape[-1] != image_size:
        t = F.interpolate(
            t, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=t.shape[-1] > image_size
        )
    t = t.contiguous()
    trt = torch.from_numpy(tr)
    mean = t[trt].mean((0, 2, 3), keepdim=True)
    std = t[trt].std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    t = ((t - mean) / std).contiguous()
    return t[trt], t[torch.from_numpy(va)]


@pytest.mark.parametrize(
    "shape,size,chans", [((600, 32, 32, 3), 32, 3), ((300, 12, 12), 12, 3), ((300, 12, 12, 3), 16, 3)]
)
def test_uint8_storage_gives_the_old_float32_batches(tmp_path, shape, size, chans):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.arange(shape[0]) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = DataConfig(name="npz", path=str(tmp_path / "d.npz"))
    d = load_dataset(cfg, size, chans)
    exact = size == shape[1]
    check_dataset(d, size, chans, 5, stored=torch.uint8 if exact else torch.float32)
    xc = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    old_tr, old_va = old_float32(xc, y, cfg, size, chans)
    for new, old in ((d.x_train, old_tr), (d.x_val, old_va)):
        # bitwise, not only within 1e-6: the same statistics and the same per-element operations
        assert torch.equal(new.float(), old), (new.float() - old).abs().max()
        idx = torch.tensor([5, 0, 17, 3])
        assert torch.equal(new[idx], old[idx]) and torch.equal(new[2:9], old[2:9])
        assert torch.equal(new[4], old[4]) and torch.equal(new[:, 1], old[:, 1])
    if exact:  # a quarter of the bytes
        assert d.x_train.nbytes == old_tr.numel() and d.x_train.nbytes * 4 == old_tr.numel() * old_tr.element_size()


def test_float_sources_unchanged_and_subsets_keep_storage():
    from sklearn.datasets import load_digits

    dig = load_digits()
    cfg = DataConfig()
    d = load_dataset(cfg, 16, 3)
    old_tr, _ = old_float32(dig.images[:, None].astype(np.float32) / 16.0, dig.target, cfg, 16, 3)
    assert torch.equal(d.x_train.float(), old_tr)  # bitwise: the same operations on float storage
    sub = d.x_train.subset(torch.tensor([4, 1]))
    assert sub.raw.dtype == d.x_train.raw.dtype and torch.equal(sub[:], d.x_train[torch.tensor([4, 1])])


def _image(path, h, w, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).save(path)


@pytest.mark.parametrize("first", [(7, 300), (300, 7), (1, 1), (8, 8), (64, 64)])
@pytest.mark.parametrize("chans", [3, 1])
def test_imagefolder_first_image_size_sets_nothing(tmp_path, first, chans):
    """Whatever size the FIRST file has, every image is resized on its own to the image size: an image of one
    flat colour stays that flat colour (resizing it to the first file's odd size and back would not change
    that, so the pixels are checked against decoding each file alone), and the memory estimate and the
    stream/load choice do not depend on any file."""
    from trainers.data.loading import in_memory_bytes, read_dataset
    from trainers.data.readers import decode_rgb
    from trainers.data.stream import StreamedImages

    root = tmp_path / "imgs"
    rng = np.random.default_rng(5)
    sizes = [first, (32, 32), (20, 40), (9, 9)]
    files = []
    for c in ("a", "b"):
        for i, (h, w) in enumerate(sizes):
            f = root / c / f"{i}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f)
            files.append(f)
    cfg = DataConfig(name="imagefolder", path=str(root), val_fraction=0.5, stream_above_mb=None)
    d = read_dataset(cfg, 8, chans)
    assert d.x_train.raw.dtype == (torch.uint8 if chans == 3 else torch.float32)
    # every file decoded alone at 8x8, in class-then-name order; the split picks rows of it
    alone = torch.from_numpy(np.stack([decode_rgb(f, (8, 8)).transpose(2, 0, 1) for f in files]))
    from trainers.data.images import to_images
    from trainers.data.loading import stratified_split

    tr, va = stratified_split(np.repeat([0, 1], 4), 0.5, 0)
    want = to_images(alone.numpy(), 8, chans)
    assert torch.equal(d.x_train.raw, want[torch.from_numpy(tr)]) and torch.equal(
        d.x_val.raw, want[torch.from_numpy(va)]
    )
    # the estimate is the same whatever the first file: 8 images * chans * 64 px * (1 byte RGB, 4 grey)
    assert in_memory_bytes(8, 8, chans) == 8 * chans * 64 * (1 if chans == 3 else 4)
    streamed = read_dataset(
        DataConfig(name="imagefolder", path=str(root), val_fraction=0.5, stream_above_mb=0), 8, chans
    )
    assert isinstance(streamed.x_train, StreamedImages)
    torch.testing.assert_close(streamed.x_train[:], d.x_train[:], rtol=0, atol=1e-5)


def test_read_imagefolder_without_a_size_refuses_mixed_sizes(tmp_path):
    from trainers.data.readers import read_imagefolder

    _image(tmp_path / "f" / "a" / "0.png", 7, 300, 10)
    _image(tmp_path / "f" / "b" / "0.png", 32, 32, 20)
    with pytest.raises(UserError, match=r"this image is 32x32 px, \S+/a/0.png 300x7 px: give the image size") as err:
        read_imagefolder(DataConfig(name="imagefolder", path=str(tmp_path / "f")))
    assert "\n" not in str(err.value)
    x, y, k = read_imagefolder(DataConfig(name="imagefolder", path=str(tmp_path / "f")), 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.uint8 and k == 2
    assert (x[0] == 10).all() and (x[1] == 20).all()  # a flat colour stays flat: no detour through 7x300


def test_one_registry_of_sources():
    """Each source's name is declared once, beside its reader, which resolves to a function; the config layer
    reads the names without importing a reader (tests/test_config_layer.py checks torch stays out)."""
    import typing

    from trainers.data.config import SOURCES
    from trainers.data.download import ARCHIVES
    from trainers.data.shared import SHARED_SOURCES

    assert typing.get_args(typing.get_type_hints(DataConfig)["name"]) == tuple(SOURCES)
    for name, source in SOURCES.items():
        assert source.name == name and callable(source.read()), name
        assert (source.path is None) == (name not in SHARED_SOURCES)
        assert source.path is None or source.expected
    assert set(ARCHIVES) <= set(SOURCES)
    # the names alone, in a fresh interpreter: no reader imported, nor numpy or torch
    import subprocess
    import sys

    probe = (
        "import sys\nfrom nas.errors import parse_dataclass\nfrom trainers.data.config import SOURCES, DataConfig\n"
        "parse_dataclass(DataConfig, {'name': 'npz', 'path': 'x.npz'})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch') or m.startswith('trainers.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "['trainers.data', 'trainers.data.config']", out
