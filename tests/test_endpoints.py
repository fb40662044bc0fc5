"""Step 0 *is* timm's resnet50 and the last step *is* timm's convnext_tiny."""

import pytest
import timm
import torch

import roadmap
from helpers import randomize
from roadmap.errors import RoadmapError
from roadmap.measure import count_gflops, count_params
from roadmap.weights import load_timm

ENDPOINTS = [("resnet50", "resnet50"), ("separate_downsampling", "convnext_tiny")]


@pytest.mark.parametrize("step,timm_name", ENDPOINTS)
def test_params_and_flops_match_timm(step, timm_name):
    ours, ref = roadmap.build(step), timm.create_model(timm_name)
    assert count_params(ours) == count_params(ref)
    assert count_gflops(ours) == pytest.approx(count_gflops(ref), abs=1e-9)


def test_reference_param_counts():
    # The numbers ROADMAP_REFERENCE.md quotes for timm.
    assert count_params(roadmap.build("resnet50")) == 25_557_032
    assert count_params(roadmap.build("separate_downsampling")) == 28_589_128


@pytest.mark.parametrize("step,timm_name", ENDPOINTS)
def test_timm_weights_load_and_outputs_match(step, timm_name):
    ref = randomize(timm.create_model(timm_name)).eval()
    ours = load_timm(roadmap.build(step), ref.state_dict()).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 1000)
    assert (got - expected).abs().max().item() <= 1e-4
    # and the check can fail: a different model gives different outputs
    other = roadmap.build(step).eval()
    with torch.no_grad():
        assert (other(x) - expected).abs().max().item() > 1e-2


def test_resnet50_state_dict_does_not_fit_convnext():
    ref = timm.create_model("resnet50")
    with pytest.raises(RoadmapError, match="separate_downsampling|resnet50"):
        load_timm(roadmap.build("separate_downsampling"), ref.state_dict())


def test_same_features_as_timm_resnet50_feature_maps():
    ref = timm.create_model("resnet50").eval()
    ours = load_timm(roadmap.build("resnet50"), ref.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours.forward_features(x), ref.forward_features(x), atol=1e-5)
