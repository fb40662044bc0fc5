"""Batches: in-memory batches augmented on the device, the DataLoader of timm's transforms
(samplers seeded per sample, so a resumed run draws what an uninterrupted one would), and
the move to the device.

The host hands the device uint8 images (a quarter of float32's bytes, pinned so the copy is
asynchronous); the device converts and normalizes them and, for in-memory data, shifts and
flips them too. On a CPU the device is the CPU: the same operations in the same order.
"""

import itertools
import random
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import augment
from .dataset import Dataset
from .image import transformed


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
        images = ds.images(train, transform)  # the kept scan: no rescan per run (issue 32)
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
