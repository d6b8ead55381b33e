"""High-bit-depth images and wide-integer npz pixels decode to the same 8-bit pixels as their 8-bit equivalents;
an image over PIL's pixel limit is refused as an unreadable image, not decoded after a warning."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nas.errors import UserError
from trainers.data.config import DataConfig, Origin
from trainers.data.loading import load_dataset
from trainers.data.npz import read_npz
from trainers.data.readers import decode_rgb


def _grey(seed=0, shape=(12, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [None, (8, 8)])
def test_16bit_png_decodes_like_its_8bit_equivalent(tmp_path, size):
    p = _grey()
    Image.fromarray(p, "L").save(tmp_path / "g8.png")
    noise = np.random.default_rng(1).integers(0, 257, p.shape)  # anything inside the level: still that level +-1
    wide = p.astype(np.int64) * 257
    for name, v in (("exact", wide), ("noisy", np.minimum(wide + noise, 65535))):
        Image.fromarray(v.astype(np.uint16)).save(tmp_path / f"{name}.png")
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.mode.startswith("I")  # a real 16-bit file, not one PIL already made 8-bit
        _close(decode_rgb(tmp_path / f"{name}.png", size), decode_rgb(tmp_path / "g8.png", size))
    assert np.array_equal(decode_rgb(tmp_path / "exact.png"), np.repeat(p[..., None], 3, axis=2))


def test_float_tiff_in_0_1_decodes_like_its_8bit_equivalent(tmp_path):
    p = _grey(2)
    Image.fromarray(p, "L").save(tmp_path / "g8.png")
    Image.fromarray(p.astype(np.float32) / 255.0, "F").save(tmp_path / "f.tiff")
    with Image.open(tmp_path / "f.tiff") as im:
        assert im.mode == "F"
    _close(decode_rgb(tmp_path / "f.tiff"), decode_rgb(tmp_path / "g8.png"))
    _close(decode_rgb(tmp_path / "f.tiff", (8, 8)), decode_rgb(tmp_path / "g8.png", (8, 8)))
    # floats outside [0, 1] are 8-bit values already: clipped to 0..255, not scaled
    Image.fromarray(np.array([[-5.0, 0.0, 17.4, 300.0]], np.float32), "F").save(tmp_path / "f255.tiff")
    assert decode_rgb(tmp_path / "f255.tiff")[0, :, 0].tolist() == [0, 0, 17, 255]


def test_32bit_int_tiff_is_16bit_when_it_fits_else_scaled_by_its_maximum(tmp_path):
    p = _grey(3)
    Image.fromarray(p.astype(np.int32) * 257, "I").save(tmp_path / "i16.tiff")
    assert np.array_equal(decode_rgb(tmp_path / "i16.tiff")[..., 0], p)
    Image.fromarray(np.array([[0, 1 << 19, 1 << 20]], np.int32), "I").save(tmp_path / "i32.tiff")
    assert decode_rgb(tmp_path / "i32.tiff")[0, :, 0].tolist() == [0, 128, 255]


def test_int64_npz_of_0_255_reads_like_uint8(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (30, 9, 9, 3), dtype=np.uint8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    y = np.arange(30) % 3
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez(tmp_path / "i64.npz", x=x.astype(np.int64), y=y)
    cfg, origin = DataConfig(name="npz"), Origin(None, "path")
    a = read_npz(cfg, tmp_path / "u8.npz", 9, 3, origin)[0]
    b = read_npz(cfg, tmp_path / "i64.npz", 9, 3, origin)[0]
    assert b.dtype == np.uint8 and np.array_equal(a, b)
    d8 = load_dataset(DataConfig(name="npz", path=str(tmp_path / "u8.npz")), 9, 3)
    d64 = load_dataset(DataConfig(name="npz", path=str(tmp_path / "i64.npz")), 9, 3)
    assert d64.x_train.raw.dtype == torch.uint8
    assert torch.equal(d8.x_train.float(), d64.x_train.float())  # same scaling, same mean/std
    # integers outside 0..255 keep the float path (their own units)
    np.savez(tmp_path / "wide.npz", x=x.astype(np.int64) * 2, y=y)
    assert read_npz(cfg, tmp_path / "wide.npz", 9, 3, origin)[0].dtype == np.float32


def test_decompression_bomb_is_refused_through_the_imagefolder_source(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_grey(i, (10, 10)), "L").save(root / c / f"{i}.png")
    Image.fromarray(_grey(9, (40, 40)), "L").save(root / "b" / "big.png")  # 1600 px
    for limit in (1000, 500):  # over the limit (PIL's warning), over twice the limit (PIL's error)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(UserError, match=r"unreadable image \(Image size \(1600 pixels\) exceeds limit") as err:
                load_dataset(DataConfig(name="imagefolder", path=str(root), stream_above_mb=None), 8, 3)
        assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]  # no printed warning
        assert "big.png" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1600)  # at the limit: read
    d = load_dataset(DataConfig(name="imagefolder", path=str(root), stream_above_mb=None), 8, 3)
    assert len(d.y_train) + len(d.y_val) == 5
