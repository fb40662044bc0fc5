"""Gradient accumulation (the official code's --update_freq), the paper's global batch on any
GPU count, fused AdamW, and the model FLOP utilisation each run records."""

from types import SimpleNamespace

import pytest
import torch
from test_train import image_folder, run, synthetic

from roadmap.errors import RoadmapError
from roadmap.recipe import get_preset, settings
from roadmap.registry import config_for
from roadmap.train import (
    Dist,
    batches,
    make_optimizer,
    micro_loader,
    scale_config,
    schedule_length,
    seed_update,
    setup,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one CPU thread


def weights_after(sets, updates=3, step="separate_downsampling"):
    """The model after `updates` updates of the real setup, batches and train_step."""
    ds = synthetic(n_train=8 * updates)
    recipe, ex = settings("demo", [*sets, f"max_updates={updates}", "max_shift=2"])
    cfg = scale_config(config_for(step), recipe, ds.num_classes)
    cpu, dist = torch.device("cpu"), Dist()
    s = setup(cfg, recipe, ex, ds, 0, cpu, dist)
    assert s.global_batch == 8 and s.lr == recipe.scaled_lr(8)
    for u, parts in enumerate(batches(ds, recipe, ex, 0, 0, s.total, cpu, dist)):
        seed_update(0, u)
        train_step(s, parts, u)
    return s.micro, s.model.state_dict()


def test_k_micro_batches_make_the_update_of_one_batch_k_times_larger():
    # separate_downsampling (ConvNeXt-T): LayerNorm, no BatchNorm, so no statistic sees the split
    one, whole = weights_after(["batch_size=8"])
    four, split = weights_after(["batch_size=2", "global_batch=8"])
    assert (one, four) == (1, 4)
    for name, w in whole.items():
        torch.testing.assert_close(split[name], w, rtol=1e-4, atol=1e-6, msg=name)
    moved = max((whole[n] - w).abs().max().item() for n, w in weights_after(["batch_size=8"], updates=1)[1].items())
    assert moved > 1e-4  # three updates moved the weights: the comparison is not of initial weights


def test_micro_batches_of_a_folder_are_its_batches_cut_in_order(tmp_path):
    from roadmap import data as D

    ds = image_folder(tmp_path / "tiny", per_class=8)
    whole = D.folder_loader(ds, 32, 8, True, 0, seed=3, total=4, randaug="rand-m9-mstd0.5-inc1")
    parts = list(micro_loader(whole, 4))
    assert len(parts) == 16 and all(len(x) == 2 for x, _ in parts)
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[0] for p in parts[4 * b : 4 * b + 4]]), x)
        assert torch.equal(torch.cat([p[1] for p in parts[4 * b : 4 * b + 4]]), y)


def test_a_folder_run_accumulates_and_counts_its_images(tmp_path):
    ds = image_folder(tmp_path / "tiny", per_class=8)
    sets = ["img_size=32", "batch_size=2", "global_batch=8", "max_updates=2", "width_scale=0.25", "workers=0"]
    m = run("separate_downsampling", ds, [*sets, "eval_batch_size=8"], preset="imagenette")
    assert m["updates"] == 2 and m["global_batch"] == 8 and m["micro_batches"] == 4 and m["epochs"] == 1.0


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_the_imagenet_preset_is_the_papers_recipe_at_any_gpu_count(gpus):
    recipe = get_preset("imagenet")
    imagenet = SimpleNamespace(num_train=1_281_167)
    assert recipe.global_batch_size(gpus) == 4096 and recipe.micro_batches(gpus) == 4096 // (128 * gpus)
    assert recipe.scaled_lr(recipe.global_batch_size(gpus)) == 4e-3  # Table 5: lr 4e-3 at batch 4096
    per_epoch, total, warmup = schedule_length(imagenet, recipe, Dist(world_size=gpus))
    assert (per_epoch, total, warmup) == (312, 300 * 312, 20 * 312)  # 300 epochs, 20 of warmup


def test_a_global_batch_that_is_not_whole_batches_is_one_line():
    with pytest.raises(RoadmapError, match=r"global_batch=4096 .*=128 x 3 process\(es\) = 384; run on 1, 2, 4, 8, 16"):
        get_preset("imagenet").micro_batches(3)


def test_the_run_key_takes_global_batch_only_where_it_is_set():
    demo = get_preset("demo")
    assert "global_batch" not in demo.training_key() and "clip_grad" not in demo.training_key()
    assert get_preset("imagenet").training_key()["global_batch"] == 4096


def test_fused_adamw_where_asked():
    model = torch.nn.Linear(4, 2)
    recipe = get_preset("demo")
    assert make_optimizer(model, recipe, 1e-3, fused=True).defaults["fused"] is True
    assert not make_optimizer(model, recipe, 1e-3).defaults.get("fused")  # the CPU's committed numbers


def test_each_run_records_its_model_flop_utilisation():
    m = run("resnet50", synthetic(), ["batch_size=8", "max_updates=4", "eval_batch_size=8"])
    assert m["matmul_gflops"] > 0 and m["matmul_dtype"] == "float32"
    assert 0 < m["mfu"] < 1 and m["mfu"] == pytest.approx(6 * m["gflops"] * m["train_img_s"] / m["matmul_gflops"])
