"""Every step builds, runs, matches the paper's FLOPs and changes exactly what it declares."""

import pytest
import torch
from torch import nn

import roadmap
from roadmap.config import ArchConfig
from roadmap.errors import RoadmapError
from roadmap.registry import config_for, configs, kernel_sweep, previous_step
from roadmap.steps import ROADMAP

NAMES = roadmap.step_names()


def test_order_and_names():
    assert NAMES == (
        "resnet50",
        "stage_ratio",
        "patchify_stem",
        "depthwise_conv",
        "widen",
        "inverted_bottleneck",
        "move_up_dwconv",
        "large_kernel",
        "gelu",
        "fewer_activations",
        "fewer_norms",
        "layer_norm",
        "separate_downsampling",
    )


@pytest.mark.parametrize("step", ROADMAP[1:], ids=lambda s: s.name)
def test_each_step_changes_exactly_what_it_declares(step):
    prev = config_for(previous_step(step.name))
    diff = prev.diff(config_for(step.name))
    assert set(diff) == set(step.changes), f"{step.name} moved {sorted(diff)}"
    assert diff, f"{step.name} changes nothing"


@pytest.mark.parametrize("step", NAMES)
def test_builds_and_runs_at_224(step):
    model = roadmap.build(step).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("step", NAMES)
def test_builds_and_trains_small(step):
    model = roadmap.build(step, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("step", ROADMAP, ids=lambda s: s.name)
def test_flops_within_paper_tolerance(step, cached_gflops):
    gflops = cached_gflops(roadmap.build(step.name), 224)
    assert abs(gflops - step.paper_gflops) <= 0.10, (step.name, gflops, step.paper_gflops)


def test_kernel_sweep_flops_match_paper(cached_gflops):
    for k, (_top1, paper_gflops) in kernel_sweep().items():
        gflops = cached_gflops(roadmap.build("large_kernel", kernel_size=k), 224)
        assert abs(gflops - paper_gflops) <= 0.10, (k, gflops, paper_gflops)


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_structure_follows_the_toggles():
    stem = roadmap.build("patchify_stem").stem
    assert stem.conv.kernel_size == (4, 4) and stem.conv.stride == (4, 4)
    assert not any(isinstance(m, nn.MaxPool2d) for m in stem.modules())
    dw = roadmap.build("depthwise_conv").stages[0].blocks[1].conv2
    assert dw.groups == dw.in_channels == dw.out_channels
    assert roadmap.build("large_kernel").stages[2].blocks[1].conv1.kernel_size == (7, 7)
    late = roadmap.build("layer_norm")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in late.modules())
    assert not any(isinstance(m, nn.ReLU) for m in roadmap.build("gelu").modules())
    fewer = roadmap.build("fewer_activations").stages[0].blocks[0]
    assert isinstance(fewer.act1, nn.Identity) and isinstance(fewer.act3, nn.Identity)
    final = roadmap.build("separate_downsampling")
    assert all(isinstance(b.shortcut, nn.Identity) for s in final.stages for b in s.blocks)


def test_overrides_change_the_model():
    small = roadmap.build("large_kernel", num_classes=10, widths=(16, 32, 64, 128))
    assert small.stem.conv.out_channels == 16 and small.head.fc.out_features == 10


def test_unknown_step_and_toggle_errors_list_valid_names():
    with pytest.raises(RoadmapError) as e:
        roadmap.build("large_kernal")
    assert "large_kernel" in str(e.value) and "separate_downsampling" in str(e.value)
    with pytest.raises(RoadmapError, match="valid toggles"):
        roadmap.build("resnet50", kernal_size=5)
    with pytest.raises(RoadmapError, match="allowed: batch, layer"):
        ArchConfig(norm="group")


def test_configs_are_cumulative():
    all_cfgs = configs()
    assert all_cfgs["separate_downsampling"].depths == (3, 3, 9, 3)
    assert all_cfgs["separate_downsampling"].kernel_size == 7
    assert all_cfgs["resnet50"] == ArchConfig()
