"""The training loop: numbers unchanged by its rewrite, exact resume, per-run measurements.

Tests marked `cuda` run only where a GPU is visible (`pytest -m cuda` on one).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT
from roadmap import data as D
from roadmap import train as T
from roadmap.env import amp_dtype, cpus_available, cpus_per_task, loader_workers
from roadmap.plan import paper_plan
from roadmap.recipe import settings
from roadmap.registry import config_for
from roadmap.train import loop as L
from roadmap.train import scale_config, train_run, unpack_bits

# `train_run` at cd56c49 (the loop before issue 17), 2 CPU threads: reference preset, seed 0,
# 50 updates on all of Fashion-MNIST's training images, 1,000 validation images.
BEFORE = {
    "resnet50": dict(train_loss=1.704670181274414, top1=29.6, top5=88.1, top1_ema=9.9),
    "separate_downsampling": dict(train_loss=1.4810299277305603, top1=73.0, top5=98.5, top1_ema=66.9),
}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(BEFORE))
def test_numbers_are_those_of_the_loop_before_the_rewrite(step):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds = D.load_dataset("fashion-mnist").subset(None, 1000)
        recipe, ex = settings("reference", ["max_updates=50", "val_subset=1000"])
        spec = paper_plan(only=[step])[0]
        cfg = scale_config(spec.cfg, recipe, ds.num_classes)
        m = train_run(spec.name, cfg, recipe, ex, ds, 0, torch.device("cpu"), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert {k: m[k] for k in BEFORE[step]} == BEFORE[step]


# ---------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one CPU thread


def synthetic(n_train=64, n_val=32, classes=10, size=32, channels=3):
    """Random uint8 images in memory (the fast path), labels cycling through the classes."""
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return D.Dataset(
        "synthetic",
        "test",
        classes,
        (0.5,) * channels,
        (0.25,) * channels,
        images(n_train),
        torch.arange(n_train) % classes,
        images(n_val),
        torch.arange(n_val) % classes,
    )


def image_folder(root, per_class=12, size=40):
    """A tiny ImageFolder tree of two colour-cued classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                arr[..., c] = 255
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return D.load_dataset(str(root))


def run(step, ds, sets, ckpt=None, **kw):
    recipe, ex = settings(kw.pop("preset", "demo"), sets)
    cfg = scale_config(config_for(step), recipe, ds.num_classes)
    return train_run(step, cfg, recipe, ex, ds, 0, kw.pop("device", torch.device("cpu")), ckpt, progress=False, **kw)


class Stop(Exception):
    pass


def stop_at(update):
    def on_update(m):
        if m["update"] >= update:
            raise Stop

    return on_update


def peaks_in_one_process(widths, device="cpu"):
    """peak_mem_mb of resnet50 runs at `widths`, in that order, in a fresh process."""
    code = (
        "import json, sys, torch; torch.set_num_threads(1); sys.path.insert(0, 'tests');"
        "from test_train import run, synthetic;"
        f"print(json.dumps([run('resnet50', synthetic(), ['width_scale=%s' % w, 'batch_size=16',"
        f" 'max_updates=2', 'eval_batch_size=32'], device=torch.device({device!r}))"
        f"['peak_mem_mb'] for w in {list(widths)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- CPU


def test_a_folder_run_resumed_is_the_uninterrupted_run(tmp_path, monkeypatch):
    # RandAugment, random-resized crops, flips, erasing, mixup/cutmix, drop path and EMA:
    # every random draw of the ImageFolder path, over an epoch boundary (6 updates an epoch)
    ds = image_folder(tmp_path / "tiny")
    sets = ["img_size=32", "batch_size=4", "max_updates=9", "width_scale=0.25", "eval_batch_size=8", "ckpt_every_s=0"]
    straight = run("separate_downsampling", ds, [*sets, "workers=0"], preset="imagenette")
    monkeypatch.setattr(L, "LOG_EVERY", 1)  # on_update every update: stop after the 4th
    monkeypatch.setattr(L, "loader_workers", lambda requested, procs=1: requested)
    ckpt = str(tmp_path / "run.pt")
    with pytest.raises(Stop):  # killed after update 4 (its checkpoint holds update 3) ...
        run("separate_downsampling", ds, [*sets, "workers=2"], ckpt, preset="imagenette", on_update=stop_at(4))
    assert torch.load(ckpt, weights_only=True)["state"]["update"] == 3
    # ... and resumed with another worker count: workers do not own any randomness
    resumed = run("separate_downsampling", ds, [*sets, "workers=1"], ckpt, preset="imagenette")
    assert resumed["resumed"] == 1 and resumed["updates"] == straight["updates"] == 9
    for k in ("train_loss", "top1", "top5", "top1_ema", "val_correct"):
        assert resumed[k] == straight[k], k


def test_the_learning_curve_changes_nothing_and_survives_a_resume(tmp_path, monkeypatch):
    ds = image_folder(tmp_path / "tiny")  # 6 updates an epoch; every random draw of the folder path
    sets = ["img_size=32", "batch_size=4", "epochs=2", "warmup_epochs=1", "width_scale=0.25", "workers=0"]
    sets += ["eval_batch_size=8", "ckpt_every_s=0"]
    plain = run("separate_downsampling", ds, sets, preset="imagenette")
    curved = run("separate_downsampling", ds, [*sets, "curve=true"], preset="imagenette")
    monkeypatch.setattr(L, "LOG_EVERY", 1)
    ckpt = str(tmp_path / "run.pt")
    with pytest.raises(Stop):  # killed in epoch 2, after epoch 1's point was scored and saved
        run("separate_downsampling", ds, [*sets, "curve=true"], ckpt, preset="imagenette", on_update=stop_at(8))
    resumed = run("separate_downsampling", ds, [*sets, "curve=true"], ckpt, preset="imagenette")
    assert "curve" not in plain and resumed["resumed"] == 1
    for k in ("train_loss", "top1", "top5", "top1_ema", "val_correct"):
        assert curved[k] == plain[k] == resumed[k], k
    assert [p["epoch"] for p in curved["curve"]] == [1.0, 2.0] and resumed["curve"] == curved["curve"]
    assert curved["curve"][-1]["top1"] == curved["top1"] and curved["curve"][-1]["top1_ema"] == curved["top1_ema"]
    assert all(0 <= p["top1"] <= 100 for p in curved["curve"])


def test_the_folder_loader_is_built_once_per_run(tmp_path, monkeypatch):
    ds = image_folder(tmp_path / "tiny", per_class=6)
    built = []
    real = D.folder_loader
    monkeypatch.setattr(D, "folder_loader", lambda *a, **kw: built.append(a[3]) or real(*a, **kw))
    m = run(
        "resnet50",
        ds,
        [
            "img_size=32",
            "batch_size=4",
            "epochs=3",
            "warmup_epochs=1",
            "width_scale=0.25",
            "workers=0",
            "eval_batch_size=4",
        ],
        preset="imagenette",
    )
    assert m["epochs"] == 3 and m["top1_ema"] is not None
    assert built == [True, False]  # one training loader for 3 epochs; one for both evaluations


def test_a_nan_names_the_updates_and_the_fix():
    with pytest.raises(T.NonFiniteLoss, match=r"became nan in updates 1-6 of 6 \(lr .*--set lr="):
        run("resnet50", synthetic(), ["batch_size=8", "max_updates=6", "lr=1e12", "warmup_epochs=0"])


def test_a_checkpoint_loads_on_the_cpu(tmp_path):
    ckpt = str(tmp_path / "run.pt")
    with pytest.raises(Stop):
        run("resnet50", synthetic(), ["batch_size=8", "max_updates=6", "ckpt_every_s=0"], ckpt, on_update=stop_at(6))
    loaded = T.load_checkpoint(ckpt)
    tensors = [t for t in loaded["optimizer"]["state"][0].values() if torch.is_tensor(t)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_bf16_only_where_the_gpu_has_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert amp_dtype(cuda, True) == torch.float16  # emulated bf16 (e.g. a V100) is not taken
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype(cuda, True) == torch.bfloat16
    assert amp_dtype(cuda, False) is None and amp_dtype(torch.device("cpu"), True) is None


def test_loader_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cpus_available() == 8 and loader_workers(16) == 7 and loader_workers(4) == 4
    assert loader_workers(16, procs_per_node=2) == 3 and cpus_per_task(7) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert loader_workers(8) == 0


def test_the_run_records_its_new_measurements():
    m = run("resnet50", synthetic(), ["batch_size=8", "max_updates=5", "eval_batch_size=8"])
    assert "config" not in m and m["val_n"] == 32 and len(unpack_bits(m["val_correct"], 32)) == 32
    assert m["peak_mem_method"] == "cpu_vmhwm_reset" and m["peak_mem_mb"] > 0
    assert m["compute_img_s"] >= m["train_img_s"] > 0 and m["data_wait_s"] >= 0
    assert m["infer_img_s"] > 0 and m["gflops"] > 0 and m["gflops_224"] > m["gflops"]


# ---------------------------------------------------------------------------- CUDA

needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_mark(f):
    for mark in needs_cuda:
        f = mark(f)
    return f


@cuda_mark
@pytest.mark.parametrize(
    "sets", [["amp=true"], ["amp=true", "channels_last=false"], ["amp=false"], ["amp=true", "compile=true"]]
)
def test_cuda_trains_with_amp_memory_formats_and_compile(sets):
    torch.backends.cudnn.benchmark = True
    m = run(
        "separate_downsampling",
        synthetic(n_train=64 * 12, n_val=100),
        ["batch_size=64", "max_updates=12", "eval_batch_size=64", *sets],
        device=torch.device("cuda"),
    )
    assert m["updates"] == 12 and math.isfinite(m["train_loss"]) and 0 <= m["top1"] <= 100
    assert m["peak_mem_method"] == "cuda_max_allocated" and m["train_img_s"] > 0
    assert m["infer_img_s"] > 0  # timed after a warm-up pass, over full-size batches only


@cuda_mark
def test_cuda_resume_is_the_uninterrupted_run(tmp_path, monkeypatch):
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True  # the same kernels before and after the resume
    ds = synthetic(n_train=16 * 8, n_val=64)
    sets = ["batch_size=16", "epochs=2", "eval_batch_size=64", "ckpt_every_s=0", "amp=true", "max_shift=2"]
    cuda = torch.device("cuda")
    straight = run("layer_norm", ds, sets, device=cuda, preset="reference")
    monkeypatch.setattr(L, "LOG_EVERY", 1)
    ckpt = str(tmp_path / "run.pt")
    with pytest.raises(Stop):
        run("layer_norm", ds, sets, ckpt, device=cuda, preset="reference", on_update=stop_at(11))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["state"]["update"] == 10
    resumed = run("layer_norm", ds, sets, ckpt, device=cuda, preset="reference")
    assert resumed["resumed"] == 1 and resumed["updates"] == 16
    # bf16 and atomics in some backward kernels: equal up to rounding, not bit for bit
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-3)
    assert abs(resumed["top1"] - straight["top1"]) <= 2 * 100 / 64  # two images at most


@cuda_mark
def test_cuda_peak_memory_is_each_runs_own():
    both = peaks_in_one_process([1.0, 0.25], device="cuda")
    small, large = peaks_in_one_process([0.25], device="cuda")[0], peaks_in_one_process([1.0], device="cuda")[0]
    assert large > 2 * small
    # what may outlive a run: cuBLAS's workspace, a few MB
    assert abs(both[1] - small) < max(0.05 * small, 40) and abs(both[0] - large) < max(0.05 * large, 40)
