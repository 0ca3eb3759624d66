"""Tests for waveinit.io.datasets on real data: sklearn digits, the installed Fashion-MNIST, and IDX files
and image folders written here."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from waveinit.errors import WaveError
from waveinit.io.datasets import FASHION_MNIST_DIR, Dataset, load_dataset, read_idx, split_validation


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_range_labels():
    ds = load_dataset("digits")
    assert ds.train_images.shape == (1438, 1, 8, 8) and ds.test_images.shape == (359, 1, 8, 8)
    assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int64
    assert ds.train_images.min() == -1.0 and ds.train_images.max() == 1.0
    assert ds.channels == 1 and ds.image_size == 8 and ds.num_classes == 10
    # stratified: every class is in the test set, in about 20% proportion
    counts = np.bincount(ds.test_labels, minlength=10)
    total = counts + np.bincount(ds.train_labels, minlength=10)
    assert np.all(np.abs(counts - 0.2 * total) <= 1)
    assert "digits" in ds.describe() and "1,438 train" in ds.describe()


def test_digits_values_match_sklearn_and_split_is_fixed():
    from sklearn.datasets import load_digits

    raw = load_digits()
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=123)
    for x, y in [(a.train_images, b.train_images), (a.test_labels, b.test_labels)]:
        np.testing.assert_array_equal(x, y)  # the split ignores `seed`
    # the split is a permutation of sklearn's images: same (label, pixels) pairs, exactly rescaled
    x = np.concatenate([a.train_images, a.test_images])[:, 0]
    y = np.concatenate([a.train_labels, a.test_labels])
    got = sorted((int(label), np.round((img + 1) * 8).astype(np.int64).tobytes()) for img, label in zip(x, y))
    want = sorted((int(label), img.astype(np.int64).tobytes()) for img, label in zip(raw.images, raw.target))
    assert got == want


def test_split_validation():
    ds = load_dataset("digits")
    train, val = split_validation(ds, fraction=0.1, seed=0)
    n = len(ds.train_labels)
    assert len(val.test_labels) + len(val.train_labels) == n
    assert abs(len(val.test_labels) - 0.1 * n) <= 10
    np.testing.assert_array_equal(train.train_images, val.train_images)
    np.testing.assert_array_equal(train.test_images, ds.test_images)  # real test set kept, untouched
    assert set(np.unique(val.test_labels)) == set(range(10))
    # the two parts are disjoint: no validation image appears in the train part
    tr = {x.tobytes() for x in val.train_images}
    assert not any(x.tobytes() in tr for x in val.test_images)  # digits has no duplicate images
    again = split_validation(ds, fraction=0.1, seed=0)[1]
    other = split_validation(ds, fraction=0.1, seed=1)[1]
    np.testing.assert_array_equal(again.test_images, val.test_images)
    assert not np.array_equal(other.test_images, val.test_images)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(WaveError):
            split_validation(ds, fraction=bad)


# ----------------------------------------------------------------------------- subset and names

def test_subset_deterministic_and_errors():
    full = load_dataset("digits")
    a = load_dataset("digits", subset=100, seed=3)
    b = load_dataset("digits", subset=100, seed=3)
    c = load_dataset("digits", subset=100, seed=4)
    assert a.train_images.shape == (100, 1, 8, 8)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    np.testing.assert_array_equal(a.test_images, full.test_images)  # test set untouched
    assert len(load_dataset("digits", subset=1438).train_labels) == 1438
    for bad in (0, -5):
        with pytest.raises(WaveError):
            load_dataset("digits", subset=bad)
    with pytest.raises(WaveError) as e:
        load_dataset("digits", subset=5000)
    assert "1,438" in one_line(e)


@pytest.mark.parametrize("name", ["mnist", "", "idx:", "folder:", "Digits"])
def test_unknown_name(name):
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    msg = one_line(e)
    assert "digits" in msg and "fashion-mnist" in msg and "idx:DIR" in msg and "folder:DIR" in msg


def test_image_size_requires_square():
    x = np.zeros((2, 1, 4, 6), np.float32)
    y = np.zeros(2, np.int64)
    with pytest.raises(WaveError):
        _ = Dataset("rect", x, y, x, y, 2).image_size


# ----------------------------------------------------------------------------- fashion-mnist

@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_real_files():
    ds = load_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.train_images.dtype == np.float32 and ds.test_labels.dtype == np.int64
    assert ds.num_classes == 10 and ds.image_size == 28
    assert ds.train_images.min() == -1.0 and ds.train_images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)  # the official split is balanced
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)
    # pixels are k/127.5 - 1 for integer k: check on a slice to keep it fast
    k = (ds.test_images[:500] + 1) * 127.5
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(WaveError) as e:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    msg = one_line(e)
    assert "apt-get" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg


# ----------------------------------------------------------------------------- idx:DIR

def write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x0800 | array.ndim
    data = struct.pack(">I", code) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_idx_dir(root: Path, n_train=50, n_test=20, size=(6, 6), gz=True, test_prefix="t10k", seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 7, n_train, dtype=np.uint8),
        f"{test_prefix}-images-idx3-ubyte": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        f"{test_prefix}-labels-idx1-ubyte": rng.integers(0, 7, n_test, dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 0  # make both endpoints present
    arrays["train-images-idx3-ubyte"][0, 0, 1] = 255
    arrays["train-labels-idx1-ubyte"][0] = 6
    root.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        write_idx(root / (stem + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("gz,prefix", [(True, "t10k"), (False, "t10k"), (False, "test"), (True, "test")])
def test_idx_round_trip(tmp_path, gz, prefix):
    arrays = make_idx_dir(tmp_path, gz=gz, test_prefix=prefix)
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.name == f"idx:{tmp_path}" and ds.num_classes == 7
    assert ds.train_images.shape == (50, 1, 6, 6) and ds.test_images.shape == (20, 1, 6, 6)
    back = np.round((ds.train_images[:, 0] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(back, arrays["train-images-idx3-ubyte"])
    back = np.round((ds.test_images[:, 0] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(back, arrays[f"{prefix}-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, arrays[f"{prefix}-labels-idx1-ubyte"])
    assert ds.train_images.min() == -1.0 and ds.train_images.max() == 1.0


def test_idx_truncated_and_malformed(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    name = f"idx:{tmp_path}"
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()

    img.write_bytes(good[:-7])  # truncated payload
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    assert str(img) in one_line(e) and "truncated" in one_line(e)

    img.write_bytes(good[:10])  # truncated header
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    assert str(img) in one_line(e)

    img.write_bytes(good + b"\0")  # trailing bytes
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    assert str(img) in one_line(e)

    img.write_bytes(struct.pack(">I", 0x0801) + good[4:])  # wrong magic
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    assert str(img) in one_line(e) and "0x00000803" in one_line(e)

    img.write_bytes(good)
    lab = tmp_path / "train-labels-idx1-ubyte"
    write_idx(lab, np.zeros(49, np.uint8))  # count mismatch with the images
    with pytest.raises(WaveError) as e:
        load_dataset(name)
    assert str(lab) in one_line(e) and str(img) in one_line(e)


def test_idx_bad_gzip_and_missing(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-10])  # gzip stream cut short
    with pytest.raises(WaveError) as e:
        load_dataset(f"idx:{tmp_path}")
    assert str(gz) in one_line(e)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(WaveError) as e:
        load_dataset(f"idx:{tmp_path}")
    assert str(gz) in one_line(e)
    gz.unlink()
    with pytest.raises(WaveError) as e:
        load_dataset(f"idx:{tmp_path}")
    assert "t10k-labels-idx1-ubyte" in one_line(e)


def test_read_idx_direct(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz", 0x0801), labels)


# ----------------------------------------------------------------------------- folder:DIR

def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)


def make_folder(root: Path, classes=("cat", "dog", "emu"), per_class=5, size=(6, 6), rgb=False, seed=0) -> dict:
    """Write PNGs; return {path: uint8 array} for checking what was read back."""
    rng = np.random.default_rng(seed)
    written = {}
    for c in classes:
        for i in range(per_class):
            shape = (*size, 3) if rgb else size
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            p = root / c / f"{i:03d}.png"
            save(p, a)
            written[p] = a
    return written


def test_folder_flat_grayscale(tmp_path):
    written = make_folder(tmp_path, per_class=5)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"junk")  # hidden: ignored even though .png
    (tmp_path / ".git").mkdir()  # hidden folder is not a class
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.num_classes == 3 and ds.channels == 1 and ds.image_size == 6
    assert len(ds.train_labels) + len(ds.test_labels) == 15
    assert len(ds.test_labels) == 3  # 20% of 5 per class, stratified
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1, 1, 1])
    # every loaded image is one of the written ones, with the right label (alphabetical classes)
    by_bytes = {a.tobytes(): ["cat", "dog", "emu"].index(p.parent.name) for p, a in written.items()}
    for x, y in zip(np.concatenate([ds.train_images, ds.test_images]), np.concatenate([ds.train_labels, ds.test_labels])):
        raw = np.round((x[0] + 1) * 127.5).astype(np.uint8)
        assert by_bytes[raw.tobytes()] == y
    again = load_dataset(f"folder:{tmp_path}", seed=9)  # the split is fixed, independent of seed
    np.testing.assert_array_equal(again.test_images, ds.test_images)


def test_folder_train_test_rgb(tmp_path):
    make_folder(tmp_path / "train", classes=("a", "b"), per_class=4, size=(5, 5), rgb=True, seed=1)
    make_folder(tmp_path / "test", classes=("a", "b"), per_class=2, size=(5, 5), rgb=True, seed=2)
    # one grayscale image among RGB ones: the whole dataset is still RGB
    save(tmp_path / "train" / "b" / "gray.png", np.full((5, 5), 255, np.uint8))
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.channels == 3 and ds.num_classes == 2
    assert ds.train_images.shape == (9, 3, 5, 5) and ds.test_images.shape == (4, 3, 5, 5)
    np.testing.assert_array_equal(ds.test_labels, [0, 0, 1, 1])
    first = np.asarray(Image.open(tmp_path / "train" / "a" / "000.png"))
    np.testing.assert_array_equal(np.round((ds.train_images[0] + 1) * 127.5).astype(np.uint8), first.transpose(2, 0, 1))
    gray_idx = 4 + 4  # a/000..003, b/000..003, then b/gray.png (files sorted by name)
    np.testing.assert_array_equal(ds.train_images[gray_idx], np.ones((3, 5, 5), np.float32))


def test_folder_errors(tmp_path):
    make_folder(tmp_path, classes=("a", "b"), size=(6, 6))
    save(tmp_path / "b" / "big.png", np.zeros((7, 6), np.uint8))
    with pytest.raises(WaveError) as e:
        load_dataset(f"folder:{tmp_path}")
    msg = one_line(e)
    assert "big.png" in msg and "6x6" in msg and "resize" in msg
    (tmp_path / "b" / "big.png").unlink()

    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(WaveError) as e:
        load_dataset(f"folder:{tmp_path}")
    assert "broken.png" in one_line(e)
    (tmp_path / "a" / "broken.png").unlink()

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.md").write_text("no images here")
    with pytest.raises(WaveError) as e:
        load_dataset(f"folder:{tmp_path}")
    assert str(tmp_path / "c") in one_line(e)

    one = tmp_path / "one"
    make_folder(one, classes=("only",))
    with pytest.raises(WaveError):
        load_dataset(f"folder:{one}")
    with pytest.raises(WaveError):
        load_dataset(f"folder:{tmp_path / 'nope'}")


# ----------------------------------------------------------------------------- 16-bit grayscale

def save16(path: Path, array) -> None:
    """A 16-bit grayscale PNG (Pillow mode I;16) of the uint16 `array`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array, dtype=np.uint16))
    assert img.mode == "I;16"
    img.save(path)


SIXTEEN_BIT = np.array([[0, 1, 255, 256], [1000, 32767, 32768, 40000], [65534, 65535, 12345, 0], [65535, 0, 65535, 0]], np.uint16)


def test_folder_of_16_bit_grayscale_pngs_uses_the_full_range(tmp_path):
    # train/ and test/ given: no random split, images in (class, file name) order
    written = {"train": {}, "test": {}}
    for part, per_class in (("train", 3), ("test", 2)):
        for c, name in enumerate(("dark", "light")):
            for i in range(per_class):
                a = SIXTEEN_BIT if (c + i) % 2 == 0 else 65535 - SIXTEEN_BIT  # both endpoints and mid values, both ways round
                a = np.roll(a, i, axis=1)  # every image different
                save16(tmp_path / part / name / f"{i}.png", a)
                written[part][(name, i)] = a
    with Image.open(tmp_path / "train" / "dark" / "0.png") as img:
        assert img.mode in ("I;16", "I")  # really a 16-bit file on disk, not an 8-bit one
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.num_classes == 2 and ds.channels == 1 and ds.image_size == 4
    assert ds.train_images.dtype == np.float32 and ds.test_images.dtype == np.float32
    assert ds.train_images.shape == (6, 1, 4, 4) and ds.test_images.shape == (4, 1, 4, 4)
    np.testing.assert_array_equal(ds.train_labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.test_labels, [0, 0, 1, 1])
    for part, images in (("train", ds.train_images), ("test", ds.test_images)):
        expected = [written[part][key] for key in sorted(written[part])]  # dark/0.., light/0..
        for got, raw in zip(images, expected):
            want = raw.astype(np.float64) / 32767.5 - 1
            np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-6)
    # the endpoints are exact, and nothing was clipped to 8 bits on the way
    assert ds.train_images.min() == -1.0 and ds.train_images.max() == 1.0
    first = ds.train_images[0, 0]
    assert first[0, 1] == pytest.approx(1 / 32767.5 - 1, abs=1e-7)  # 1 is not 0
    assert first[0, 2] != first[0, 3]  # 255 and 256 differ (8-bit conversion would merge them)
    assert abs(first[1, 2]) < 1e-4  # 32768 is the middle of the range


def test_folder_mixing_8_and_16_bit_grayscale_is_on_one_scale(tmp_path):
    # constant images, one value each, so every loaded image says which file it came from
    files = {  # (class, name) -> (bits, value, expected float)
        ("a", "white8"): (8, 255, 1.0), ("a", "black8"): (8, 0, -1.0), ("a", "mid8"): (8, 51, 51 / 127.5 - 1),
        ("b", "white16"): (16, 65535, 1.0), ("b", "black16"): (16, 0, -1.0), ("b", "mid16"): (16, 13107, 13107 / 32767.5 - 1),
    }
    for (c, name), (bits, value, _) in files.items():
        if bits == 8:
            save(tmp_path / c / f"{name}.png", np.full((3, 3), value, np.uint8))
        else:
            save16(tmp_path / c / f"{name}.png", np.full((3, 3), value, np.uint16))
    with Image.open(tmp_path / "a" / "white8.png") as img8, Image.open(tmp_path / "b" / "white16.png") as img16:
        assert img8.mode == "L" and img16.mode in ("I;16", "I")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.channels == 1 and ds.num_classes == 2 and len(ds.train_labels) + len(ds.test_labels) == 6
    images = np.concatenate([ds.train_images, ds.test_images])
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    assert images.dtype == np.float32
    for img in images:
        assert np.all(img == img.flat[0])  # constant images stay constant
    got = sorted((int(y), round(float(x.flat[0]), 6)) for x, y in zip(images, labels))
    want = sorted((["a", "b"].index(c), round(v, 6)) for (c, _), (_, _, v) in files.items())
    assert got == want
    # pure white and pure black are the same number whatever the bit depth: 255 (8-bit) == 65535 (16-bit) == 1.0
    assert got == [(0, -1.0), (0, round(51 / 127.5 - 1, 6)), (0, 1.0), (1, -1.0), (1, round(13107 / 32767.5 - 1, 6)), (1, 1.0)]
    # 51/255 and 13107/65535 are both exactly 0.2 of the range: the same brightness on one scale
    assert 51 / 127.5 - 1 == pytest.approx(13107 / 32767.5 - 1, abs=1e-12)


def test_16_bit_grayscale_among_rgb_images_is_not_clipped(tmp_path):
    make_folder(tmp_path, classes=("a", "b"), per_class=2, size=(4, 4), rgb=True, seed=3)
    save16(tmp_path / "b" / "zz16.png", SIXTEEN_BIT)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.channels == 3
    images = np.concatenate([ds.train_images, ds.test_images])
    want = SIXTEEN_BIT.astype(np.float64) / 32767.5 - 1
    matches = [x for x in images if np.allclose(x[0], want, atol=1e-6)]
    assert len(matches) == 1
    np.testing.assert_allclose(matches[0], np.broadcast_to(want, (3, 4, 4)), atol=1e-6)  # grey: the same in R, G, B
