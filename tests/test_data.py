"""Dataset loading: Fashion-MNIST discovery, CIFAR batches and ImageFolder trees built here."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from roadmap import data as D
from roadmap.errors import RoadmapError
from roadmap.plan import paper_plan
from roadmap.recipe import settings
from roadmap.train import train_run


def make_image_folder(root, classes=("cat", "dog"), per_class=12, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                arr[..., c] = 255  # a learnable colour cue
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return root


def make_cifar(root, n=64):
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_fashion_mnist_is_found_and_shaped():
    ds = D.load_dataset("fashion-mnist")
    assert (ds.num_train, ds.num_val, ds.num_classes) == (60000, 10000, 10)
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape[1:] == (1, 28, 28)
    x, y = next(D.memory_train_batches(ds, 32, 16, seed=0, epoch=0, max_shift=2))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)


def test_missing_fashion_mnist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.delenv("ROADMAP_FASHION_MNIST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RoadmapError, match="apt-get install dataset-fashion-mnist"):
        D.load_dataset("fashion-mnist")
    # a folder named by ROADMAP_FASHION_MNIST is an error when wrong, never a silent fallback
    monkeypatch.setenv("ROADMAP_FASHION_MNIST", str(tmp_path))
    with pytest.raises(RoadmapError, match="ROADMAP_FASHION_MNIST=.*lacks train-images-idx3-ubyte"):
        D.load_dataset("fashion-mnist")


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert torch.equal(D.epoch_order(100, 3, 1), D.epoch_order(100, 3, 1))
    assert not torch.equal(D.epoch_order(100, 3, 1), D.epoch_order(100, 3, 2))


def test_rank_slices_cover_the_global_batch():
    order = torch.arange(20)
    r0, r1 = D.rank_indices(order, 4, 2, 0), D.rank_indices(order, 4, 2, 1)
    assert torch.equal(torch.cat([r0[0], r1[0]]), torch.arange(8))
    assert len(r0) == 2  # 20 // 8 full global batches


def test_image_folder_trains_through_timm_transforms(tmp_path):
    ds = D.load_dataset(str(make_image_folder(tmp_path / "tiny")))
    assert ds.num_classes == 2 and not ds.in_memory and ds.num_train == 24
    recipe, ex = settings(
        "imagenette",
        ["img_size=32", "batch_size=8", "max_updates=2", "workers=0", "width_scale=0.25", "eval_batch_size=8"],
    )
    spec = paper_plan(only=["separate_downsampling"])[0]
    m = train_run(
        spec.name, recipe.apply(spec.cfg, ds.num_classes), recipe, ex, ds, 0, torch.device("cpu"), progress=False
    )
    assert m["updates"] == 2 and 0 <= m["top1"] <= 100


def test_cifar_batches_load(tmp_path):
    ds = D.load_dataset(str(make_cifar(tmp_path)))
    assert ds.name == "cifar10" and ds.train_images.shape == (64, 3, 32, 32)
    recipe, ex = settings("cifar", ["batch_size=16", "max_updates=2", "workers=0", "width_scale=0.25", "randaug=null"])
    spec = paper_plan(only=["resnet50"])[0]
    m = train_run(
        spec.name, recipe.apply(spec.cfg, ds.num_classes), recipe, ex, ds, 0, torch.device("cpu"), progress=False
    )
    assert m["updates"] == 2


def test_malformed_inputs_name_the_problem(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(RoadmapError, match="not a CIFAR python batch"):
        D.load_dataset(str(tmp_path))
    (tmp_path / "folder" / "train" / "a").mkdir(parents=True)
    with pytest.raises(RoadmapError, match="no val/ folder"):
        D.load_dataset(str(tmp_path / "folder"))


def test_kernel_sweep_plan():
    specs = paper_plan(only=["large_kernel"], kernel_sizes=[3, 5, 11])
    assert [s.cfg.kernel_size for s in specs] == [3, 5, 11]
    assert [s.paper_top1 for s in specs] == [79.92, 80.35, 80.47]
    with pytest.raises(RoadmapError, match="large_kernel"):
        paper_plan(only=["gelu"], kernel_sizes=[5])
