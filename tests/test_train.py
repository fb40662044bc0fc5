"""The training loop: numbers unchanged by its rewrite, exact resume, per-run measurements."""
import pytest
import torch

from roadmap import data as D
from roadmap.plan import paper_plan
from roadmap.recipe import get_preset
from roadmap.train import train_run

# `train_run` at cd56c49 (the loop before issue 17), 2 CPU threads: reference preset, seed 0,
# 50 updates on all of Fashion-MNIST's training images, 1,000 validation images.
BEFORE = {
    "resnet50": dict(train_loss=1.704670181274414, top1=29.6, top5=88.1, top1_ema=9.9),
    "separate_downsampling": dict(train_loss=1.4810299277305603, top1=73.0, top5=98.5,
                                  top1_ema=66.9),
}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(BEFORE))
def test_numbers_are_those_of_the_loop_before_the_rewrite(step):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds = D.load_dataset("fashion-mnist").subset(None, 1000)
        recipe = get_preset("reference").with_overrides(["max_updates=50", "val_subset=1000"])
        spec = paper_plan(only=[step])[0]
        m = train_run(spec.name, spec.cfg, recipe, ds, 0, torch.device("cpu"), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert {k: m[k] for k in BEFORE[step]} == BEFORE[step]
