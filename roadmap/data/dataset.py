"""A train/val split as the rest of roadmap sees it (`Dataset`), an ImageFolder split's scan
and torch dataset, and the checks every reader shares (labels, classes, shared images)."""

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from ..errors import RoadmapError
from .image import read_image, transformed

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FolderScan:
    """One split of an ImageFolder tree as torchvision's ImageFolder reads it, scanned once:
    its class folders, its (path, class) samples in ImageFolder's order, and per sample its
    path relative to `root`, the (size, mtime_ns, ctime_ns, inode, device) of the file read
    (through links) and, once `identity` has read it, its content digest."""

    root: str
    classes: Tuple[str, ...]
    samples: Tuple[Tuple[str, int], ...]
    rels: Tuple[str, ...]
    stats: Tuple[Tuple[int, int, int, int, int], ...]
    digests: Optional[Tuple[str, ...]] = None

    def lines(self) -> List[str]:
        """What the fingerprint hashes per image: relative path (so its class), size and
        content digest; no time and no absolute path, so a copy is the same data."""
        if self.digests is None:
            raise RoadmapError(f"{self.root}: its images were not identified; load it with load_dataset")
        return [f"{r}\0{st[0]}\0{d}\n" for r, st, d in zip(self.rels, self.stats, self.digests)]


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
    # Folder data: the (train, val) scans, made once by load_dataset (issue 16: every count
    # rescanned the tree), with every image's content digest.
    scans: Optional[Tuple[FolderScan, FolderScan]] = field(default=None, repr=False, compare=False)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def num_train(self) -> int:
        return len(self.train_labels) if self.in_memory else len(self.scan(True).samples)

    @property
    def num_val(self) -> int:
        return len(self.val_labels) if self.in_memory else len(self.scan(False).samples)

    def scan(self, train: bool) -> FolderScan:
        """A folder split as ImageFolder reads it, as load_dataset scanned it."""
        if self.scans is None:
            raise RoadmapError(f"{self.source}: a folder dataset without its scan; load it with load_dataset")
        return self.scans[0 if train else 1]

    def images(self, train: bool, transform=None) -> "Images":
        """A folder split as a torch dataset, from the kept scan (no rescan)."""
        return Images(self.train_folder if train else self.val_folder, transform, self.scan(train))

    def fingerprint(self) -> str:
        """A cheap hash of the content, so a run's key changes when the images do.

        In-memory data: the bytes of every array (~50 MB of Fashion-MNIST hash in ~0.1 s).
        A folder: every image's relative path, size and content digest (`FolderScan.lines`,
        `identity.identify`): a changed image changes it, a copy with new times does not.
        """
        h = hashlib.blake2b(digest_size=8)
        if self.in_memory:
            for t in (self.train_images, self.train_labels, self.val_images, self.val_labels):
                t = t.contiguous()
                h.update(str((tuple(t.shape), str(t.dtype))).encode())
                h.update(memoryview(t.numpy()).cast("B"))
        else:
            for train in (True, False):
                for line in self.scan(train).lines():
                    h.update(line.encode())
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


class Images(ImageFolder):
    """torchvision's ImageFolder over a FolderScan (no rescan, no symbolic link loop, no
    hidden file), reading each image by `image.read_image`'s rules; its errors name the file."""

    def __init__(self, root, transform=None, scan: Optional[FolderScan] = None):
        if scan is None:
            raise RoadmapError(f"{root}: Images needs the folder's scan (Dataset.images)")
        self._scan = scan
        super().__init__(str(root), transform=transform, loader=read_image)
        del self._scan  # DataLoader workers get the samples, not the scan's stats and digests

    def find_classes(self, directory):
        return list(self._scan.classes), {c: i for i, c in enumerate(self._scan.classes)}

    def make_dataset(self, directory, *args, **kwargs):
        return list(self._scan.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        return transformed(self.loader(path), self.transform, path), target


# ---------------------------------------------------------------------------- shared checks


def check_label_range(labels: np.ndarray, num_classes: int, where):
    if not len(labels):
        raise RoadmapError(f"{where} holds no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise RoadmapError(
            f"{where}: label {int(labels.max() if labels.max() >= num_classes else labels.min())} "
            f"is outside 0..{num_classes - 1}"
        )


# Published test sets may hold a few pixel-identical copies of training images; more than
# this share of the test set is a split made wrong.
SHARED_IMAGES_ALLOWED = 0.01


def check_distinct(train: np.ndarray, test: np.ndarray, train_from, test_from, fix: str):
    """Training and scoring on one set would report memorization as accuracy: refuse a test
    set whose images are (more than SHARED_IMAGES_ALLOWED of them) also training images,
    pixel for pixel, with the count."""
    seen = {row.tobytes() for row in train.reshape(len(train), -1)} if train.size else set()
    shared = sum(row.tobytes() in seen for row in test.reshape(len(test), -1)) if test.size else 0
    if not shared or shared <= SHARED_IMAGES_ALLOWED * len(test):
        return
    if shared == len(test) == len(train):
        raise RoadmapError(
            f"{train_from} holds the same images as {test_from} (all {shared}): the run would train "
            f"and score on one set; {fix}"
        )
    raise RoadmapError(
        f"{test_from} shares {shared} of its {len(test)} images with {train_from} (pixel for pixel"
        f"{', all of them' if shared == len(test) else ''}): the run would score on images it "
        f"trained on; {fix}"
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
