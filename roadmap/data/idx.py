"""Fashion-MNIST: where its four IDX files are, and reading them checked against their
headers (magic, dimensions, sizes) and against each other (images and labels, train and test)."""

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import RoadmapError
from .dataset import Dataset, check_distinct, check_label_range
from .image import regular_file

FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SIDE = 28  # Fashion-MNIST's images are 28 x 28 (the recipe's mean, std and padding assume it)
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REINSTALL = "re-install dataset-fashion-mnist"
GET_FASHION_MNIST = (
    "Fashion-MNIST (the default data) was not found. Get it with one of:\n"
    "  sudo apt-get install dataset-fashion-mnist      (Debian/Ubuntu, offline mirror, 31 MB)\n"
    "  export ROADMAP_FASHION_MNIST=/dir/with/the/four/idx.gz/files\n"
    "  python -c \"import torchvision; torchvision.datasets.FashionMNIST('~/.cache/roadmap', download=True)\""
    "  (needs internet)\n"
    "or train on other data with --data PATH (an ImageFolder tree with train/ and val/, or CIFAR python batches)."
)


def find_fashion_mnist(dirs: Sequence[str]) -> Path:
    """The folder of the four files: ROADMAP_FASHION_MNIST, else the first of `dirs` (then
    torchvision's download folder) that holds them all."""
    env = os.environ.get("ROADMAP_FASHION_MNIST")
    if env:  # asked for by name: a missing or incomplete folder is an error, not a fallback
        folder = Path(os.path.expanduser(env))
        if not folder.is_dir():
            raise RoadmapError(
                f"ROADMAP_FASHION_MNIST={env}: no such folder; point it at the "
                "folder with the four Fashion-MNIST idx(.gz) files, or unset it"
            )
        missing = [f for f in FASHION_FILES.values() if not idx_file(folder, f)]
        if missing:
            raise RoadmapError(
                f"ROADMAP_FASHION_MNIST={env}: the folder lacks {', '.join(m + '(.gz)' for m in missing)}"
            )
        return folder
    for c in (*dirs, os.path.expanduser("~/.cache/roadmap/FashionMNIST/raw")):
        if c and all(idx_file(Path(c), f) for f in FASHION_FILES.values()):
            return Path(c)
    raise RoadmapError(GET_FASHION_MNIST)


def idx_file(folder: Path, stem: str) -> Optional[Path]:
    """`stem`.gz or `stem` in `folder`, whatever kind of file it is (read_idx refuses a FIFO
    by name, rather than calling the folder incomplete)."""
    for name in (stem + ".gz", stem):
        if os.path.lexists(folder / name) and not (folder / name).is_dir():
            return folder / name
    return None


def read_idx(path: Path, ndim: Optional[int] = None) -> np.ndarray:
    """IDX (the MNIST file format): a magic of 0, 0, type (0x08: uint8), number of dimensions,
    then each dimension as a big-endian int32, then exactly that many bytes of data."""
    regular_file(path, f"{REINSTALL} or point ROADMAP_FASHION_MNIST at the real files")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or damaged .gz among them
        raise RoadmapError(f"{path}: cannot read it ({e}); the file is damaged, {REINSTALL}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RoadmapError(f"{path} is not an uint8 IDX file; {REINSTALL}")
    if ndim is not None and raw[3] != ndim:
        raise RoadmapError(
            f"{path}: its IDX header names {raw[3]} dimensions; this file holds "
            f"{'images (N x 28 x 28: 3)' if ndim == 3 else 'labels (N: 1)'}; {REINSTALL}"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise RoadmapError(f"{path} is truncated (its header names {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if any(d <= 0 for d in dims):
        raise RoadmapError(f"{path}: its IDX header gives the shape {dims}; every dimension must be positive")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if data.size < expected:
        raise RoadmapError(f"{path} is truncated ({data.size} bytes for shape {dims}); {REINSTALL}")
    if data.size > expected:
        raise RoadmapError(
            f"{path} holds {data.size - expected} bytes past the {expected} its header's shape {dims} "
            f"needs: not the file its header describes; {REINSTALL}"
        )
    if ndim == 3 and dims[1:] != (SIDE, SIDE):
        shape = "non-square " if dims[1] != dims[2] else ""
        raise RoadmapError(
            f"{path}: its header gives {shape}images of {dims[1]} x {dims[2]}; Fashion-MNIST's are "
            f"{SIDE} x {SIDE}; {REINSTALL}, or train on other data with --data PATH"
        )
    return data.reshape(dims)


def load_fashion_mnist(dirs: Sequence[str]) -> Dataset:
    folder = find_fashion_mnist(dirs)
    files = {k: idx_file(folder, v) for k, v in FASHION_FILES.items()}
    arr = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in files.items()}
    for split in ("train", "test"):
        images, labels = arr[f"{split}_images"], arr[f"{split}_labels"]
        if len(images) != len(labels):
            raise RoadmapError(
                f"{files[f'{split}_images']} and {files[f'{split}_labels']} do not "
                f"match: images {images.shape}, labels {labels.shape}; expected "
                "N x 28 x 28 images and N labels"
            )
        check_label_range(labels, 10, files[f"{split}_labels"])
    check_distinct(
        arr["train_images"],
        arr["test_images"],
        files["train_images"],
        files["test_images"],
        "re-install dataset-fashion-mnist or restore the t10k files",
    )
    as_images = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # N,1,28,28 uint8
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
        classes=CLASSES,
    )
