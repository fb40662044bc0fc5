"""Bad data and roadmap files, second wave (issue 22): each is one clear line or read right.

The CLI cases go through test_hardening's harness (one forked process each, exit 2, one line
on stderr, no traceback) and stop before any training; the others call the loaders directly.
Every test makes its own tiny data in tmp_path.
"""

import hashlib
import os
import pickle
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_hardening import QUICK, assert_one_clear_line, cli, make_fashion, make_images
from torchvision.datasets import ImageFolder

from roadmap import data as D
from roadmap.custom import load_roadmap
from roadmap.errors import RoadmapError
from roadmap.runner import data_identity

RUN = ("run", "--only", "resnet50", *QUICK)


def run_cli(tmp_path, *args, fashion=None):
    """`roadmap ARGS --out tmp/out` in an empty cwd; Fashion-MNIST from `fashion` (or a tiny set)."""
    cwd, logs = tmp_path / "cwd", tmp_path / "logs"
    cwd.mkdir(parents=True)
    logs.mkdir()
    fashion = fashion or make_fashion(tmp_path / "fmnist")
    env = {
        "ROADMAP_FASHION_MNIST": str(fashion),
        "ROADMAP_TEST_LOGS": str(logs),
        "HOME": str(logs),
        "OMP_NUM_THREADS": "1",
    }
    res = cli(*args, "--out", tmp_path / "out", cwd=cwd, env=env, timeout=120)
    assert list(cwd.iterdir()) == [], "files were written outside --out"
    return res


# ---- CIFAR python batches ----------------------------------------------------------------


def write_batches(folder, n=20, batches=(1,), data=None, labels=None, label_text=False):
    """CIFAR-10 python batches: data_batch_<i> for i in `batches`, and test_batch."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in batches] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()}
        if label_text and name != "test_batch":
            batch["batch_label"] = f"training batch {name[-1]} of 5"
        if name == "data_batch_1":
            batch.update({k: v for k, v in (("data", data), ("labels", labels)) if v is not None})
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def test_cifar_float_pixels_are_refused(tmp_path):
    data = np.random.default_rng(0).random((20, 3072))  # floats in [0, 1]: a cast makes them 0
    res = run_cli(tmp_path, *RUN, "--data", write_batches(tmp_path / "c", data=data))
    assert_one_clear_line(res, "data_batch_1", "float64", "uint8", "multiply by 255")


def test_cifar_ints_out_of_byte_range_are_refused(tmp_path):
    with pytest.raises(RoadmapError, match="int64 outside 0..255"):
        D.load_dataset(str(write_batches(tmp_path / "c", data=np.full((20, 3072), 300))))


def test_cifar_hwc_arrays_are_read_as_hwc(tmp_path):
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    ds = D.load_dataset(str(write_batches(tmp_path / "hwc", data=hwc)))
    assert torch.equal(ds.train_images[:20], torch.from_numpy(hwc).permute(0, 3, 1, 2))
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    ds = D.load_dataset(str(write_batches(tmp_path / "chw", data=chw)))
    assert torch.equal(ds.train_images[:20], torch.from_numpy(chw))
    rows = chw.reshape(20, 3072)  # CIFAR's own layout: R plane, G plane, B plane
    ds = D.load_dataset(str(write_batches(tmp_path / "rows", data=rows)))
    assert torch.equal(ds.train_images[:20], torch.from_numpy(chw))


def test_cifar_other_shapes_name_the_layout(tmp_path):
    with pytest.raises(RoadmapError, match=r"shape \(20, 32, 32\) is not CIFAR's.*N x 3072"):
        D.load_dataset(str(write_batches(tmp_path / "c", data=np.zeros((20, 32, 32), np.uint8))))


def test_cifar_fractional_labels_are_refused(tmp_path):
    labels = [i % 10 + 0.5 for i in range(20)]
    res = run_cli(tmp_path, *RUN, "--data", write_batches(tmp_path / "c", labels=labels))
    assert_one_clear_line(res, "data_batch_1", "label 0.5 is not a whole number", "0..9")


def test_cifar_whole_float_labels_and_text_labels(tmp_path):
    ds = D.load_dataset(str(write_batches(tmp_path / "f", labels=[float(i % 10) for i in range(20)])))
    assert ds.train_labels.dtype == torch.int64 and ds.train_labels[:3].tolist() == [0, 1, 2]
    with pytest.raises(RoadmapError, match="label 'cat' is not a whole number"):
        D.load_dataset(str(write_batches(tmp_path / "t", labels=["cat"] * 20)))
    with pytest.raises(RoadmapError, match="label inf is not a whole number"):
        D.load_dataset(str(write_batches(tmp_path / "i", labels=[float("inf")] * 20)))


def test_cifar_label_range_is_checked(tmp_path):
    with pytest.raises(RoadmapError, match=r"data_batch_1: label 10 is outside 0..9"):
        D.load_dataset(str(write_batches(tmp_path / "c", labels=[10] * 20)))


def test_cifar_missing_batches_are_named(tmp_path):
    res = run_cli(tmp_path, *RUN, "--data", write_batches(tmp_path / "c", batches=(1, 2)))
    assert_one_clear_line(
        res, "lacks data_batch_3, data_batch_4, data_batch_5", "data_batch_1..5", "unpack the whole archive"
    )


def test_cifar_needs_all_five_even_unlabelled(tmp_path):
    # no batch_label: another batch beside data_batch_1 still means the 5-batch set
    with pytest.raises(RoadmapError, match="lacks data_batch_2, data_batch_5"):
        D.load_dataset(str(write_batches(tmp_path / "c", batches=(1, 3, 4), label_text=False)))
    # the real files say "training batch 1 of 5": data_batch_1 alone is not the set
    with pytest.raises(RoadmapError, match="lacks data_batch_2, data_batch_3"):
        D.load_dataset(str(write_batches(tmp_path / "one", batches=(1,), label_text=True)))


def test_cifar_full_set_and_a_hand_made_single_batch_load(tmp_path):
    ds = D.load_dataset(str(write_batches(tmp_path / "c", n=10, batches=range(1, 6))))
    assert (ds.num_train, ds.num_val) == (50, 10)
    ds = D.load_dataset(str(write_batches(tmp_path / "one", batches=(1,), label_text=False)))
    assert ds.num_train == 20


def test_cifar_train_identical_to_test_is_refused(tmp_path):
    folder = write_batches(tmp_path / "c", batches=(1,), label_text=False)
    shutil.copy(folder / "data_batch_1", folder / "test_batch")
    with pytest.raises(RoadmapError, match="the same images as .*test_batch.*train and score on one"):
        D.load_dataset(str(folder))


def test_cifar100_is_checked_the_same_way(tmp_path):
    folder = tmp_path / "c100"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        hwc = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": hwc, "fine_labels": list(range(80, 100))}))
    ds = D.load_dataset(str(folder))
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.train_images.shape == (20, 3, 32, 32)
    shutil.copy(folder / "train", folder / "test")
    with pytest.raises(RoadmapError, match="c100/train holds the same images as .*c100/test"):
        D.load_dataset(str(folder))


# ---- Fashion-MNIST -------------------------------------------------------------------------


def test_fashion_train_files_identical_to_test_files_are_refused(tmp_path):
    fashion = make_fashion(tmp_path / "same", n_train=32, n_val=32)
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copy(fashion / f"train-{kind}-ubyte.gz", fashion / f"t10k-{kind}-ubyte.gz")
    res = run_cli(tmp_path, *RUN, fashion=fashion)
    assert_one_clear_line(
        res,
        "train-images-idx3-ubyte.gz holds the same images as",
        "t10k-images-idx3-ubyte.gz",
        "train and score on one set",
    )


# ---- ImageFolder trees ----------------------------------------------------------------------


def test_a_symlink_loop_is_refused(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=4)
    os.symlink("..", data / "train" / "cat" / "loop")  # os.walk(followlinks=True) loops here
    res = run_cli(tmp_path, *RUN, "--preset", "imagenette", "--data", data)
    assert_one_clear_line(res, str(data / "train" / "cat" / "loop"), "symbolic link", "remove the link")


def test_a_link_into_another_class_is_refused(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=4)
    os.symlink(data / "train" / "dog", data / "train" / "cat" / "dogs")  # dog images labelled cat
    with pytest.raises(RoadmapError, match="are one folder .* through a symbolic link"):
        D.load_dataset(str(data))


def test_symlinked_class_folders_are_followed_and_fingerprinted(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=4)
    elsewhere = make_images(tmp_path / "other", per_class=6, seed=1)
    shutil.rmtree(data / "train" / "dog")
    os.symlink(elsewhere / "train" / "dog", data / "train" / "dog")
    ds = D.load_dataset(str(data))
    assert ds.num_train == 4 + 6 and ds.num_val == 8
    assert [p for p, _ in ds.scan(True).samples] == [p for p, _ in ImageFolder(ds.train_folder).samples]
    before = data_identity(ds)
    # repoint the link at a copy (new times, same bytes): the same data
    copy = shutil.copytree(elsewhere / "train" / "dog", tmp_path / "copy")
    (data / "train" / "dog").unlink()
    os.symlink(copy, data / "train" / "dog")
    assert data_identity(D.load_dataset(str(data))) == before
    # at other images with the same names, sizes and times: not "done earlier"
    other = make_images(tmp_path / "third", per_class=6, seed=2)
    for a, b in zip(sorted((other / "train" / "dog").iterdir()), sorted(copy.iterdir())):
        assert a.stat().st_size == b.stat().st_size
        shutil.copy2(a, b)
    assert data_identity(D.load_dataset(str(data))) != before


def test_the_fingerprint_covers_what_imagefolder_reads_and_no_more(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=4)
    first = D.load_dataset(str(data)).fingerprint()
    (data / "train" / "notes.txt").write_text("not an image\n")  # ImageFolder reads no .txt
    (data / "train" / "cat" / "labels.csv").write_text("x\n")
    (data / "train" / "cat" / "._0.png").write_bytes(b"\0\5\26\7")  # AppleDouble: hidden, not an image
    img = data / "train" / "cat" / "0.png"
    os.utime(img, ns=(time.time_ns(), img.stat().st_mtime_ns + 10**9))  # a new time, the same bytes
    assert D.load_dataset(str(data)).fingerprint() == first
    shutil.copy(data / "train" / "cat" / "1.png", img)  # other bytes under the same name
    assert D.load_dataset(str(data)).fingerprint() != first


def test_a_plain_tree_keeps_its_fingerprint(tmp_path):
    # the declared hash of content (relative path, size, digest of size and bytes of every
    # small image), computed here by hand: run keys stay valid across versions and copies
    data = make_images(tmp_path / "imgs", per_class=3)
    h = hashlib.blake2b(digest_size=8)
    for root in (data / "train", data / "val"):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                raw = Path(dirpath, name).read_bytes()
                assert len(raw) <= 3 * 8192  # read whole
                digest = hashlib.blake2b(f"{len(raw)}\0".encode() + raw, digest_size=16).hexdigest()
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                h.update(f"{rel}\0{len(raw)}\0{digest}\n".encode())
    assert D.load_dataset(str(data)).fingerprint() == h.hexdigest()


def test_samples_match_torchvision_imagefolder_on_a_nested_tree(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    for sub in ("b", "a-x", "a/deeper"):
        (data / "train" / "cat" / sub).mkdir(parents=True)
        shutil.copy(data / "train" / "cat" / "0.png", data / "train" / "cat" / sub / "z.png")
    ds = D.load_dataset(str(data))
    assert list(ds.scan(True).samples) == ImageFolder(ds.train_folder).samples
    assert ds.images(True).samples == ImageFolder(ds.train_folder).samples


def test_the_tree_is_scanned_once_per_dataset(tmp_path, monkeypatch):
    data = make_images(tmp_path / "imgs", per_class=3)
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(D.os, "walk", lambda *a, **k: walks.append(a[0]) or real_walk(*a, **k))
    ds = D.load_dataset(str(data))
    scanned = len(walks)
    assert scanned == 4  # train/cat, train/dog, val/cat, val/dog
    for _ in range(3):
        assert (ds.num_train, ds.num_val) == (6, 6)
        ds.fingerprint()
        data_identity(ds)
        ds.images(True)
        D.folder_loader(ds, 32, 4, train=True, workers=0)  # each run's loader (issue 32: it rescanned)
        D.folder_loader(ds, 32, 4, train=False, workers=0)
    assert len(walks) == scanned


def test_val_identical_to_train_is_refused(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    shutil.rmtree(data / "val")
    os.symlink(data / "train", data / "val")
    with pytest.raises(RoadmapError, match="val/ holds the same files as train/"):
        D.load_dataset(str(data))


def test_a_broken_link_and_an_empty_class_are_named(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    os.symlink(tmp_path / "gone.png", data / "train" / "cat" / "gone.png")
    with pytest.raises(RoadmapError, match="gone.png: cannot read it .*broken symbolic link"):
        D.load_dataset(str(data))
    (data / "train" / "cat" / "gone.png").unlink()
    (data / "train" / "cow").mkdir()
    (data / "val" / "cow").mkdir()
    with pytest.raises(RoadmapError, match="train/cow holds no images"):
        D.load_dataset(str(data))


@pytest.mark.parametrize(
    "field, value, fix", [("train_subset", 10, "none"), ("val_subset", 5, "none"), ("max_shift", 2, "0")]
)
def test_memory_only_recipe_fields_are_refused_on_folders(tmp_path, field, value, fix):
    ds = D.load_dataset(str(make_images(tmp_path / "imgs", per_class=2)))
    recipe = SimpleNamespace(train_subset=None, val_subset=None, max_shift=0, randaug=None)
    D.check_recipe_fits(ds, recipe)
    with pytest.raises(RoadmapError, match=f"{field}={value}: .*ImageFolder tree.*--set {field}={fix}"):
        D.check_recipe_fits(ds, SimpleNamespace(**{**vars(recipe), field: value}))


def test_the_demo_preset_on_a_folder_names_max_shift(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=2)
    res = run_cli(tmp_path, *RUN, "--data", data)  # demo: max_shift=2, ignored on folders
    assert_one_clear_line(res, "max_shift=2", "ImageFolder tree", "--set max_shift=0")
    res = run_cli(tmp_path / "b", *RUN, "--preset", "imagenette", "--set", "train_subset=8", "--data", data)
    assert_one_clear_line(res, "train_subset=8", "in-memory data", "--set train_subset=none")


# ---- roadmap files ----------------------------------------------------------------------------


def test_yaml_duplicate_key_is_refused(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "dup.yaml"
    path.write_text("step:\n  - name: k\n    changes: {kernel_size: 5, kernel_size: 9}\n")
    res = run_cli(tmp_path, "run", "--roadmap", path, *QUICK)
    assert_one_clear_line(res, f"{path}, line 3", "'kernel_size' appears twice")


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    pytest.importorskip("yaml")
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    lines += ["step: *i"]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(RoadmapError, match=r"bomb.yaml, line 1: .*anchors and aliases .* not allowed"):
        load_roadmap(path)
    assert time.perf_counter() - start < 5


def test_yaml_errors_are_one_line_with_the_line_number(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("step:\n  - name: k\n    changes: {kernel_size: 5\n")
    with pytest.raises(RoadmapError, match=r"bad.yaml, line \d+: not valid YAML: ") as err:
        load_roadmap(path)
    assert "\n" not in str(err.value)
    path.write_text("start: widen\nstep:\n  - paper_step: gelu\n")
    assert load_roadmap(path).names() == ["widen", "gelu"]


def test_toml_with_a_bom_loads(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'start = "widen"\n[[step]]\npaper_step = "gelu"\n')
    assert load_roadmap(path).names() == ["widen", "gelu"]
    path.write_bytes(b"\xef\xbb\xbf" + b'start = "widen"\n[[step]]\npaper_step = "gelx"\n')
    with pytest.raises(RoadmapError, match=r"bom.toml, line 3"):  # line numbers unchanged
        load_roadmap(path)
