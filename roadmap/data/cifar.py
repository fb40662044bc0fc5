"""CIFAR-10/100 python batches: read without running code (`CifarUnpickler`) and checked
against CIFAR's shapes (N x 3072 uint8 pixels, one label per image, labels in range), with a
test batch that repeats the training images refused."""

import codecs
import pickle
import re
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from ..errors import RoadmapError
from .dataset import Dataset, check_distinct, check_label_range
from .image import regular_file

try:  # numpy >= 2
    from numpy._core import multiarray as np_multiarray
    from numpy._core import numeric as np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as np_multiarray
    from numpy.core import numeric as np_numeric


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


def present(path: Path) -> bool:
    """A batch is there if any file is (a FIFO among them: `_read_batch` refuses it by name)."""
    return path.exists() and not path.is_dir()


def is_cifar(path: Path) -> bool:
    return present(path / "data_batch_1") or (present(path / "train") and present(path / "test"))


def load_cifar(path: Path) -> Dataset:
    if present(path / "data_batch_1"):
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
    check_distinct(
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
    others = any(present(path / f"data_batch_{i}") for i in range(2, 6))
    total = int(said.group(1)) if said else 5 if others else 1
    names = [f"data_batch_{i}" for i in range(1, total + 1)]
    missing = [n for n in names + ["test_batch"] if not present(path / n)]
    if missing:
        raise RoadmapError(
            f"{path} lacks {', '.join(missing)}: CIFAR-10 is data_batch_1..{total} "
            f"and test_batch, and training on part of it would go unnoticed; unpack "
            "the whole archive (cifar-10-python.tar.gz)"
        )
    return names


def _read_batch(where: Path) -> dict:
    """One CIFAR python batch (a pickle, read by CifarUnpickler), its keys as str."""
    regular_file(where, "unpack the CIFAR archive again")
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
    check_label_range(y, num_classes, where)
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
