"""ImageFolder trees (PATH/train/<class>/*.jpg, PATH/val/<class>/*.jpg): scanned once as
torchvision's ImageFolder reads them, less what no one means as data (hidden names), then
identified by content and checked (`identity`) before anything trains."""

import os
from pathlib import Path
from typing import List, Tuple

from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..errors import RoadmapError
from .dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, FolderScan
from .identity import check_no_overlap, identify
from .image import regular_file


def hidden(name: str) -> bool:
    """A dot-name: `.ipynb_checkpoints`, `.DS_Store`, macOS's AppleDouble `._photo.png`, a
    `.git` folder. Never a class nor an image (torchvision's ImageFolder takes them)."""
    return name.startswith(".")


def scan_folder(root: str) -> FolderScan:
    """Walk `root` once, following symbolic links as ImageFolder does, but never one into a
    folder the walk reads already: a link to a parent (train/a/loop -> ..) would read the
    tree again and again, and other classes' images as this one's. Hidden names are skipped;
    a FIFO, socket or device named as an image is refused before anything opens it."""
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not hidden(e.name))
    except OSError as e:
        raise RoadmapError(f"{root}: cannot read it ({e.strerror})") from None
    if not classes:
        raise RoadmapError(f"{root} has no class folders; expected {root}/<class>/*.jpg")
    seen = {os.path.realpath(root): root}
    for c in classes:
        _claim(os.path.join(root, c), seen)
    samples, rels, stats = [], [], []
    for i, c in enumerate(classes):
        count = len(samples)
        for folder, names in _walk(os.path.join(root, c), seen):
            rel_folder = os.path.relpath(folder, root)
            for name in sorted(names):
                path = os.path.join(folder, name)
                if hidden(name) or not has_file_allowed_extension(path, IMG_EXTENSIONS):
                    continue
                st = regular_file(path)  # through a link: the file read
                samples.append((path, i))
                rels.append(os.path.join(rel_folder, name))
                stats.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
        if len(samples) == count:
            raise RoadmapError(
                f"{root}/{c} holds no images ({', '.join(IMG_EXTENSIONS)}); remove the folder or add its images"
            )
    return FolderScan(root, tuple(classes), tuple(samples), tuple(rels), tuple(stats))


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
    """(folder, file names) under `top`, through links, sorted as ImageFolder sorts them,
    hidden folders left out (not walked into)."""

    def fail(e: OSError):  # os.walk skips unreadable folders silently; their images would be missing
        raise RoadmapError(f"{e.filename}: cannot read it ({e.strerror})")

    found = []
    for folder, subfolders, names in os.walk(top, onerror=fail, followlinks=True):
        subfolders[:] = [s for s in subfolders if not hidden(s)]
        for sub in subfolders:  # claimed before os.walk descends: a loop stops here
            _claim(os.path.join(folder, sub), seen)
        found.append((folder, names))
    return sorted(found)


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
    train_scan, val_scan = identify([train_scan, val_scan])
    check_no_overlap(train_scan, val_scan, val.name)
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
