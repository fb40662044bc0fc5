"""Datasets: the embedded Fashion-MNIST, CIFAR python batches and ImageFolder trees.

Small datasets (Fashion-MNIST, CIFAR) are held in memory as uint8 tensors and augmented on
whole batches: on a CPU this is several times faster than a DataLoader of PIL images. Large
ones (ImageFolder) go through timm's transforms (RandAugment, random erasing) and a
DataLoader, as in the paper's recipe.

The readers, by what they read:
- `image`: one image file, by declared rules (regular files only, every mode to RGB or refused);
- `idx`: Fashion-MNIST's IDX files; `cifar`: CIFAR's python batches;
- `imagefolder`: ImageFolder trees (scan, hidden names); `identity`: their content digests,
  header checks and train/val overlap;
- `dataset`: the `Dataset` every reader returns and the checks they share;
- `loader`: batches, samplers, transforms and the move to the device.
`from roadmap import data as D` and the names below are the interface the rest of roadmap uses.
"""

import os
from pathlib import Path

from ..errors import RoadmapError
from .cifar import CifarUnpickler, is_cifar, load_cifar
from .dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MEMORY_ONLY,
    Dataset,
    FolderScan,
    Images,
    check_classes,
    check_recipe_fits,
)
from .idx import FASHION_FILES, GET_FASHION_MNIST, find_fashion_mnist, load_fashion_mnist, read_idx
from .image import read_image, regular_file, to_rgb, transformed
from .imagefolder import load_image_folder, scan_folder
from .loader import (
    MemoryImages,
    OnDevice,
    RunSampler,
    SeededSamples,
    batches_per_epoch,
    epoch_order,
    folder_loader,
    make_transform,
    memory_eval_batches,
    memory_run_batches,
    memory_train_batches,
    normalize,
    rank_indices,
    sample_seed,
    shift_flip,
    shift_flip_draws,
    to_device,
)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # where the Debian package puts it

__all__ = [
    "FASHION_FILES",
    "FASHION_MNIST_DIRS",
    "GET_FASHION_MNIST",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEMORY_ONLY",
    "CifarUnpickler",
    "Dataset",
    "FolderScan",
    "Images",
    "MemoryImages",
    "OnDevice",
    "RoadmapError",
    "RunSampler",
    "SeededSamples",
    "batches_per_epoch",
    "check_classes",
    "check_recipe_fits",
    "epoch_order",
    "find_fashion_mnist",
    "folder_loader",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "make_transform",
    "memory_eval_batches",
    "memory_run_batches",
    "memory_train_batches",
    "normalize",
    "rank_indices",
    "read_idx",
    "read_image",
    "regular_file",
    "sample_seed",
    "scan_folder",
    "shift_flip",
    "shift_flip_draws",
    "to_device",
    "to_rgb",
    "transformed",
]


def load_dataset(data: str = "fashion-mnist") -> Dataset:
    """`fashion-mnist`, or a PATH to an ImageFolder tree or to CIFAR-10/100 python batches."""
    if data in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist(FASHION_MNIST_DIRS)
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
    if is_cifar(path):
        return load_cifar(path)
    if (path / "train").is_dir():
        return load_image_folder(path)
    raise RoadmapError(
        f"--data {data}: not a dataset layout roadmap knows. Expected an ImageFolder tree "
        f"({path}/train/<class>/*.jpg and {path}/val/<class>/*.jpg), CIFAR-10 python batches "
        f"({path}/data_batch_1..5 and test_batch) or CIFAR-100 ({path}/train and test)."
    )
