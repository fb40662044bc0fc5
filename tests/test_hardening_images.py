"""Images and datasets, third wave (issue 31, items 2, 3 and 8): every image read by declared
rules, datasets identified by content, every header checked before anything trains.

Each test builds its odd file or folder in tmp_path and asserts the one-line error or the
right value; they call the readers directly (the CLI path is test_hardening's truncated-image
case). The session's image cache is its own ($XDG_CACHE_HOME, set in conftest).
"""

import gzip
import json
import os
import pickle
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from test_hardening import make_fashion, make_images, write_idx

from helpers import rekey
from roadmap import data as D
from roadmap.data import identity
from roadmap.errors import RoadmapError
from roadmap.plan import data_identity, paper_plan, plan_runs
from roadmap.recipe import get_preset


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def read(path):
    img = D.read_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)


# ---- modes ----------------------------------------------------------------------------------


def test_a_16_bit_png_keeps_its_range(tmp_path):
    arr = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # read back as 16-bit
    out = read(tmp_path / "deep.png")
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    assert (out[..., 0] == out[..., 2]).all()
    # 30000 of 65535 is mid-grey, not clipped to white as a plain convert("RGB") makes it
    mid = np.unravel_index(np.abs(arr.astype(int) - 30000).argmin(), arr.shape)
    assert abs(int(out[mid][0]) - round(int(arr[mid]) * 255 / 65535)) <= 1
    assert len(np.unique(out[..., 0])) > 200  # the gradient kept, not a few clipped levels


def test_a_float_tiff_is_not_black_and_out_of_range_floats_are_refused(tmp_path):
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    out = read(tmp_path / "f.tif")
    assert out[..., 1].max() == 255 and abs(out[..., 1].mean() - 127.5) < 1
    Image.fromarray(arr * 300, mode="F").save(tmp_path / "big.tif")
    with pytest.raises(RoadmapError, match=r"big.tif: a float image with values 0..300; .*\[0, 1\]") as err:
        D.read_image(tmp_path / "big.tif")
    one_line(err)


def test_palette_and_alpha_are_composited_on_the_declared_background(tmp_path):
    bg = np.array(D.image.ALPHA_BACKGROUND)
    # a palette image whose colour 0 (black) is transparent: those pixels are the background
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    out = read(tmp_path / "p.png")
    assert (out[0, 0] == (200, 10, 10)).all() and (out[1, 1] == bg).all()
    # RGBA: a fully transparent red pixel is background; an opaque one is red; half is blended
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 0, 255, 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read(tmp_path / "a.png")
    assert (out[0, 0] == bg).all() and (out[0, 1] == (255, 0, 0)).all()
    assert out[1, 0, 0] == 255 and 120 <= out[1, 0, 1] <= 135
    # LA: grey with alpha, the same rule
    Image.fromarray(np.dstack([np.zeros((2, 2), np.uint8), np.array([[0, 255], [0, 255]], np.uint8)]), "LA").save(
        tmp_path / "la.png"
    )
    out = read(tmp_path / "la.png")
    assert (out[0, 0] == bg).all() and (out[0, 1] == 0).all()


def test_cmyk_jpeg_bilevel_and_ycbcr_are_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = read(tmp_path / "cmyk.jpg").reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60
    one = Image.new("1", (4, 4), 0)
    one.putpixel((1, 1), 1)
    one.save(tmp_path / "one.png")
    out = read(tmp_path / "one.png")
    assert (out[1, 1] == 255).all() and (out[0, 0] == 0).all()
    ycc = D.to_rgb(Image.new("RGB", (2, 2), (0, 0, 255)).convert("YCbCr"), "x")
    assert ycc.mode == "RGB" and np.asarray(ycc)[0, 0, 2] > 240


def test_a_mode_without_a_rule_is_refused_by_name():
    with pytest.raises(RoadmapError, match="x.tif: images of Pillow mode LAB are not read .* convert it to RGB"):
        D.to_rgb(Image.new("LAB", (2, 2)), "x.tif")


# ---- files that are not images, and names that are not data ----------------------------------


@pytest.mark.timeout(60)
def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=2)
    os.mkfifo(data / "val" / "cat" / "pipe.png")
    fashion = make_fashion(tmp_path / "fm")
    (fashion / "t10k-labels-idx1-ubyte.gz").unlink()
    os.mkfifo(fashion / "t10k-labels-idx1-ubyte.gz")
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    os.mkfifo(cifar / "test_batch")
    errors = []

    def load_all():  # in a thread: opening a FIFO would block it, not the test
        for what in (str(data), str(cifar)):
            try:
                D.load_dataset(what)
            except RoadmapError as e:
                errors.append(str(e))
        os.environ["ROADMAP_FASHION_MNIST"] = str(fashion)
        try:
            D.load_dataset("fashion-mnist")
        except RoadmapError as e:
            errors.append(str(e))
        finally:
            del os.environ["ROADMAP_FASHION_MNIST"]

    worker = threading.Thread(target=load_all, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "a FIFO was opened: the reader hangs"
    assert errors[0].startswith(f"{data / 'val' / 'cat' / 'pipe.png'} is a FIFO (named pipe), not a file;")
    assert errors[1].startswith(f"{cifar / 'test_batch'} is a FIFO (named pipe), not a file;")
    assert errors[2].startswith(f"{fashion / 't10k-labels-idx1-ubyte.gz'} is a FIFO (named pipe), not a file;")
    assert all("\n" not in e for e in errors)


def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    for split in ("train", "val"):
        (data / split / ".ipynb_checkpoints").mkdir()
        shutil.copy(data / split / "cat" / "0.png", data / split / ".ipynb_checkpoints" / "0-checkpoint.png")
    (data / "train" / "cat" / ".thumbs").mkdir()
    shutil.copy(data / "train" / "cat" / "0.png", data / "train" / "cat" / ".thumbs" / "0.png")
    (data / "train" / "dog" / "._1.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    ds = D.load_dataset(str(data))
    assert ds.classes == ["cat", "dog"] and (ds.num_train, ds.num_val) == (6, 6)
    assert not any("/." in p for p, _ in ds.scan(True).samples)


# ---- headers: checked at load, before anything trains ----------------------------------------


def test_a_truncated_image_in_val_fails_at_load_naming_it_and_the_fix(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    arr = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(data / "val" / "dog" / "photo.jpg", quality=95)
    whole = (data / "val" / "dog" / "photo.jpg").read_bytes()
    D.load_dataset(str(data))  # whole: read
    (data / "val" / "dog" / "photo.jpg").write_bytes(whole[: len(whole) // 2])  # a download cut short
    with pytest.raises(RoadmapError) as err:
        D.load_dataset(str(data))
    line = one_line(err)
    assert line.startswith(f"{data / 'val' / 'dog' / 'photo.jpg'}: cannot read this image (")
    assert line.endswith("nothing has trained: remove or replace it, then rerun the same command")
    # bytes after the end marker (some cameras append data) are not a truncated image
    (data / "val" / "dog" / "photo.jpg").write_bytes(whole + b"TRAILER" * 1000)
    assert D.load_dataset(str(data)).num_val == 7


def test_header_checks_and_digests_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # empty: the session's knows these images
    data = make_images(tmp_path / "imgs", per_class=3)
    reads, checks = [], []
    real_read, real_check = identity._read_sampled, identity.check_image
    monkeypatch.setattr(identity, "_read_sampled", lambda p, n: reads.append(p) or real_read(p, n))
    monkeypatch.setattr(identity, "check_image", lambda p, t: checks.append(p) or real_check(p, t))
    first = D.load_dataset(str(data)).fingerprint()
    assert len(reads) == len(checks) == 12
    reads.clear(), checks.clear()
    assert D.load_dataset(str(data)).fingerprint() == first
    assert reads == checks == []  # nothing read again
    # a copy without times (cp -r, rsync without -t): read once, not checked again
    copy = shutil.copytree(data, tmp_path / "scratch" / "imgs", copy_function=shutil.copyfile)
    assert D.load_dataset(str(copy)).fingerprint() == first
    assert len(reads) == 12 and checks == []
    # new check rules: every image checked again (its tail read by the check), none re-hashed
    reads.clear()
    monkeypatch.setattr(identity, "CHECKS", identity.CHECKS + 1)
    assert D.load_dataset(str(data)).fingerprint() == first
    assert reads == [] and len(checks) == 12
    # no usable cache folder: the same answer, only slower
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not_a_folder"))
    assert D.load_dataset(str(data)).fingerprint() == first


# ---- identity by content ---------------------------------------------------------------------


def test_a_copy_with_new_times_is_the_same_data_and_resumes_the_same_runs(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    copy = shutil.copytree(data, tmp_path / "node-local" / "imgs", copy_function=shutil.copyfile)
    a, b = data_identity(D.load_dataset(str(data))), data_identity(D.load_dataset(str(copy)))
    assert a == b
    specs, recipe = paper_plan(only=["resnet50"]), get_preset("imagenette")
    assert plan_runs(specs, recipe, a, [0])[0].key == plan_runs(specs, recipe, b, [0])[0].key  # its checkpoint


def test_a_changed_image_changes_the_fingerprint(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=3)
    big = np.random.default_rng(1).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    Image.fromarray(big).save(data / "train" / "cat" / "big.png")  # > 3 x 8 KiB: sampled, not whole
    first = D.load_dataset(str(data)).fingerprint()
    big[60, 60] ^= 0xFF  # one pixel: other bytes in the middle of the file, same size
    Image.fromarray(big).save(data / "train" / "cat" / "big.png")
    assert D.load_dataset(str(data)).fingerprint() != first
    shutil.move(data / "train" / "cat" / "0.png", data / "train" / "dog" / "moved.png")  # a relabelled image
    second = D.load_dataset(str(data)).fingerprint()
    assert second != first


def test_a_val_split_overlapping_train_is_refused_with_the_count(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=4)
    for i in range(3):  # copies under new names and times, as a hand-made split may hold
        shutil.copyfile(data / "train" / "dog" / f"{i}.png", data / "val" / "cat" / f"copy{i}.png")
    with pytest.raises(RoadmapError) as err:
        D.load_dataset(str(data))
    line = one_line(err)
    assert "val/ shares 3 of its 11 images with train/ (byte for byte, e.g. val/cat/copy0.png = " in line
    assert "remove them from val/" in line


def test_a_cifar_test_batch_inside_train_is_refused_with_the_count(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 3072), dtype=np.uint8)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": train, "labels": list(np.arange(40) % 10)}))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": train[5:25], "labels": list(np.arange(20) % 10)}))
    with pytest.raises(RoadmapError, match=r"test_batch shares 20 of its 20 images with .*data_batch_1 \(pixel for"):
        D.load_dataset(str(tmp_path))
    # one shared image in a hundred is what published test sets may hold: read
    test = rng.integers(0, 256, (100, 3072), dtype=np.uint8)
    test[0] = train[0]
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": test, "labels": list(np.arange(100) % 10)}))
    assert D.load_dataset(str(tmp_path)).num_val == 100


# ---- IDX headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("non-square", "its header gives non-square images of 28 x 30; Fashion-MNIST's are 28 x 28"),
        ("magic", "is not an uint8 IDX file"),
        ("ndim", "its IDX header names 2 dimensions; this file holds images"),
        ("truncated", "is truncated (23000 bytes for shape (64, 28, 28))"),
        ("extra", "holds 100 bytes past the 50176 its header's shape (64, 28, 28) needs"),
    ],
)
def test_idx_files_are_checked_against_their_headers(tmp_path, monkeypatch, kind, needle):
    folder = make_fashion(tmp_path / "fm")
    images = folder / "train-images-idx3-ubyte.gz"
    arr = np.random.default_rng(0).integers(0, 255, (64, 28, 28))
    if kind == "non-square":
        write_idx(images, np.zeros((64, 28, 30)))
    elif kind == "magic":
        write_idx(images, arr)
        raw = D.read_idx(images)
        images.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + b"\0" * 12 + raw.tobytes()))  # float magic
    elif kind == "ndim":
        write_idx(images, arr.reshape(64, 784))
    else:
        write_idx(images, arr, gz=False)
        raw = images.read_bytes()
        images.write_bytes(gzip.compress(raw[:23016] if kind == "truncated" else raw + b"\0" * 100))
    monkeypatch.setenv("ROADMAP_FASHION_MNIST", str(folder))
    with pytest.raises(RoadmapError) as err:
        D.load_dataset("fashion-mnist")
    line = one_line(err)
    assert line.startswith(str(images)) and needle in line, line


# ---- runs after the data changed -------------------------------------------------------------


def _reference_records(tmp_path, run="resnet50"):
    from roadmap.outputs import REFERENCE_ROOT

    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    for p in (REFERENCE_ROOT / "reference-fashion-mnist" / "runs").glob("*.json"):
        if json.loads(p.read_text())["run"] == run:
            shutil.copy(p, out / "runs")
    return out


def test_a_run_failed_on_images_since_removed_does_not_block_the_rerun(tmp_path):
    from roadmap.results import check_labels, read_results

    out = _reference_records(tmp_path)
    row = json.loads(next((out / "runs").glob("*.json")).read_text())
    row["data_id"] = dict(row["data_id"], content="0" * 16, val=row["data_id"]["val"] + 1)  # one bad image more
    row.update(status="failed", error="x.png: cannot read this image (OSError: truncated)")
    row = rekey(row)  # a valid record of that run (its key hashes the other data)
    (out / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    check_labels(read_results(out), out)  # the failed run is averaged with nothing
    row["status"] = "ok"  # a finished run on the other images is another matter
    (out / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    with pytest.raises(RoadmapError, match=r"different data under one name"):
        check_labels(read_results(out), out)


def test_checkpoints_of_no_planned_run_are_said_to_restart(tmp_path, capsys):
    from roadmap.env import Dist
    from roadmap.results import ResultsDir
    from roadmap.runner import note_unresumable

    out = _reference_records(tmp_path)
    row = json.loads(next((out / "runs").glob("*.json")).read_text())
    results = ResultsDir(out)
    runs = plan_runs(paper_plan(only=["resnet50"]), get_preset("reference"), row["data_id"], [row["seed"]])
    assert runs[0].key == row["key"]  # the committed key, from the unchanged Fashion-MNIST identity
    results.checkpoints.mkdir()
    (results.checkpoints / f"{row['key']}.pt").write_bytes(b"")  # its own: resumes, nothing said
    note_unresumable(results, runs, row["data_id"], Dist())
    assert capsys.readouterr().err == ""
    changed = dict(row["data_id"], content="1" * 16)  # the images changed since: new keys
    runs = plan_runs(paper_plan(only=["resnet50"]), get_preset("reference"), changed, [row["seed"]])
    note_unresumable(results, runs, changed, Dist())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("roadmap: warning: ")
    assert f"holds 1 checkpoint(s) of no run planned here (resnet50 seed {row['seed']}; 1 of them on other data" in err
    assert "starts from zero instead of resuming" in err


@pytest.mark.parametrize("mode", sorted(D.image.READ_MODES))
def test_every_mode_with_a_rule_gives_rgb_uint8(mode):
    try:
        img = Image.new(mode, (3, 2))
    except (ValueError, OSError):
        pytest.skip(f"this Pillow makes no {mode} image")
    out = D.to_rgb(img, "x")
    assert out.mode == "RGB" and np.asarray(out).dtype == np.uint8 and np.asarray(out).shape == (2, 3, 3)


def test_a_device_linked_in_as_an_image_is_refused(tmp_path):
    data = make_images(tmp_path / "imgs", per_class=2)
    os.symlink("/dev/zero", data / "train" / "dog" / "zero.png")  # read, it would never end
    with pytest.raises(RoadmapError, match=r"zero.png is a character device, not a file; remove it"):
        D.load_dataset(str(data))


def test_32_bit_integers_are_read_as_16_bit_data_or_refused():
    arr = np.array([[0, 65535], [257, 1000]], dtype=np.int32)
    out = np.asarray(D.to_rgb(Image.fromarray(arr, mode="I"), "x"))
    assert out[..., 0].tolist() == [[0, 255], [1, 4]]
    with pytest.raises(RoadmapError, match=r"x.tif: a 32-bit integer image with values -5..70000, outside"):
        D.to_rgb(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I"), "x.tif")
