"""Every step is a timm model: tested through timm's public API only.

`timm.create_model`, `timm.list_models`, `features_only`, `timm.data.resolve_data_config`,
`timm.optim.create_optimizer_v2`, `pretrained=True` with a checkpoint file written here.
All-steps loops run at a fraction of the width, at 32 px (224 px where timm checks its default
input size); the endpoints are checked against timm at 224 px.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest
import timm
import timm.data
import timm.optim
import timm.scheduler
import torch
from PIL import Image
from torch import nn

import roadmap  # noqa: F401  (registers the models)
from helpers import randomize
from roadmap.custom import Roadmap, load_roadmap, toggles
from roadmap.errors import RoadmapError
from roadmap.model import RoadmapNet
from roadmap.registry import config_for, kernel_sweep, step_names
from roadmap.weights import remap_timm

STEPS = {f"roadmap_{s}": config_for(s) for s in step_names()}
SWEEP = {f"roadmap_large_kernel_k{k}": config_for("large_kernel", kernel_size=k) for k in kernel_sweep()}
MODELS = {**STEPS, **SWEEP}
ENDPOINTS = [("roadmap_resnet50", "resnet50"), ("roadmap_separate_downsampling", "convnext_tiny")]
# Each step's own structure at a fraction of its width: all-steps loops stay quick on a busy CPU.
SMALL = dict(widths=(8, 16, 32, 64))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models on a shared 2-core CPU: one thread is faster than two contending."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def timm_checkpoints(tmp_path_factory):
    """timm's resnet50 and convnext_tiny (randomized) and their state_dicts written to files."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for _, timm_name in ENDPOINTS:
        ref = randomize(timm.create_model(timm_name)).eval()
        path = folder / f"{timm_name}.pth"
        torch.save(ref.state_dict(), path)
        out[timm_name] = (ref, str(path))
    return out


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt by timm to fetch weights fails the test."""
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("timm tried to download weights")

    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(builder, name, refuse)


# ---- registration --------------------------------------------------------------------


def test_import_registers_every_step_once_and_imports_nothing_slow():
    code = textwrap.dedent("""
        import sys, warnings
        import timm
        assert not timm.list_models("roadmap_*"), "registered before import roadmap"
        before = set(sys.modules)
        import roadmap
        new = sorted({m.split(".")[0] for m in set(sys.modules) - before})
        print(",".join(new))
        print(",".join(timm.list_models("roadmap_*")))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # timm warns when a name is registered twice
            import roadmap.timm_models
            again = roadmap.timm_models.register_paper_models()
        print(",".join(sorted(again)))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning"),
    )
    assert out.returncode == 0, out.stderr
    new_packages, listed, again = out.stdout.strip().splitlines()
    assert new_packages.split(",") == ["roadmap"]  # the steps are roadmap.steps, no top-level package
    assert sorted(listed.split(",")) == sorted(MODELS)
    assert again.split(",") == sorted(MODELS)


def test_list_models_and_names():
    listed = timm.list_models("roadmap_*")
    assert set(MODELS) <= set(listed)
    assert len(STEPS) == 13 and {
        "roadmap_resnet50",
        "roadmap_separate_downsampling",
        "roadmap_large_kernel_k5",
        "roadmap_large_kernel_k11",
    } <= set(listed)
    assert all(n.isidentifier() for n in listed)
    assert not timm.list_models("roadmap_*", pretrained=True)  # no registered weights: nothing to download


@pytest.mark.parametrize("name", MODELS)
def test_create_model_with_timm_arguments(name):
    m = timm.create_model(name, num_classes=10, drop_path_rate=0.1, drop_rate=0.2, in_chans=1, **SMALL)
    assert isinstance(m, RoadmapNet)
    assert m.cfg == MODELS[name].replace(num_classes=10, in_chans=1, drop_path_rate=0.1, **SMALL)
    assert m.stem.conv.in_channels == 1
    assert m.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert m.head.drop.p == 0.2
    with torch.no_grad():
        assert m.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    cfg = m.pretrained_cfg
    assert cfg["architecture"] == name and not cfg.get("url") and not cfg.get("hf_hub_id")
    assert isinstance(m.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
    assert m.get_classifier().out_features == 10
    # data config: timm's legacy resolver reads the pretrained_cfg (ImageNet, 224 px, as timm's
    # own models do), timm's input resolver also the model's channels
    assert timm.data.resolve_data_config({}, model=m) == dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        mean=timm.data.IMAGENET_DEFAULT_MEAN,
        std=timm.data.IMAGENET_DEFAULT_STD,
        crop_pct=0.875,
        crop_mode="center",
    )
    data_cfg = timm.data.resolve_input_data_config(m)
    assert data_cfg["input_size"] == (1, 224, 224)
    image = Image.new("L", (300, 260), color=128)
    assert timm.data.create_transform(**data_cfg)(image).shape == (1, 224, 224)


def test_kernel_sweep_variants_have_their_kernel():
    for k in kernel_sweep():
        m = timm.create_model(f"roadmap_large_kernel_k{k}", num_classes=10, **SMALL)
        assert m.stages[0].blocks[0].conv1.kernel_size == (k, k)


def test_toggles_pass_through_and_unknown_keywords_fail():
    m = timm.create_model("roadmap_gelu", num_classes=10, kernel_size=5, small_input_stem=True)
    assert m.cfg == config_for("gelu", num_classes=10, kernel_size=5, small_input_stem=True)
    with pytest.raises(RoadmapError, match="^roadmap_gelu: unknown toggle.*'kernel_sise' .did you mean 'kernel_size'"):
        timm.create_model("roadmap_gelu", kernel_sise=5)
    # timm's ResNet/ConvNeXt name for a toggle points to the toggle
    with pytest.raises(RoadmapError, match="^roadmap_gelu: unknown toggle or keyword 'act_layer' .did you mean 'act'"):
        timm.create_model("roadmap_gelu", act_layer="relu")


# (keyword, a value it refuses, what the one-line error says it takes)
BAD_KEYWORDS = [
    ("kernel_size", True, "an odd positive integer"),  # not silently 1x1
    ("kernel_size", "7", "an odd positive integer"),
    ("kernel_size", 7.0, "an odd positive integer"),
    ("kernel_size", 4, "an odd positive integer"),
    ("kernel_size", 0, "an odd positive integer"),
    ("widths", (0, 96, 192, 384), "a list of 4 positive integers, one per stage"),
    ("depths", (0, 0, 0, 0), "a list of 4 positive integers, one per stage"),
    ("depths", (3, 3, 9), "a list of 4 positive integers, one per stage"),
    ("depths", "3,3,9,3", "a list of 4 positive integers, one per stage"),
    ("expansion", 0, "a positive integer"),
    ("patch_size", -4, "a positive integer"),
    ("depthwise", 1, "True or False"),
    ("act", "tanh", "one of 'relu', 'gelu'"),
    ("layer_scale_init", "1e-6", "a number, or None"),
    ("drop_path_rate", 1.0, r"a number in \[0, 1\)"),
    ("drop_path_rate", "0.1", r"a number in \[0, 1\)"),
    ("drop_rate", -0.1, r"a number in \[0, 1\)"),
    ("num_classes", -1, "an integer >= 0"),
    ("num_classes", 10.0, "an integer >= 0"),
    ("in_chans", 0, "a positive integer"),
    ("global_pool", "catavgmax", "one of '', 'avg', 'max', 'avgmax'"),
    ("global_pool", "mean", "one of '', 'avg', 'max', 'avgmax'"),
    ("output_stride", 4, "8, 16 or 32"),
    ("output_stride", "16", "8, 16 or 32"),
]


@pytest.mark.parametrize("key,value,takes", BAD_KEYWORDS)
def test_a_wrong_keyword_is_one_error_naming_it(key, value, takes):
    """timm keywords are checked as a roadmap file's toggles are: a wrong type or range is one
    line naming the model, the keyword and what it takes, before anything is built."""
    with pytest.raises(RoadmapError) as e:
        timm.create_model("roadmap_gelu", **{key: value})
    assert "\n" not in str(e.value)
    assert re.match(
        f"roadmap_gelu: {re.escape(key)}={re.escape(repr(value))} is not allowed; {re.escape(key)} takes {takes}",
        str(e.value),
    ), str(e.value)
    if key in toggles():  # and a roadmap file refuses it too
        with pytest.raises(RoadmapError):
            Roadmap("timm keyword check", start="gelu", steps=[dict(name="x", changes={key: value})])


def test_keywords_are_converted_as_toggles_are():
    m = timm.create_model("roadmap_gelu", widths=[8, 16, 32, 64], layer_scale_init=1, drop_rate=0)
    assert m.cfg.widths == (8, 16, 32, 64) and m.cfg.layer_scale_init == 1.0
    assert isinstance(m.cfg.layer_scale_init, float)
    # a combination the step cannot build: one error naming the model
    with pytest.raises(RoadmapError, match="^roadmap_gelu: small_input_stem halves patch_size=5"):
        timm.create_model("roadmap_gelu", small_input_stem=True, patch_size=5)


@pytest.mark.parametrize("name", ["roadmap_resnet50", "roadmap_separate_downsampling"])
def test_data_config_and_transforms_at_224(name):
    m = timm.create_model(name)
    cfg = timm.data.resolve_data_config({}, model=m)
    image = Image.new("RGB", (320, 256), color=(200, 30, 90))
    for training in (False, True):
        x = timm.data.create_transform(**cfg, is_training=training)(image)
        assert x.shape == (3, 224, 224)
    with torch.no_grad():
        assert m.eval()(x[None]).shape == (1, 1000)


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_data_config_with_one_channel_like_timm(name, timm_name):
    """in_chans=1: both of timm's resolvers answer for ours as for timm's own model."""
    ours, ref = timm.create_model(name, in_chans=1), timm.create_model(timm_name, in_chans=1)
    keys = ("input_size", "mean", "std", "interpolation")
    for resolve in (lambda m: timm.data.resolve_data_config({}, model=m), timm.data.resolve_input_data_config):
        got, expected = resolve(ours), resolve(ref)
        assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}


# ---- timm's conventions: global_pool, reset_classifier, output_stride ------------------


@pytest.mark.parametrize("name", MODELS)
def test_timm_default_cfg_conventions(name):
    """What timm's test_model_default_cfgs checks of every timm model, at the default input
    size: the unpooled map matches pool_size, num_features is its width, reset_classifier(0)
    pools, reset_classifier(0, '') and create_model(num_classes=0, global_pool='') do not,
    and the cfg's classifier and first conv are in the state_dict."""
    m = timm.create_model(name, **SMALL).eval()
    cfg, state = m.pretrained_cfg, m.state_dict()
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
    width = MODELS[name].replace(**SMALL).residual_widths[-1]
    assert m.num_features == m.head_hidden_size == width
    x = torch.randn(1, *cfg["input_size"])
    unpooled = (1, width, *cfg["pool_size"])
    with torch.no_grad():
        assert m.forward_features(x).shape == unpooled
        m.reset_classifier(0)
        assert m.num_classes == 0
        assert m(x).shape == (1, m.head_hidden_size)
        m.reset_classifier(0, "")
        assert m(x).shape == unpooled
        bare = timm.create_model(name, num_classes=0, global_pool="", **SMALL).eval()
        assert bare(x).shape == unpooled


@pytest.mark.parametrize("name", ["roadmap_resnet50", "roadmap_separate_downsampling"])
def test_global_pool_types(name):
    """'avg', 'max', 'avgmax' pool the last map (then the head norm, where the step has one),
    set at creation or by reset_classifier; '' with classes only where the head can have it."""
    x = torch.randn(2, 3, 64, 64)
    pools = {
        "avg": lambda f: f.mean((2, 3), keepdim=True),
        "max": lambda f: f.amax((2, 3), keepdim=True),
        "avgmax": lambda f: 0.5 * (f.mean((2, 3), keepdim=True) + f.amax((2, 3), keepdim=True)),
    }
    for pool, fn in pools.items():
        m = timm.create_model(name, num_classes=0, global_pool=pool, **SMALL).eval()
        with torch.no_grad():
            f = m.forward_features(x)
            expected = getattr(m.head, "norm", nn.Identity())(fn(f)).flatten(1)
            assert torch.allclose(m(x), expected, atol=1e-6)
        m.reset_classifier(10, "max" if pool != "max" else "avg")
        assert m.head.global_pool.pool_type == ("max" if pool != "max" else "avg")
        assert m(x).shape == (2, 10) and m.num_classes == 10
    if name == "roadmap_resnet50":  # pool -> fc: no classifier of an unpooled map, as timm's ResNet
        with pytest.raises(RoadmapError, match="^roadmap_resnet50: global_pool='' with num_classes=10"):
            timm.create_model(name, num_classes=10, global_pool="")
        m = timm.create_model(name, num_classes=0, global_pool="", **SMALL)
        with pytest.raises(RoadmapError, match="global_pool='' with num_classes=10"):
            m.reset_classifier(10)
    else:  # pool -> norm -> fc: a 1x1-conv classifier of every position, as timm's ConvNeXt
        m = timm.create_model(name, num_classes=10, global_pool="", **SMALL).eval()
        assert m(x).shape == (2, 10, 2, 2)


@pytest.mark.parametrize("name", STEPS)
def test_output_stride_dilates_with_the_same_parameters(name):
    """output_stride=16 (8): the last stage (two) dilate instead of striding: 14x14 (28x28)
    maps at 224 px, the same parameters, feature_info reductions to match."""
    x = torch.randn(1, 3, 224, 224)
    base = timm.create_model(name, **SMALL)
    for output_stride, reductions in ((16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])):
        dense = timm.create_model(name, output_stride=output_stride, **SMALL).eval()
        assert {k: v.shape for k, v in dense.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
        dense.load_state_dict(base.state_dict())  # strict: the same tensors
        assert [i["reduction"] for i in dense.feature_info] == reductions
        with torch.no_grad():
            assert dense.forward_features(x).shape[-2:] == (224 // output_stride,) * 2
            assert dense(x).shape == (1, 1000)
        feats = timm.create_model(name, features_only=True, output_stride=output_stride, **SMALL)
        assert feats.feature_info.reduction() == reductions


def test_output_stride_with_small_input_stem():
    """The small-input stem halves every reduction; output_stride caps the last one."""
    for output_stride, reductions in ((32, [2, 4, 8, 16]), (16, [2, 4, 8, 16]), (8, [2, 4, 8, 8])):
        m = timm.create_model(
            "roadmap_separate_downsampling", small_input_stem=True, output_stride=output_stride, **SMALL
        ).eval()
        assert [i["reduction"] for i in m.feature_info] == reductions
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 32 // reductions[-1]


# ---- features_only and forward_intermediates ------------------------------------------


@pytest.mark.parametrize("name", STEPS)
def test_features_only_stage_maps(name):
    cfg = MODELS[name]  # full size: the channels are the step's own
    feats = timm.create_model(name, features_only=True, out_indices=(1, 2, 3)).eval()
    assert feats.feature_info.channels() == list(cfg.residual_widths[1:])
    assert feats.feature_info.reduction() == [8, 16, 32]
    with torch.no_grad():
        maps = feats(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in maps] == [
        (2, c, 32 // r, 32 // r) for c, r in zip(cfg.residual_widths[1:], (8, 16, 32))
    ]


def test_features_only_default_indices_and_small_input_stem():
    feats = timm.create_model("roadmap_separate_downsampling", features_only=True, small_input_stem=True)
    assert feats.feature_info.reduction() == [2, 4, 8, 16]
    assert [f.shape[-1] for f in feats(torch.randn(1, 3, 32, 32))] == [16, 8, 4, 2]
    feats = timm.create_model("roadmap_resnet50", features_only=True, small_input_stem=True)
    assert feats.feature_info.channels() == [256, 512, 1024, 2048]
    assert feats.feature_info.reduction() == [2, 4, 8, 16]


@pytest.mark.parametrize("name", STEPS)
def test_forward_intermediates_features_only_and_pruning(name):
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    feats = timm.create_model(name, num_classes=10, features_only=True, out_indices=(1, 2, 3), **SMALL).eval()
    torch.manual_seed(1)
    m = timm.create_model(name, num_classes=10, **SMALL).eval()  # same seed and sizes: same weights
    with torch.no_grad():
        final, inter = m.forward_intermediates(x)
        maps = feats(x)
        assert len(maps) == 3 and all(torch.equal(a, b) for a, b in zip(maps, inter[1:]))
        assert torch.equal(final, m.forward_features(x))
        assert torch.equal(m.forward_head(final), m(x))
        assert [t.shape[1:] for t in inter] == [
            (i["num_chs"], 32 // i["reduction"], 32 // i["reduction"]) for i in m.feature_info
        ]
        last_two = m.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and all(torch.equal(a, b) for a, b in zip(last_two, inter[2:]))
        early = m.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert len(early) == 1 and torch.equal(early[0], inter[1])
        assert m.prune_intermediate_layers(indices=(0, 1)) == [0, 1]
        assert len(m.stages) == 2 and m.num_features == m.feature_info[1]["num_chs"]
        assert torch.equal(m(x), inter[1])  # head pruned: the last kept stage's map


# ---- pretrained endpoints --------------------------------------------------------------


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_pretrained_endpoint_matches_timm_at_224(name, timm_name, timm_checkpoints, no_download):
    ref, path = timm_checkpoints[timm_name]
    ours = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    x = torch.randn(1, 3, 224, 224)
    # timm's resnet50 counts its stem as intermediate 0; its stages are 1-4
    timm_stages = [1, 2, 3, 4] if timm_name == "resnet50" else [0, 1, 2, 3]
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x)
        ref_final, ref_inter = ref.forward_intermediates(x, indices=timm_stages)
        got, expected = ours.forward_head(final), ref.forward_head(ref_final)
        assert len(inter) == len(ref_inter) == 4
        assert got.shape == (1, 1000)
        assert (got - expected).abs().max().item() <= 1e-4
        assert all((a - b).abs().max().item() <= 1e-4 for a, b in zip(inter, ref_inter))
        # and the check can fail: the same model without the checkpoint differs
        assert (timm.create_model(name).eval()(x) - expected).abs().max().item() > 1e-2


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_pretrained_adapts_like_timm(name, timm_name, timm_checkpoints, no_download):
    """A new head and 1 input channel: timm adapts its own model and ours the same way."""
    _, path = timm_checkpoints[timm_name]
    kw = dict(pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=10, in_chans=1)
    ours, ref = timm.create_model(name, **kw).eval(), timm.create_model(timm_name, **kw).eval()
    assert ours.get_classifier().out_features == 10
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert (ours.forward_features(x) - ref.forward_features(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_pretrained_features_only_match_timm_at_224(name, timm_name, timm_checkpoints, no_download):
    _, path = timm_checkpoints[timm_name]
    ours = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=path), features_only=True, out_indices=(1, 2, 3)
    ).eval()
    # timm's resnet50 counts its stem as feature 0; its stages are 1-4
    timm_indices = (2, 3, 4) if timm_name == "resnet50" else (1, 2, 3)
    ref = timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), features_only=True, out_indices=timm_indices
    ).eval()
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            assert (a - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
@pytest.mark.parametrize("output_stride,px", [(16, 224), (8, 64)])
def test_pretrained_endpoint_with_output_stride_matches_timm(
    name, timm_name, output_stride, px, timm_checkpoints, no_download
):
    """The same checkpoint and output_stride in ours and in timm's model: the same dense maps."""
    _, path = timm_checkpoints[timm_name]
    kw = dict(pretrained=True, pretrained_cfg_overlay=dict(file=path), output_stride=output_stride)
    ours, ref = timm.create_model(name, **kw).eval(), timm.create_model(timm_name, **kw).eval()
    # timm's resnet50 lists its stem as feature 0
    assert [i["reduction"] for i in ours.feature_info] == [i["reduction"] for i in ref.feature_info][-4:]
    x = torch.randn(1, 3, px, px)
    with torch.no_grad():
        got, expected = ours.forward_features(x), ref.forward_features(x)
        assert got.shape[-2:] == (px // output_stride,) * 2
        assert (got - expected).abs().max().item() <= 1e-4
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_pretrained_endpoint_pooling_matches_timm(name, timm_name, timm_checkpoints, no_download):
    _, path = timm_checkpoints[timm_name]
    x = torch.randn(1, 3, 64, 64)
    for kw in (dict(global_pool="max"), dict(global_pool="avgmax"), dict(num_classes=0, global_pool="")):
        kw.update(pretrained=True, pretrained_cfg_overlay=dict(file=path))
        ours, ref = timm.create_model(name, **kw).eval(), timm.create_model(timm_name, **kw).eval()
        with torch.no_grad():
            assert (ours(x) - ref(x)).abs().max().item() <= 1e-4
            ours.reset_classifier(0, "avg")
            ref.reset_classifier(0, "avg")
            assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_pretrained_errors(timm_checkpoints, no_download):
    _, resnet_file = timm_checkpoints["resnet50"]
    with pytest.raises(RoadmapError, match="only the endpoints.*checkpoint_path"):
        timm.create_model("roadmap_gelu", pretrained=True, pretrained_cfg_overlay=dict(file=resnet_file))
    with pytest.raises(RoadmapError, match="only the endpoints"):  # no longer resnet50's architecture
        timm.create_model(
            "roadmap_resnet50", pretrained=True, kernel_size=5, pretrained_cfg_overlay=dict(file=resnet_file)
        )
    with pytest.raises(RoadmapError, match=r"downloads nothing.*pretrained_cfg_overlay=dict\(file=PATH\)"):
        timm.create_model("roadmap_resnet50", pretrained=True)
    with pytest.raises(RoadmapError, match="^roadmap_resnet50: kernel_size='3' is not allowed"):
        timm.create_model(
            "roadmap_resnet50", pretrained=True, kernel_size="3", pretrained_cfg_overlay=dict(file=resnet_file)
        )
    with pytest.raises(RoadmapError, match="does not fit"):
        timm.create_model(
            "roadmap_separate_downsampling", pretrained=True, pretrained_cfg_overlay=dict(file=resnet_file)
        )


def test_checkpoint_path_loads_any_step(tmp_path):
    saved = timm.create_model("roadmap_gelu", num_classes=10, **SMALL).eval()
    torch.save(saved.state_dict(), tmp_path / "gelu.pth")
    loaded = timm.create_model(
        "roadmap_gelu", num_classes=10, checkpoint_path=str(tmp_path / "gelu.pth"), **SMALL
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(saved(x), loaded(x))


# ---- training tools ----------------------------------------------------------------------


@pytest.mark.parametrize("name", STEPS)
def test_layer_decay_gives_per_block_learning_rates(name):
    cfg, m = MODELS[name], timm.create_model(name, num_classes=10, **SMALL)
    opt = timm.optim.create_optimizer_v2(m, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    by_name = {n: scale[id(p)] for n, p in m.named_parameters()}
    layers = 1 + sum(cfg.depths) + 1  # stem, one per block, head
    assert len(set(by_name.values())) == layers
    assert by_name["stem.conv.weight"] == pytest.approx(0.7 ** (layers - 1))
    assert by_name["head.fc.weight"] == 1.0
    blocks = [(s, b) for s, d in enumerate(cfg.depths) for b in range(d)]
    for k, (s, b) in enumerate(blocks):
        assert by_name[f"stages.{s}.blocks.{b}.conv1.weight"] == pytest.approx(0.7 ** (layers - 2 - k))
    if cfg.downsample == "separate":  # the downsampling layer learns at its stage's first block's rate
        assert by_name["stages.1.downsample.conv.weight"] == by_name["stages.1.blocks.0.conv1.weight"]
    # timm's scheduler turns the scales into learning rates
    sched = timm.scheduler.CosineLRScheduler(opt, t_initial=10)
    sched.step(0)
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert all(lr == pytest.approx(1e-3 * s) for s, lr in lrs.items())


@pytest.mark.parametrize("name,timm_name", ENDPOINTS)
def test_layer_decay_matches_timm_for_the_endpoints(name, timm_name, timm_checkpoints):
    ref, _ = timm_checkpoints[timm_name]
    ours = timm.create_model(name)

    def scales(model):
        opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.7)
        scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
        return {n: scale[id(p)] for n, p in model.named_parameters()}

    # remap_timm renames key by key, in order: timm name -> roadmap name
    to_ours = dict(zip(ref.state_dict(), remap_timm(ref.state_dict())))
    theirs = {to_ours[n]: s for n, s in scales(ref).items()}
    assert scales(ours) == theirs


@pytest.mark.parametrize("name", STEPS)
def test_grad_checkpointing_trains_with_the_same_loss(name):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(2)
        m = timm.create_model(name, num_classes=10, drop_path_rate=0.1, **SMALL).train()
        m.set_grad_checkpointing(checkpointing)
        calls = []  # a pre-hook: recomputation stops once the saved tensors are back
        m.stages[0].blocks[0].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        opt = timm.optim.create_optimizer_v2(m, "adamw", lr=1e-3)
        losses = []
        for _ in range(2):
            loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append((losses, len(calls), dict(m.named_parameters())))
    (plain, plain_calls, plain_params), (ckpt, ckpt_calls, ckpt_params) = runs
    assert (plain_calls, ckpt_calls) == (2, 4)  # checkpointing recomputes the block in backward
    assert ckpt == pytest.approx(plain, rel=1e-5)
    # the same weights after two updates (BN running statistics, not compared, are updated
    # again by the recomputation, as in any checkpointed BN network)
    assert all(torch.allclose(plain_params[k], ckpt_params[k], atol=1e-5) for k in plain_params)


# ---- custom roadmaps ---------------------------------------------------------------------

ROADMAP_FILE = """
name = "{name}"
start = "large_kernel"

[[step]]
paper_step = "gelu"

[[step]]
name = "k5 (gelu)"
changes = {{ kernel_size = 5 }}
"""


def test_custom_roadmap_registers_its_rows(tmp_path, timm_checkpoints, no_download):
    path = tmp_path / "mine.toml"
    path.write_text(ROADMAP_FILE.format(name="Timm Test: mine"))
    road = load_roadmap(path)
    names = road.register()
    assert names == [
        "roadmap_timm_test_mine_large_kernel",
        "roadmap_timm_test_mine_gelu",
        "roadmap_timm_test_mine_k5_gelu",
    ]
    assert all(n.isidentifier() for n in names)
    assert timm.list_models("roadmap_timm_test_mine_*") == sorted(names)
    for name, row in zip(names, road.rows):
        m = timm.create_model(name, num_classes=10, **SMALL)
        assert m.cfg == row.cfg.replace(num_classes=10, **SMALL)
    assert load_roadmap(path).register() == names  # the same rows again: nothing to do
    # a custom row that is resnet50 takes resnet50's checkpoint
    start = Roadmap("timm test start", start="resnet50", steps=[dict(paper_step="stage_ratio")]).register()
    ref, file = timm_checkpoints["resnet50"]
    ours = timm.create_model(start[0], pretrained=True, pretrained_cfg_overlay=dict(file=file)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_custom_roadmap_name_clashes(tmp_path):
    path = tmp_path / "clash.toml"
    path.write_text(ROADMAP_FILE.format(name="timm test clash"))
    load_roadmap(path).register()
    other = Roadmap("timm test clash", start="widen", steps=[dict(paper_step="gelu")])
    with pytest.raises(RoadmapError, match="roadmap_timm_test_clash_gelu.*already exists"):
        other.register()
    # two rows with one model name: an error, and none of the rows registered
    twins = Roadmap(
        "timm test twins",
        start="gelu",
        steps=[dict(name="K 7", changes=dict(kernel_size=9)), dict(name="k-7", changes=dict(kernel_size=5))],
    )
    with pytest.raises(RoadmapError, match="'K 7' and 'k-7' both become timm model 'roadmap_timm_test_twins_k_7'"):
        twins.register()
    assert not timm.list_models("roadmap_timm_test_twins_*")
    # a paper step's name is taken too
    paper = Roadmap(".", start="gelu", steps=[dict(name="large_kernel", changes=dict(kernel_size=9))])
    with pytest.raises(RoadmapError, match="'roadmap_large_kernel', which already exists"):
        paper.register()
