"""Datasets: the embedded Fashion-MNIST, CIFAR python batches and ImageFolder trees.

Small datasets (Fashion-MNIST, CIFAR) are held in memory as uint8 tensors and
augmented on whole batches: on a CPU this is several times faster than a
DataLoader of PIL images. Large ones (ImageFolder) go through timm's transforms
(RandAugment, random erasing) and a DataLoader, as in the paper's recipe.
"""

import codecs
import gzip
import hashlib
import itertools
import os
import pickle
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from . import augment
from .errors import RoadmapError

try:  # numpy >= 2
    from numpy._core import multiarray as np_multiarray
    from numpy._core import numeric as np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as np_multiarray
    from numpy.core import numeric as np_numeric

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GET_FASHION_MNIST = (
    "Fashion-MNIST (the default data) was not found. Get it with one of:\n"
    "  sudo apt-get install dataset-fashion-mnist      (Debian/Ubuntu, offline mirror, 31 MB)\n"
    "  export ROADMAP_FASHION_MNIST=/dir/with/the/four/idx.gz/files\n"
    "  python -c \"import torchvision; torchvision.datasets.FashionMNIST('~/.cache/roadmap', download=True)\""
    "  (needs internet)\n"
    "or train on other data with --data PATH (an ImageFolder tree with train/ and val/, or CIFAR python batches)."
)


@dataclass
class Dataset:
    """A train/val split. In-memory data has uint8 NCHW tensors; folder data has torch datasets."""

    name: str
    source: str
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    train_images: Optional[torch.Tensor] = None
    train_labels: Optional[torch.Tensor] = None
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None
    train_folder: Optional[str] = None
    val_folder: Optional[str] = None
    classes: Optional[List[str]] = None
    # Folder data: the (train, val) scans, made once (issue 16: every count rescanned the tree).
    scans: Optional[Tuple["FolderScan", "FolderScan"]] = field(default=None, repr=False, compare=False)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def num_train(self) -> int:
        return len(self.train_labels) if self.in_memory else len(self.scan(True).samples)

    @property
    def num_val(self) -> int:
        return len(self.val_labels) if self.in_memory else len(self.scan(False).samples)

    def scan(self, train: bool) -> "FolderScan":
        """A folder split as ImageFolder reads it, scanned on first use and kept."""
        if self.scans is None:
            self.scans = (scan_folder(self.train_folder), scan_folder(self.val_folder))
        return self.scans[0 if train else 1]

    def images(self, train: bool, transform=None) -> "Images":
        """A folder split as a torch dataset, from the kept scan (no rescan)."""
        return Images(self.train_folder if train else self.val_folder, transform, self.scan(train))

    def fingerprint(self) -> str:
        """A cheap hash of the content, so a run's key changes when the images do.

        In-memory data: the bytes of every array (~50 MB of Fashion-MNIST hash in ~0.1 s).
        A folder: what ImageFolder reads, from the kept scan: every image's relative path,
        size and modification time, through symbolic links (see `scan_folder`).
        """
        h = hashlib.blake2b(digest_size=8)
        if self.in_memory:
            for t in (self.train_images, self.train_labels, self.val_images, self.val_labels):
                t = t.contiguous()
                h.update(str((tuple(t.shape), str(t.dtype))).encode())
                h.update(memoryview(t.numpy()).cast("B"))
        else:
            for train in (True, False):
                for stamp in self.scan(train).stamps:
                    h.update(stamp.encode())
        return h.hexdigest()

    def subset(self, train: Optional[int] = None, val: Optional[int] = None) -> "Dataset":
        """The first `train` / `val` images of a fixed shuffle (in-memory data only)."""
        if not self.in_memory or (not train and not val):
            return self
        g = torch.Generator().manual_seed(0)
        ti = torch.randperm(len(self.train_labels), generator=g)[: train or None]
        vi = torch.randperm(len(self.val_labels), generator=g)[: val or None]
        return Dataset(
            self.name,
            self.source,
            self.num_classes,
            self.mean,
            self.std,
            self.train_images[ti],
            self.train_labels[ti],
            self.val_images[vi],
            self.val_labels[vi],
            classes=self.classes,
        )


# ---------------------------------------------------------------------------- loading


def load_dataset(data: str = "fashion-mnist") -> Dataset:
    """`fashion-mnist`, or a PATH to an ImageFolder tree or to CIFAR-10/100 python batches."""
    if data in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist()
    path = Path(os.path.expanduser(data))
    if not path.exists():
        raise RoadmapError(
            f"--data {data}: no such file or directory. Expected 'fashion-mnist', an ImageFolder "
            "tree (PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg) or CIFAR python batches "
            "(PATH/data_batch_1..5 + test_batch, or PATH/train + test for CIFAR-100)."
        )
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    elif (path / "cifar-100-python").is_dir():
        path = path / "cifar-100-python"
    if (path / "data_batch_1").is_file() or ((path / "train").is_file() and (path / "test").is_file()):
        return load_cifar(path)
    if (path / "train").is_dir():
        return load_image_folder(path)
    raise RoadmapError(
        f"--data {data}: not a dataset layout roadmap knows. Expected an ImageFolder tree "
        f"({path}/train/<class>/*.jpg and {path}/val/<class>/*.jpg), CIFAR-10 python batches "
        f"({path}/data_batch_1..5 and test_batch) or CIFAR-100 ({path}/train and test)."
    )


def find_fashion_mnist() -> Path:
    env = os.environ.get("ROADMAP_FASHION_MNIST")
    if env:  # asked for by name: a missing or incomplete folder is an error, not a fallback
        folder = Path(os.path.expanduser(env))
        if not folder.is_dir():
            raise RoadmapError(
                f"ROADMAP_FASHION_MNIST={env}: no such folder; point it at the "
                "folder with the four Fashion-MNIST idx(.gz) files, or unset it"
            )
        missing = [f for f in FASHION_FILES.values() if not _idx_file(folder, f)]
        if missing:
            raise RoadmapError(
                f"ROADMAP_FASHION_MNIST={env}: the folder lacks {', '.join(m + '(.gz)' for m in missing)}"
            )
        return folder
    for c in (*FASHION_MNIST_DIRS, os.path.expanduser("~/.cache/roadmap/FashionMNIST/raw")):
        if c and all(_idx_file(Path(c), f) for f in FASHION_FILES.values()):
            return Path(c)
    raise RoadmapError(GET_FASHION_MNIST)


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """IDX (the MNIST file format): big-endian header of dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or damaged .gz among them
        raise RoadmapError(
            f"{path}: cannot read it ({e}); the file is damaged, re-install dataset-fashion-mnist"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RoadmapError(f"{path} is not an uint8 IDX file; re-install dataset-fashion-mnist")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise RoadmapError(f"{path} is truncated (its header names {ndim} dimensions)")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RoadmapError(f"{path} is truncated ({data.size} bytes for shape {tuple(dims)})")
    return data.reshape(tuple(int(d) for d in dims))


def load_fashion_mnist() -> Dataset:
    folder = find_fashion_mnist()
    files = {k: _idx_file(folder, v) for k, v in FASHION_FILES.items()}
    arr = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        images, labels = arr[f"{split}_images"], arr[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise RoadmapError(
                f"{files[f'{split}_images']} and {files[f'{split}_labels']} do not "
                f"match: images {images.shape}, labels {labels.shape}; expected "
                "N x 28 x 28 images and N labels"
            )
        _check_labels(labels, 10, files[f"{split}_labels"])
    _check_distinct(
        arr["train_images"],
        arr["test_images"],
        files["train_images"],
        files["test_images"],
        "re-install dataset-fashion-mnist or restore the t10k files",
    )
    as_images = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # N,1,28,28 uint8
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return Dataset(
        "fashion-mnist",
        str(folder),
        10,
        (0.2860,),
        (0.3530,),
        as_images(arr["train_images"]),
        torch.from_numpy(arr["train_labels"].astype(np.int64)),
        as_images(arr["test_images"]),
        torch.from_numpy(arr["test_labels"].astype(np.int64)),
        classes=classes,
    )


def _check_labels(labels: np.ndarray, num_classes: int, where):
    if not len(labels):
        raise RoadmapError(f"{where} holds no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise RoadmapError(
            f"{where}: label {int(labels.max() if labels.max() >= num_classes else labels.min())} "
            f"is outside 0..{num_classes - 1}"
        )


def _check_distinct(train: np.ndarray, test: np.ndarray, train_from, test_from, fix: str):
    """Training and scoring on one set would report memorization as accuracy."""
    if train.shape == test.shape and np.array_equal(train, test):
        raise RoadmapError(
            f"{train_from} holds the same images as {test_from}: the run would train and score on one set; {fix}"
        )


def check_classes(ds: Dataset, what: str = ""):
    """A classifier needs two classes in its training data (and images to validate on)."""
    if ds.in_memory:
        found = len(torch.unique(ds.train_labels)) if len(ds.train_labels) else 0
        if not len(ds.val_labels):
            raise RoadmapError(f"{ds.source}{what}: no validation images")
    else:
        found = ds.num_classes
    if found < 2:
        raise RoadmapError(
            f"{ds.source}{what}: the training images hold {found} class; a classifier needs at least two"
        )


class CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR's python batches without running code.

    The batches are pickles (the format CIFAR ships), and unpickling can call anything a file
    names. This unpickler admits only what a batch holds: dicts, lists, str/bytes, numbers and
    numpy arrays (their reconstructor, ndarray, dtype and scalar); any other name is refused.
    """

    SAFE = {
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # numpy < 2 and numpy >= 2 name the module of the array reconstructors differently
        **{(f"{m}.multiarray", "_reconstruct"): np_multiarray._reconstruct for m in ("numpy.core", "numpy._core")},
        **{(f"{m}.multiarray", "scalar"): np_multiarray.scalar for m in ("numpy.core", "numpy._core")},
        **{(f"{m}.numeric", "_frombuffer"): np_numeric._frombuffer for m in ("numpy.core", "numpy._core")},
    }

    def find_class(self, module, name):
        if (module, name) not in self.SAFE:
            raise pickle.UnpicklingError(
                f"it asks for {module}.{name}, which a CIFAR batch never holds; refused, nothing was run"
            )
        return self.SAFE[(module, name)]


def load_cifar(path: Path) -> Dataset:
    if (path / "data_batch_1").is_file():
        first = _read_batch(path / "data_batch_1")
        names = _cifar10_batches(path, first)
        batches = [first] + [_read_batch(path / n) for n in names[1:]]
        parts = [_cifar_arrays(d, path / n, 10) for n, d in zip(names, batches)]
        test = _cifar_arrays(_read_batch(path / "test_batch"), path / "test_batch", 10)
        name, num_classes = "cifar10", 10
        train_from = path / names[0] if len(names) == 1 else f"{path}/data_batch_1..{len(names)}"
    else:
        parts = [_cifar_arrays(_read_batch(path / "train"), path / "train", 100)]
        test = _cifar_arrays(_read_batch(path / "test"), path / "test", 100)
        name, num_classes, train_from = "cifar100", 100, path / "train"
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    _check_distinct(
        x, test[0], train_from, path / ("test_batch" if num_classes == 10 else "test"), "unpack the CIFAR archive again"
    )
    t = lambda a: torch.from_numpy(a)
    return Dataset(
        name,
        str(path),
        num_classes,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        t(x),
        t(y),
        t(test[0]),
        t(test[1]),
    )


def _cifar10_batches(path: Path, first: dict) -> List[str]:
    """The training batches to read: data_batch_1..5, every one (a missing one would train on
    part of CIFAR-10 unnoticed). Only a data_batch_1 with no other batch and no "training
    batch 1 of N" label stands alone: a small set made by hand."""
    said = re.search(r"of (\d+)", str(first.get("batch_label", "")))
    others = any((path / f"data_batch_{i}").is_file() for i in range(2, 6))
    total = int(said.group(1)) if said else 5 if others else 1
    names = [f"data_batch_{i}" for i in range(1, total + 1)]
    missing = [n for n in names + ["test_batch"] if not (path / n).is_file()]
    if missing:
        raise RoadmapError(
            f"{path} lacks {', '.join(missing)}: CIFAR-10 is data_batch_1..{total} "
            f"and test_batch, and training on part of it would go unnoticed; unpack "
            "the whole archive (cifar-10-python.tar.gz)"
        )
    return names


def _read_batch(where: Path) -> dict:
    """One CIFAR python batch (a pickle, read by CifarUnpickler), its keys as str."""
    try:
        with open(where, "rb") as f:
            d = CifarUnpickler(f, encoding="latin1").load()
    except EOFError:
        raise RoadmapError(f"{where} is empty or cut short; not a CIFAR python batch") from None
    except (
        OSError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as e:
        raise RoadmapError(
            f"{where} is not a CIFAR python batch ({e}); expected the "
            "'python version' archive from the CIFAR website, unpacked"
        ) from None
    if not isinstance(d, dict):
        raise RoadmapError(f"{where} is not a CIFAR python batch (it holds a {type(d).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_arrays(d: dict, where: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """A batch's images (N x 3 x 32 x 32 uint8) and labels (N int64), checked."""
    labels = d.get("labels", d.get("fine_labels"))
    if "data" not in d or labels is None:
        raise RoadmapError(
            f"{where} is not a CIFAR python batch (keys {sorted(map(str, d))}; expected data and labels or fine_labels)"
        )
    x = _cifar_pixels(d["data"], where)
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise RoadmapError(f"{where}: its labels are not a list of integers ({e})") from None
    if y.ndim != 1 or len(y) != len(x):
        raise RoadmapError(f"{where}: {len(x)} images but {y.size} labels")
    fraction = (~np.isfinite(y) | (y != np.floor(y))) if y.dtype.kind == "f" else None
    if y.dtype.kind not in "iu" and (fraction is None or fraction.any()):
        # casting would truncate 2.7 to 2, or fail on text
        bad = (y[fraction] if fraction is not None else y).tolist()[0]
        raise RoadmapError(
            f"{where}: label {bad!r} is not a whole number; CIFAR labels are integers 0..{num_classes - 1}"
        )
    _check_labels(y, num_classes, where)
    return x, y.astype(np.int64)


def _cifar_pixels(data, where: Path) -> np.ndarray:
    """N x 3 x 32 x 32 uint8 from CIFAR's N x 3072 rows (three 32 x 32 planes, R, G, B), or
    from N x 3 x 32 x 32 or N x 32 x 32 x 3 arrays (a reshape alone would scramble the last)."""
    try:
        x = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise RoadmapError(
            f"{where} is not a CIFAR python batch ({e}); its data must be N x 3072 bytes (32 x 32 x RGB)"
        ) from None
    if x.dtype != np.uint8:  # a cast would turn floats in [0, 1] into black and 1/255
        if x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() > 255)):
            raise RoadmapError(
                f"{where}: its pixels are {x.dtype}"
                f"{'' if x.dtype.kind not in 'iu' else ' outside 0..255'}, not "
                "bytes 0..255; CIFAR batches hold uint8 pixels (floats in [0, 1]: "
                "multiply by 255 and save as uint8)"
            )
        x = x.astype(np.uint8)
    if x.ndim == 2 and x.shape[1] == 3072:
        return x.reshape(-1, 3, 32, 32)
    if x.ndim == 4 and x.shape[1:] == (3, 32, 32):
        return x
    if x.ndim == 4 and x.shape[1:] == (32, 32, 3):  # HWC, as numpy images and Keras hold them
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise RoadmapError(
        f"{where}: data of shape {x.shape} is not CIFAR's; it must be N x 3072 "
        "bytes (32 x 32 x RGB planes), or N x 3 x 32 x 32 or N x 32 x 32 x 3"
    )


# ---------------------------------------------------------------------------- ImageFolder trees


@dataclass(frozen=True)
class FolderScan:
    """One split of an ImageFolder tree as torchvision's ImageFolder reads it, scanned once:
    its class folders, its (path, class) samples in ImageFolder's order, and per sample the
    line the fingerprint hashes."""

    root: str
    classes: Tuple[str, ...]
    samples: Tuple[Tuple[str, int], ...]
    stamps: Tuple[str, ...]


def scan_folder(root: str) -> FolderScan:
    """Walk `root` once, following symbolic links as ImageFolder does, but never one into a
    folder the walk reads already: a link to a parent (train/a/loop -> ..) would read the
    tree again and again, and other classes' images as this one's."""
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as e:
        raise RoadmapError(f"{root}: cannot read it ({e.strerror})") from None
    if not classes:
        raise RoadmapError(f"{root} has no class folders; expected {root}/<class>/*.jpg")
    seen = {os.path.realpath(root): root}
    for c in classes:
        _claim(os.path.join(root, c), seen)
    real_root = os.path.realpath(root)
    samples, stamps = [], []
    for i, c in enumerate(classes):
        count = len(samples)
        for folder, names in _walk(os.path.join(root, c), seen):
            real_folder = os.path.realpath(folder)
            for name in sorted(names):
                path = os.path.join(folder, name)
                if has_file_allowed_extension(path, IMG_EXTENSIONS):
                    samples.append((path, i))
                    stamps.append(_stamp(path, root, real_root, os.path.join(real_folder, name)))
        if len(samples) == count:
            raise RoadmapError(
                f"{root}/{c} holds no images ({', '.join(IMG_EXTENSIONS)}); remove the folder or add its images"
            )
    return FolderScan(root, tuple(classes), tuple(samples), tuple(stamps))


def _claim(folder: str, seen: dict):
    """Mark `folder` read; two paths to one folder mean a link loop or a doubly read folder."""
    real = os.path.realpath(folder)
    if real in seen:
        raise RoadmapError(
            f"{folder} and {seen[real]} are one folder ({real}) through a symbolic "
            "link: ImageFolder would read its images twice, or in a loop, and under "
            "the wrong class; remove the link"
        )
    seen[real] = folder


def _walk(top: str, seen: dict) -> List[Tuple[str, List[str]]]:
    """(folder, file names) under `top`, through links, sorted as ImageFolder sorts them."""

    def fail(e: OSError):  # os.walk skips unreadable folders silently; their images would be missing
        raise RoadmapError(f"{e.filename}: cannot read it ({e.strerror})")

    found = []
    for folder, subfolders, names in os.walk(top, onerror=fail, followlinks=True):
        for sub in subfolders:  # claimed before os.walk descends: a loop stops here
            _claim(os.path.join(folder, sub), seen)
        found.append((folder, names))
    return sorted(found)


def _stamp(path: str, root: str, real_root: str, real_guess: str) -> str:
    """The fingerprint's line for one image: relative path, size and mtime of the file read
    (through links), and where it really is when a link leads elsewhere (a repointed link)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RoadmapError(f"{path}: cannot read it ({e.strerror}); a broken symbolic link?") from None
    rel = os.path.relpath(path, root)
    real = os.path.realpath(path) if os.path.islink(path) else real_guess
    moved = f"\0{real}" if real != os.path.join(real_root, rel) else ""
    return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}{moved}\n"


class Images(ImageFolder):
    """torchvision's ImageFolder over a FolderScan (made here unless given: no rescan, no
    symbolic link loop), whose errors name the file (a truncated or unreadable image)."""

    def __init__(self, root, transform=None, scan: Optional[FolderScan] = None):
        self._scan = scan or scan_folder(str(root))
        super().__init__(str(root), transform=transform)
        del self._scan  # DataLoader workers get the samples, not the fingerprint's stamps

    def find_classes(self, directory):
        return list(self._scan.classes), {c: i for i, c in enumerate(self._scan.classes)}

    def make_dataset(self, directory, *args, **kwargs):
        return list(self._scan.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except Exception as e:
            raise RoadmapError(f"{path}: cannot read this image ({type(e).__name__}: {e})") from None
        return transformed(image, self.transform, path), target


def transformed(image, transform, name):
    """`transform(image)`, with an error raised inside it named as the transform's (an
    augmentation's bug), not blamed on the image, which was read."""
    if transform is None:
        return image
    try:
        return transform(image)
    except Exception as e:
        raise RoadmapError(
            f"{name}: the image was read, but the train/eval transform failed on it "
            f"({type(e).__name__}: {e}); this is an augmentation's error, not the image's: "
            "try --set randaug=none and report it"
        ) from None


def load_image_folder(path: Path) -> Dataset:
    val = next((path / v for v in ("val", "validation", "test") if (path / v).is_dir()), None)
    if val is None:
        raise RoadmapError(f"{path} has train/ but no val/ folder; expected {path}/val/<class>/*.jpg")
    train_scan, val_scan = scan_folder(str(path / "train")), scan_folder(str(val))
    if train_scan.classes != val_scan.classes:
        raise RoadmapError(f"{path}: train/ and {val.name}/ have different class folders")
    if len(train_scan.classes) < 2:
        raise RoadmapError(
            f"{path}/train has {len(train_scan.classes)} class folder "
            f"({', '.join(train_scan.classes)}); a classifier needs at least two"
        )
    if train_scan.stamps == val_scan.stamps:
        raise RoadmapError(
            f"{path}: {val.name}/ holds the same files as train/: the run would "
            f"train and score on one set; give {val.name}/ its own images"
        )
    return Dataset(
        path.name,
        str(path),
        len(train_scan.classes),
        IMAGENET_MEAN,
        IMAGENET_STD,
        train_folder=str(path / "train"),
        val_folder=str(val),
        classes=list(train_scan.classes),
        scans=(train_scan, val_scan),
    )


# Recipe fields that only in-memory data applies: on a folder they would be ignored while the
# run's record and key claimed them.
MEMORY_ONLY = {
    "train_subset": ("the first N training images", "none"),
    "val_subset": ("the first N validation images", "none"),
    "max_shift": ("the random shift in pixels", "0"),
}


def check_recipe_fits(ds: Dataset, recipe) -> None:
    """Refuse recipe fields this data would silently ignore (one line: the field, the data)."""
    if ds.in_memory:
        return
    for name, (what, off) in MEMORY_ONLY.items():
        value = getattr(recipe, name, None)
        if value:
            raise RoadmapError(
                f"{name}={value}: {name} ({what}) applies to in-memory data (Fashion-MNIST, CIFAR) "
                f"only; {ds.source} is an ImageFolder tree, where it would be ignored while the "
                f"run's record claims it; use --set {name}={off}"
                + (" (the demo and reference presets set max_shift=2)" if name == "max_shift" else "")
            )


# ---------------------------------------------------------------------------- batches
# The host hands the device uint8 images (a quarter of float32's bytes, pinned so the copy is
# asynchronous); the device converts and normalizes them and, for in-memory data, shifts and
# flips them too. On a CPU the device is the CPU: the same operations in the same order.


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """`t` on `device`; through pinned memory on CUDA, so the host does not wait for the copy."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def normalize(images: torch.Tensor, ds: Dataset, img_size: int) -> torch.Tensor:
    """uint8 NCHW -> normalized float, 3 channels, img_size x img_size, on the images' device.

    Images smaller than img_size by a few pixels are padded (28 -> 32 keeps Fashion-MNIST
    pixels exact); otherwise resized. Grayscale becomes 3 channels to match RGB stems.
    """
    x = images.float().div_(255)
    mean = torch.tensor(ds.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    h = x.shape[-1]
    if h != img_size:
        if 0 < img_size - h <= 8:
            p = img_size - h
            x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2), value=float((0 - ds.mean[0]) / ds.std[0]))
        else:
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def shift_flip_draws(n: int, max_shift: int, hflip: bool, g: torch.Generator) -> torch.Tensor:
    """Each image's random translation and flip, drawn on the host: n x (dx, dy, flip)."""
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=g)
    flip = (torch.rand(n, 1, generator=g) < 0.5) if hflip else torch.zeros(n, 1, dtype=torch.bool)
    return torch.cat([dx, dy, flip.long()], dim=1)


def shift_flip(x: torch.Tensor, max_shift: int, draws: torch.Tensor) -> torch.Tensor:
    """Per-image translation (reflect-padded crop) and horizontal flip, in one gather on x's device."""
    n, _, h, w = x.shape
    dev = x.device
    dx, dy, flip = draws[:, :1], draws[:, 1:2], draws[:, 2:].bool()
    padded = F.pad(x, (max_shift,) * 4, mode="reflect") if max_shift else x
    cols = torch.where(flip, torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev)) + dx
    rows = torch.arange(h, device=dev) + dy  # n, h
    nhwc = padded.permute(0, 2, 3, 1)
    out = nhwc[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def rank_indices(order: torch.Tensor, batch_size: int, world_size: int, rank: int, start: int = 0):
    """Split `order` into global batches of batch_size x world_size (dropping the rest) and
    keep this rank's slice of each, from global batch `start` on."""
    global_batch = batch_size * world_size
    n_batches = len(order) // global_batch
    batches = order[: n_batches * global_batch].view(n_batches, world_size, batch_size)
    return batches[start:, rank]


def batches_per_epoch(ds: Dataset, batch_size: int, world_size: int = 1) -> int:
    return ds.num_train // (batch_size * world_size)


def memory_train_batches(
    ds: Dataset,
    img_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int = 0,
    max_shift: int = 0,
    hflip: bool = True,
    device: str = "cpu",
    world_size: int = 1,
    rank: int = 0,
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of in-memory training batches from batch `start` on, augmented on `device`."""
    order = epoch_order(len(ds.train_labels), seed, epoch)
    for b, idx in enumerate(rank_indices(order, batch_size, world_size, rank, start), start=start):
        # Augmentation randomness depends on (seed, epoch, batch, rank) only: resumable.
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + b * 101 + rank)
        x = normalize(to_device(ds.train_images[idx], device), ds, img_size)
        if max_shift or hflip:
            x = shift_flip(x, max_shift, to_device(shift_flip_draws(len(idx), max_shift, hflip, g), device))
        yield x, to_device(ds.train_labels[idx], device)


def memory_run_batches(
    ds: Dataset,
    img_size: int,
    batch_size: int,
    seed: int,
    start: int,
    total: int,
    max_shift: int = 0,
    hflip: bool = True,
    device: str = "cpu",
    world_size: int = 1,
    rank: int = 0,
):
    """The batches of updates start..total-1 of a run, across epochs: update u is batch
    u % per_epoch of epoch u // per_epoch (every epoch has per_epoch full batches)."""
    per_epoch = batches_per_epoch(ds, batch_size, world_size)
    u = start
    while u < total:
        epoch, b = divmod(u, per_epoch)
        yield from itertools.islice(
            memory_train_batches(ds, img_size, batch_size, seed, epoch, b, max_shift, hflip, device, world_size, rank),
            total - u,
        )
        u = min(total, (epoch + 1) * per_epoch)


def memory_eval_batches(ds: Dataset, img_size: int, batch_size: int, device: str = "cpu"):
    for i in range(0, len(ds.val_labels), batch_size):
        x = normalize(to_device(ds.val_images[i : i + batch_size], device), ds, img_size)
        yield x, to_device(ds.val_labels[i : i + batch_size], device)


class MemoryImages(torch.utils.data.Dataset):
    """In-memory uint8 images served as PIL images, for timm's PIL transforms (RandAugment)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        arr = self.images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        return transformed(img, self.transform, f"image {i} of the in-memory split"), int(self.labels[i])


class SeededSamples(torch.utils.data.Dataset):
    """`images`, read by (index, seed): every RNG a transform may use is seeded from the
    sample's own seed first, so which worker reads it, and where a run resumed, change nothing.
    A plain index (evaluation) reads without seeding."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            random.seed(seed)  # timm's crops and RandAugment
            np.random.seed(seed)
            torch.manual_seed(seed)  # torchvision's flip
            return self.images[index]
        return self.images[key]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at `position` of an epoch's order (< 2**31)."""
    return ((seed * 1_000_003 + epoch) * 16_777_259 + position) % (2**31 - 1)


class RunSampler(torch.utils.data.Sampler):
    """This rank's batches of updates start..total-1 of a run, across epochs, as lists of
    (index, seed): one sampler, so one DataLoader, for the whole run."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, world_size: int = 1, rank: int = 0):
        self.n, self.batch_size, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.world_size, self.rank = world_size, rank

    def __len__(self):
        return max(0, self.total - self.start)

    def __iter__(self):
        per_epoch = self.n // (self.batch_size * self.world_size)
        batches = None
        for u in range(self.start, self.total):
            epoch, b = divmod(u, per_epoch)
            if batches is None or b == 0:
                order = epoch_order(self.n, self.seed, epoch)
                batches = rank_indices(order, self.batch_size, self.world_size, self.rank)
            first = (b * self.world_size + self.rank) * self.batch_size
            yield [(i, sample_seed(self.seed, epoch, first + j)) for j, i in enumerate(batches[b].tolist())]


def folder_loader(
    ds: Dataset,
    img_size: int,
    batch_size: int,
    train: bool,
    workers: int,
    seed: int = 0,
    start: int = 0,
    total: Optional[int] = None,
    randaug: Optional[str] = None,
    hflip: bool = True,
    world_size: int = 1,
    rank: int = 0,
    pin: bool = False,
):
    """A DataLoader of uint8 batches through timm's PIL transforms (ImageFolder, or in-memory
    data when the recipe asks for RandAugment), built once per run.

    Training: the batches of updates start..total-1 (one epoch if total is None), in
    `epoch_order`; evaluation: the validation split in order. Normalizing and random erasing
    are left to the device (timm's prefetcher split: `use_prefetcher=True`).
    """
    transform = make_transform(ds, img_size, train, randaug, hflip)
    if ds.in_memory:
        images = MemoryImages(
            ds.train_images if train else ds.val_images, ds.train_labels if train else ds.val_labels, transform
        )
    else:
        images = Images(ds.train_folder if train else ds.val_folder, transform=transform)
    if train:
        total = start + batches_per_epoch(ds, batch_size, world_size) if total is None else total
        order = dict(batch_sampler=RunSampler(len(images), batch_size, seed, start, total, world_size, rank))
    else:
        order = dict(batch_size=batch_size, shuffle=False)
    # persistent: evaluating the raw and the EMA weights reuses one set of workers
    return torch.utils.data.DataLoader(
        SeededSamples(images),
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
        **order,
    )


def make_transform(ds: Dataset, img_size: int, train: bool, randaug: Optional[str] = None, hflip: bool = True):
    """timm's PIL transform of the recipe (uint8 out: normalizing and erasing happen on the
    device), with its auto-augmentation made safe for the installed Pillow (`augment`)."""
    from timm.data import create_transform

    transform = create_transform(
        img_size,
        is_training=train,
        auto_augment=randaug if train else None,
        hflip=0.5 if (train and hflip) else 0.0,
        interpolation="bicubic",
        mean=ds.mean,
        std=ds.std,
        scale=(0.08, 1.0) if train else None,
        crop_pct=None if train else 0.875,
        color_jitter=0.0 if randaug else 0.4,
        use_prefetcher=True,
    )
    augment.make_safe(transform)
    return transform


class OnDevice:
    """The uint8 batches of `loader`, moved to `device` and normalized there (re-iterable)."""

    def __init__(self, loader, ds: Dataset, img_size: int, device):
        self.loader, self.ds, self.img_size, self.device = loader, ds, img_size, device

    def __iter__(self):
        for x, y in self.loader:
            yield normalize(to_device(x, self.device), self.ds, self.img_size), to_device(y, self.device)
