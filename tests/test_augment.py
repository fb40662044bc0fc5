"""The paper's recipe through its augmentations: every RandAugment op at every magnitude, many
images through each preset's train transform, and each preset end to end on an ImageFolder at
its own image size. A 1-in-1,000 failure (Posterize at 0 bits on Pillow >= 13) must not pass
by luck."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_roadmap
from roadmap import augment
from roadmap import data as D
from roadmap.recipe import PRESETS

AUGMENTED = sorted(name for name, r in PRESETS.items() if r.randaug)
FAKE = SimpleNamespace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_the_papers_presets_augment():
    assert {"imagenet", "imagenette", "cifar"} <= set(AUGMENTED)


def _image(size=48):
    arr = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def _rand_augment(transform):
    ops = [op for t in transform.transforms for op in augment._ops(t)]
    assert ops, "the preset's transform has no auto-augmentation"
    return ops


@pytest.mark.parametrize("preset", AUGMENTED)
def test_every_op_at_every_magnitude(preset):
    """Deterministic: each op of the preset's RandAugment at magnitudes 0..10 in steps of 0.1
    (mstd 0.5 draws past 10; timm clips there), on RGB images (both loaders convert to RGB)."""
    transform = D.make_transform(FAKE, PRESETS[preset].img_size, True, PRESETS[preset].randaug)
    for op in _rand_augment(transform):
        img = _image()
        for m in np.linspace(0, 10, 101):
            args = op.level_fn(float(m), op.hparams) if op.level_fn else ()
            out = op.aug_fn(img, *args, **op.kwargs)
            assert out.size == img.size and out.mode == img.mode, (op.name, m)


def test_posterize_at_zero_bits_is_black_not_an_error():
    img = _image()
    out = augment.posterize(img, 0)
    assert out.mode == "RGB" and out.size == img.size and np.asarray(out).max() == 0
    assert np.array_equal(np.asarray(augment.posterize(img, 1)), np.asarray(img) & 0x80)
    assert augment.posterize(img, 8) is img


def test_the_unsafe_op_would_fail_here():
    """The guard above is a guard: timm's own Posterize raises at 0 bits on this Pillow (if a
    future Pillow or timm accepts it again, this test says the fix can go)."""
    from timm.data import auto_augment as aa

    with pytest.raises(ValueError):
        aa.posterize(_image(), 0)


@pytest.mark.parametrize("preset", AUGMENTED)
def test_many_images_through_the_train_transform(preset):
    """5,000 random draws of the whole train transform (P(missing a 1-in-1,000 failure) < 1%;
    the test above is the exact guard)."""
    transform = D.make_transform(FAKE, 32, True, PRESETS[preset].randaug)
    random.seed(0)
    torch.manual_seed(0)
    img = _image(size=36)
    for _ in range(5000):
        x = transform(img)
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)


def test_an_augmentation_error_is_named_as_such(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")

    def broken(img):
        raise ValueError("bits must be between or equal to 1 and 8")

    with pytest.raises(D.RoadmapError, match=r"a.png: the image was read, but .*augmentation's error"):
        D.transformed(Image.open(tmp_path / "a.png"), broken, str(tmp_path / "a.png"))


def _cifar(root, n=32):
    """CIFAR-10 python batches: the cifar preset's own data (in memory, served as PIL images)."""
    import pickle

    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def _folder(root, size, per_class=6):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.jpg"
                )
    return root


@pytest.mark.parametrize("preset", AUGMENTED)
def test_each_augmented_preset_runs_on_an_image_folder_at_its_size(tmp_path, preset):
    """The user's path: `roadmap run --preset P --data <its data>` (an ImageFolder; CIFAR batches
    for `cifar`) at the preset's own image size, through a DataLoader worker, a few updates."""
    size = PRESETS[preset].img_size
    folder = _cifar(tmp_path / "cifar") if preset == "cifar" else _folder(tmp_path / "data", size + size // 8)
    r = run_roadmap(
        "run", "--preset", preset, "--data", folder, "--only", "separate_downsampling", "--out", tmp_path / "out",
        "--set", "max_updates=3", "--set", "batch_size=4", "--set", "eval_batch_size=6", "--set", "width_scale=0.25",
        "--set", "workers=1", "--no-progress", "--no-plot", "--no-reference", "--threads", "1",
        "--set", "global_batch=8",  # imagenet's 4096 would not fit 12 images: 2 micro-batches of 4
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
