"""Image-classification datasets: NumPy arrays in memory, or image files on disk.

Every loader returns a `Dataset` whose images are float32 (n, C, H, W) with pixel values mapped
linearly to [-1, 1], and whose labels are int64 (n,) class indices in [0, num_classes). The
small built-in datasets are arrays in memory; an image folder stays on disk as
`images.ImageFiles` (an array-like decoded per batch) at any scale.

Names accepted by `load_dataset`:

    digits          scikit-learn's bundled 8x8 digits (1,797 images, fixed 80/20 split)
    fashion-mnist   the four IDX files, from data_dir or /usr/share/datasets/fashion-mnist/
    idx:DIR         any MNIST-format folder of four IDX files (.gz or not)
    folder:DIR      one sub-folder of images per class, optionally under train/ and val/ (or test/)

NumPy only (plus scikit-learn and Pillow, imported lazily by the loaders that need them).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WaveError
from .images import ImageFiles, unreadable, unreadable_error

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
CHOICES = ("digits", "fashion-mnist", "idx:DIR", "folder:DIR")
# Fashion-MNIST's label names, by index (its README).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Datasets without an official test split get one drawn with this seed, never with the caller's
# seed: the test set must not change between runs that only vary the training seed.
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of image arrays.

    Images are float32 (n, C, H, W) in [-1, 1]; labels are int64 (n,) in [0, num_classes).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    skipped_images: int = 0  # unreadable image files left out (--skip-bad-images)
    class_names: tuple[str, ...] | None = None  # what each class index means (a folder's class folders), if known
    pixel_max: float = 255.0  # the raw pixel value that maps to 1 (0 maps to -1): 255 for 8-bit images

    def __post_init__(self):
        for split, images, labels in (("train", self.train_images, self.train_labels), ("test", self.test_images, self.test_labels)):
            if labels.ndim != 1 or len(labels) != len(images):
                raise WaveError(f"dataset {self.name}: {len(images)} {split} images but labels of shape {tuple(labels.shape)}: "
                                f"give one class index per image")
            if labels.dtype.kind not in "iu":
                raise WaveError(f"dataset {self.name}: {split} labels are {labels.dtype}, not integers: give class indices 0..K-1")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
                raise WaveError(f"dataset {self.name}: {split} label {bad} is outside [0, {self.num_classes}) for its "
                                f"{self.num_classes} classes: labels must be class indices 0..{self.num_classes - 1}")

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Side length H of the square images, in pixels."""
        h, w = self.train_images.shape[2:]
        if h != w:
            raise WaveError(f"dataset {self.name} has non-square {h}x{w} images: a ViT here needs H == W, resize them first")
        return int(h)

    def describe(self) -> str:
        c, h, w = self.train_images.shape[1:]
        return (f"{self.name}: {len(self.train_labels):,} train / {len(self.test_labels):,} test images, "
                f"{c}x{h}x{w}, {self.num_classes} classes")


def load_dataset(name: str, *, data_dir: str | None = None, subset: int | None = None, seed: int = 0,
                 image_size: int | None = None, augment: bool = False, skip_bad_images: bool = False,
                 channels: int | None = None, auto_augment: str | None = None) -> Dataset:
    """Load a dataset by name (see the module docstring for the names).

    data_dir only applies to fashion-mnist. subset=N keeps N training images drawn by a permutation
    seeded with `seed`; the test set is never subsampled. Same arguments give identical arrays.
    image_size, augment, skip_bad_images and channels apply to folder:DIR, whose images stay on disk
    (`images.ImageFiles`) and are decoded per batch at image_size (default: their own size) and
    with `channels` (default: 1 if every image is grey, else 3); `auto_augment` (with augment): timm's
    RandAugment or AutoAugment policy on the training images.
    """
    check_name(name)
    if auto_augment and not augment:
        raise WaveError(f"--aa {auto_augment} augments training images after their random crop: add --augment")
    if not name.startswith("folder:") and (image_size is not None or augment or skip_bad_images):
        what = "--image-size" if image_size is not None else "--augment" if augment else "--skip-bad-images"
        raise WaveError(f"{what} applies to image folders (folder:DIR), not to {name}: drop it")
    if name == "digits":
        ds = _load_digits()
    elif name == "fashion-mnist":
        ds = _load_fashion_mnist(Path(data_dir or FASHION_MNIST_DIR))
    elif name.startswith("idx:") and name[4:]:
        ds = _load_idx_dir(name, Path(name[4:]).expanduser())
    elif name.startswith("folder:") and name[7:]:
        ds = _load_folder(name, Path(name[7:]).expanduser(), image_size, augment, skip_bad_images, channels, auto_augment)
    return ds if subset is None else subset_of(ds, subset, seed)


def check_name(name: str) -> None:
    """WaveError unless `name` is a dataset name `load_dataset` knows (checked before slow work):
    with the nearest known name for a typo, and `folder:` or `idx:` for a bare folder path."""
    import difflib

    if name in ("digits", "fashion-mnist") or (name.startswith(("idx:", "folder:")) and name.split(":", 1)[1]):
        return
    hint = f"choose one of {', '.join(CHOICES)}"
    close = difflib.get_close_matches(name.lower(), ["digits", "fashion-mnist"], n=1, cutoff=0.75)
    if close:
        hint = f"did you mean {close[0]}? (the names: {', '.join(CHOICES)})"
    elif name and ":" not in name and Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        kind = "folder" if _find_idx_files(folder)[1] else "idx"  # all four IDX files there: an MNIST-format folder
        hint = f"for the folder {name}, pass {kind}:{name}"
    raise WaveError(f"unknown dataset {name!r}: {hint}")


def split_validation(ds: Dataset, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split the TRAIN set of `ds` into a train part and a validation part, stratified by class.

    Returns (train_ds, val_ds). Both train on the same train part (about 1 - fraction of the
    training images); train_ds keeps the real test set, val_ds has the validation part as its
    "test" set, so learning-rate sweeps score on val_ds without ever touching the real test set.
    The split depends only on the labels, `fraction` and `seed`.
    """
    if not 0.0 < fraction < 1.0:
        raise WaveError(f"validation fraction must be in (0, 1), got {fraction}")
    train_idx, val_idx = _stratified_split(ds.train_labels, fraction, seed)
    if len(val_idx) == 0:
        raise WaveError(f"cannot hold out a validation set from the {len(ds.train_labels)} training images of {ds.name}: "
                        f"every class needs at least 2 images")
    x, y = ds.train_images[train_idx], ds.train_labels[train_idx]
    train = dataclasses.replace(ds, name=f"{ds.name} (train part)", train_images=x, train_labels=y)
    held = ds.train_images[val_idx]
    if isinstance(held, ImageFiles):
        held = dataclasses.replace(held, augment=False)  # scored as a test set: never augmented
    val = Dataset(f"{ds.name} (validation part)", x, y, held, ds.train_labels[val_idx], ds.num_classes)
    return train, val


# ----------------------------------------------------------------------------- helpers

def _to_unit_range(x: np.ndarray, max_value: float) -> np.ndarray:
    """Map integer pixels in [0, max_value] to float32 [-1, 1]; the endpoints map exactly."""
    out = x.astype(np.float32)
    out /= np.float32(max_value / 2)
    out -= 1.0
    return out


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with about `fraction` of every class held out, both in original order.

    A class with at least 2 images keeps at least one on each side, so small folders still get a
    test image per class; a class with one image stays on the kept side.
    """
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        held.append(idx[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def subset_of(ds: Dataset, n: int, seed: int) -> Dataset:
    """`n` of `ds`'s training images, drawn by a permutation of `seed` (the test set kept whole)."""
    total = len(ds.train_labels)
    if n < 1:
        raise WaveError(f"subset must be at least 1, got {n}")
    if n > total:
        raise WaveError(f"subset={n} is larger than the {total:,} training images of {ds.name}: pass at most {total}")
    idx = np.random.default_rng(seed).permutation(total)[:n]
    return dataclasses.replace(ds, train_images=ds.train_images[idx], train_labels=ds.train_labels[idx])


# ----------------------------------------------------------------------------- digits

def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import and only needed here

    bunch = load_digits()
    images = _to_unit_range(bunch.images, 16)[:, None]  # (1797, 1, 8, 8), raw values 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = _stratified_split(labels, _TEST_FRACTION, _SPLIT_SEED)
    return Dataset("digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], 10,
                   class_names=tuple(str(d) for d in range(10)), pixel_max=16.0)


# ----------------------------------------------------------------------------- IDX

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dims (n, rows, cols)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dim (n,)
_IDX_ROLES = {  # role -> candidate file stems, in order of preference
    "train images": ("train-images-idx3-ubyte",),
    "train labels": ("train-labels-idx1-ubyte",),
    "test images": ("t10k-images-idx3-ubyte", "test-images-idx3-ubyte"),
    "test labels": ("t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) as a uint8 array.

    magic is 0x00000803 for (n, rows, cols) images or 0x00000801 for (n,) labels. The header is
    checked against the file length, so truncated or padded files fail with a WaveError.
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise WaveError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        got = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else "a file too short for one"
        raise WaveError(f"{path} is not an IDX file of the expected kind: expected magic 0x{magic:08x}, got {got}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise WaveError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise WaveError(f"{path} is {problem}: header {dims} needs {expected:,} bytes, file has {len(data):,}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in `folder`; also return the names of the roles' missing files."""
    found, missing = {}, []
    for role, stems in _IDX_ROLES.items():
        candidates = [folder / (stem + ext) for stem in stems for ext in (".gz", "")]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(stems[0] + "[.gz]")
        else:
            found[role] = hit
    return found, missing


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, _IDX_IMAGES), read_idx(labels_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise WaveError(f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} labels")
    if len(images) == 0 or 0 in images.shape[1:]:
        raise WaveError(f"{images_path} holds no pixels: shape {images.shape}")
    return _to_unit_range(images, 255)[:, None], labels.astype(np.int64)


def _load_idx_files(name: str, files: dict[str, Path], num_classes: int | None = None) -> Dataset:
    x_train, y_train = _read_idx_pair(files["train images"], files["train labels"])
    x_test, y_test = _read_idx_pair(files["test images"], files["test labels"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise WaveError(f"{name}: train images are {x_train.shape[2]}x{x_train.shape[3]} but test images are {x_test.shape[2]}x{x_test.shape[3]}")
    if num_classes is None:  # labels are 0..K-1 by the MNIST convention
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def _load_fashion_mnist(folder: Path) -> Dataset:
    files, missing = _find_idx_files(folder)
    if missing:
        raise WaveError(f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}): install it with "
                        f"`apt-get install dataset-fashion-mnist` or pass --data-dir DIR holding the four IDX files")
    return dataclasses.replace(_load_idx_files("fashion-mnist", files, num_classes=10), class_names=FASHION_MNIST_CLASSES)


def _load_idx_dir(name: str, folder: Path) -> Dataset:
    files, missing = _find_idx_files(folder)
    if missing:
        raise WaveError(f"{name}: IDX files not found in {folder} (missing {', '.join(missing)}): the folder needs "
                        f"train-images/train-labels and t10k- or test-images/labels, MNIST layout, .gz or not")
    return _load_idx_files(name, files)


# ----------------------------------------------------------------------------- image folders

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, from the non-hidden sub-folders of `folder`."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise WaveError(f"class folder {sub} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): add images or remove it")
        classes[sub.name] = files
    return classes


def _headers(paths: list[Path], skip_bad: bool) -> tuple[list[bool], list[tuple[int, int]], list[bool]]:
    """Per image: readable (its pixels decode; checked fully only with `skip_bad`), (width, height)
    and whether it is grey. Without `skip_bad` only headers are read (cheap) and a file that is not
    an image is a WaveError naming it; a truncated one is named when a batch decodes it."""
    from PIL import Image

    ok, sizes, gray = [], [], []
    for p in paths:
        try:
            with Image.open(p) as img:
                size, mode = img.size, img.mode
                if skip_bad:
                    img.load()  # every pixel: what --skip-bad-images promises to check
        except unreadable() as e:
            if not skip_bad:
                raise unreadable_error(p, e) from None
            size, mode = None, None
        ok.append(size is not None)
        sizes.append(size or (0, 0))
        gray.append(mode is None or mode in _GRAY_MODES)
    return ok, sizes, gray


def _class_folders(name: str, root: Path) -> tuple[dict, dict | None, Path | None]:
    """(train, test, the test folder) of an image folder: class -> image paths, from train/ and
    val/ (or test/) when both exist, else (all, None, None)."""
    if not root.is_dir():
        raise WaveError(f"{name}: {root} is not a folder: expected one sub-folder of images per class")
    held_out = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not ((root / "train").is_dir() and held_out is not None):
        return _scan_classes(root), None, None
    train, test = _scan_classes(root / "train"), _scan_classes(held_out)
    if set(test) != set(train):
        only_test, only_train = sorted(set(test) - set(train)), sorted(set(train) - set(test))
        where = f"{held_out.name}/ classes {', '.join(only_test)} have no train/ folder" if only_test else \
            f"train/ classes {', '.join(only_train)} have no {held_out.name}/ folder"
        raise WaveError(f"{name}: {where}: give train/ and {held_out.name}/ the same class folders")
    return train, test, held_out


def _one_square_size(name: str, paths: list[Path], sizes: list[tuple[int, int]], keep: np.ndarray) -> int:
    """The side of the kept images, which must all be one square size (else: --image-size)."""
    first = keep[0]
    other = next((i for i in keep if sizes[i] != sizes[first]), None)
    if other is not None:
        (w, h), (w0, h0) = sizes[other], sizes[first]
        raise WaveError(f"image {paths[other]} is {w}x{h} but {paths[first]} is {w0}x{h0} (width x height): "
                        f"pass --image-size N to resize them all (centre crop, bilinear)")
    if sizes[first][0] != sizes[first][1]:
        raise WaveError(f"{name}: the images are {sizes[first][0]}x{sizes[first][1]}, not square: "
                        f"pass --image-size N to centre-crop and resize them")
    return sizes[first][0]


def _load_folder(name: str, root: Path, image_size: int | None = None, augment: bool = False,
                 skip_bad_images: bool = False, channels: int | None = None, auto_augment: str | None = None) -> Dataset:
    """One sub-folder of images per class, in `train/` and `val/` (or `test/`) when both exist,
    else one folder split 80/20 by class. Images stay on disk (`images.ImageFiles`): they are
    decoded per batch, converted to grey (if all are) or RGB and brought to `image_size`
    (default: the images' own size, which must then be one square size)."""
    train, test, held_out = _class_folders(name, root)
    classes = list(train)
    if len(classes) < 2:
        raise WaveError(f"{name}: found {len(classes)} class folder(s) in {root}, need at least 2 (one sub-folder of images per class)")

    def flatten(by_class: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
        paths = [p for c in by_class for p in by_class[c]]
        labels = np.array([classes.index(c) for c in by_class for _ in by_class[c]], dtype=np.int64)
        return paths, labels

    train_paths, y_train = flatten(train)
    test_paths, y_test = flatten(test) if test is not None else ([], np.zeros(0, np.int64))
    paths, labels = train_paths + test_paths, np.concatenate([y_train, y_test])
    ok, sizes, gray = _headers(paths, skip_bad_images)
    skipped = len(ok) - sum(ok)
    keep = np.flatnonzero(ok)
    is_train = keep < len(train_paths)
    train_paths, y_train = [paths[i] for i in keep[is_train]], labels[keep[is_train]]
    test_paths, y_test = [paths[i] for i in keep[~is_train]], labels[keep[~is_train]]
    if not train_paths:
        raise WaveError(f"{name}: no readable training image is left: check the folder")
    if image_size is None:  # the images' own size: one square size for all
        image_size = _one_square_size(name, paths, sizes, keep)
    if channels is None:
        channels = 1 if all(gray[i] for i in keep) else 3
    elif channels not in (1, 3):
        raise WaveError(f"{name}: images can be read with 1 (grey) or 3 (RGB) channels, not {channels}")
    if test is None:
        train_idx, test_idx = _stratified_split(y_train, _TEST_FRACTION, _SPLIT_SEED)
        test_paths, y_test = [train_paths[i] for i in test_idx], y_train[test_idx]
        train_paths, y_train = [train_paths[i] for i in train_idx], y_train[train_idx]

    if not test_paths:
        raise WaveError(f"{name}: no readable test image is left: every class needs 2 or more images (or a readable "
                        f"{held_out.name if held_out is not None else 'val'}/ image) to be scored on")

    def files(ps: list[Path], aug: bool) -> ImageFiles:
        return ImageFiles(tuple(str(p) for p in ps), channels, int(image_size), aug, auto_augment if aug else None)

    return Dataset(name, files(train_paths, augment), y_train, files(test_paths, False), y_test, len(classes),
                   skipped_images=skipped, class_names=tuple(classes))
