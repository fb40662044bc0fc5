"""A finished run keeps its final (and EMA) weights as safetensors, loadable with no pickle
as the timm model of its step."""

import json

import pytest
import timm
import torch
from safetensors import safe_open
from test_train import image_folder, run, synthetic

from roadmap import trained
from roadmap.plan import paper_plan
from roadmap.recipe import settings
from roadmap.registry import config_for
from roadmap.runner import run_plan

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one CPU thread


def test_kept_weights_load_as_the_timm_model_of_the_step(tmp_path):
    models = {}

    def keep(model, ema):
        models.update(model=model, ema=ema)
        return trained.keep(tmp_path / "weights", "k1", "large_kernel", model.cfg, model, ema)

    sets = ["batch_size=8", "max_updates=3", "eval_batch_size=8", "width_scale=0.25", "ema_decay=0.9"]
    m = run("large_kernel", synthetic(), [*sets, "channels_last=true"], keep=keep)
    assert m["weights"] == "weights/k1.safetensors" and m["weights_ema"] == "weights/k1.ema.safetensors"
    x = torch.randn(2, 3, 32, 32)
    for which, path in (("model", m["weights"]), ("ema", m["weights_ema"])):
        path = str(tmp_path / path)
        meta = safe_open(path, "pt").metadata()
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta["timm_kwargs"]).items()}
        assert meta["timm_model"] == "roadmap_large_kernel" and kwargs["num_classes"] == 10
        # timm's own loader, the way the README shows it
        model = timm.create_model(meta["timm_model"], checkpoint_path=path, **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), models[which].eval()(x))
        assert type(trained.load(path)) is type(model)


def test_the_runner_keeps_the_weights_unless_told_not_to(tmp_path):
    ds = image_folder(tmp_path / "tiny", per_class=4)
    sets = ["img_size=32", "batch_size=4", "max_updates=1", "width_scale=0.25", "workers=0", "eval_batch_size=8"]
    recipe, ex = settings("imagenette", sets)
    specs = paper_plan(only=["large_kernel"], kernel_sizes=[5])
    kept = run_plan(
        specs,
        recipe,
        "imagenette",
        ex=ex,
        data=ds.source,
        out=str(tmp_path / "a"),
        device="cpu",
        progress=False,
        plot=False,
        use_reference=False,
    )
    record = json.loads(next((kept / "runs").glob("*.json")).read_text())
    assert sorted(p.name for p in (kept / "weights").iterdir()) == [
        f"{record['key']}.ema.safetensors",
        f"{record['key']}.safetensors",
    ]
    assert not list((kept / "checkpoints").glob("*.pt"))  # the checkpoint went, the weights stay
    model = trained.load(str(kept / record["weights_ema"]))
    assert model.cfg.kernel_size == 5 and model.cfg.num_classes == 2  # the sweep's k5, the data's classes
    dropped = run_plan(
        specs,
        recipe,
        "imagenette",
        ex=ex,
        data=ds.source,
        out=str(tmp_path / "b"),
        device="cpu",
        progress=False,
        plot=False,
        use_reference=False,
        keep_weights=False,
    )
    assert not (dropped / "weights").exists()


def test_a_custom_rows_weights_name_resnet50_and_its_toggles():
    cfg = config_for("layer_norm").replace(kernel_size=5, num_classes=3)
    name, kwargs = trained.timm_model("my_row", cfg)
    assert name == "roadmap_resnet50" and kwargs["kernel_size"] == 5 and kwargs["num_classes"] == 3
    assert timm.create_model(name, **kwargs).cfg == cfg


def test_a_foreign_file_is_one_line(tmp_path):
    from roadmap.errors import RoadmapError

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(RoadmapError, match="not a safetensors file roadmap wrote"):
        trained.load(str(bad))
