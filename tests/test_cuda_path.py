"""The CUDA path, proven on the CPU: no per-update host reads, every tensor on the run's
device, uint8 batches normalized once on the device, each run's own peak memory.

`roadmap.audit.DeviceAudit` watches the real loop (`train_run`) at torch's Python API and at
its operators; see its docstring for what counts as a host read and as a misplaced tensor.
"""

import pytest
import torch
from test_train import image_folder, run, synthetic

from roadmap import data as D
from roadmap import train as T
from roadmap.audit import DeviceAudit
from roadmap.measure import model_cost
from roadmap.recipe import settings
from roadmap.registry import config_for
from roadmap.train import build as B
from roadmap.train import loop as L

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one CPU thread


# everything the paper's recipe does per update: mixup and cutmix, erasing, drop path, EMA,
# gradient clipping, warmup then cosine, on the device-side (in-memory) batch path
RECIPE = ["img_size=32", "batch_size=8", "width_scale=0.25", "randaug=none", "clip_grad=1.0"]
RECIPE += ["eval_batch_size=16", "warmup_epochs=1", "epochs=4", "max_shift=2"]


def audited(step, ds, sets, **kw):
    prime_costs(step, ds, sets)
    with DeviceAudit(torch.device("cpu")) as audit:
        m = run(step, ds, sets, preset="imagenette", **kw)
    return m, audit


def prime_costs(step, ds, sets):
    """Count the model's FLOPs before the audit: fvcore traces the model once per process
    (cached), and a trace under the audit's modes would count neither FLOPs nor reads right."""
    recipe, _ = settings("imagenette", sets)
    cfg = T.scale_config(config_for(step), recipe, ds.num_classes)
    model_cost(cfg, recipe.img_size), model_cost(cfg, 224)


def reads_per_update(step, ds, sets, short=2, long=12):
    """Host reads per update of the loop: the difference between a long and a short run
    (setup and evaluation read the same in both)."""
    (m1, a1), (m2, a2) = (audited(step, ds, [*sets, f"max_updates={n}"]) for n in (short, long))
    assert m1["updates"] == short and m2["updates"] == long
    return (len(a2.reads) - len(a1.reads)) / (long - short), a2


def test_the_loop_reads_the_host_once_per_log_interval_and_keeps_every_tensor_on_the_device():
    # ConvNeXt-T's step: LayerNorm, GELU, layer scale, drop path; EMA scored at the end
    ds = synthetic(n_train=8 * 12)
    per_update, audit = reads_per_update("separate_downsampling", ds, RECIPE)
    assert T.LOG_EVERY == 10 and per_update <= 0.15, audit.summary()
    assert not audit.misplaced, audit.misplaced[:3]


def test_the_folder_path_with_randaugment_reads_the_host_once_per_log_interval(tmp_path, monkeypatch):
    # one loader worker: the PIL transforms run in it, as they do beside a GPU
    monkeypatch.setattr(L, "loader_workers", lambda requested, procs=1: requested)
    ds = image_folder(tmp_path / "tiny", per_class=16)
    sets = [s for s in RECIPE if not s.startswith(("randaug", "max_shift"))] + ["workers=1", "max_shift=0", "epochs=4"]
    per_update, audit = reads_per_update("layer_norm", ds, sets)
    assert per_update <= 0.15, audit.summary()
    assert not audit.misplaced, audit.misplaced[:3]


# ---------------------------------------------------------------------------- the audit fails
# The mutations the audit exists for, applied to the real loop: an `.item()` per update, and
# a mask built on the host (no device=) applied to the batch. Both must be caught.


def test_an_item_per_update_is_caught(monkeypatch):
    real = B.train_step

    def reading(s, parts, update):
        loss = real(s, parts, update)
        loss.item()  # the mutation
        return loss

    monkeypatch.setattr(L, "train_step", reading)
    per_update, audit = reads_per_update("layer_norm", synthetic(n_train=8 * 12), RECIPE)
    assert per_update >= 1, audit.summary()
    assert "item at tests/test_cuda_path.py" in audit.summary()


def test_a_mask_built_on_the_host_is_caught(monkeypatch):
    real = B.train_step

    def masking(s, parts, update):
        keep = torch.rand(len(parts[0][0])) < 0.9  # the mutation: no device=x.device
        return real(s, [(x * keep[:, None, None, None], y) for x, y in parts], update)

    monkeypatch.setattr(L, "train_step", masking)
    _, audit = audited("layer_norm", synthetic(n_train=8 * 4), [*RECIPE, "max_updates=2"])
    assert audit.misplaced and "test_cuda_path.py" in audit.misplaced[0], audit.misplaced[:3]


# ---------------------------------------------------------------------------- data in flight


def test_batches_travel_as_uint8_and_are_normalized_once_on_the_device(tmp_path, monkeypatch):
    calls = []
    import roadmap.data.loader as DL  # where the batches are normalized

    real = DL.normalize
    monkeypatch.setattr(DL, "normalize", lambda images, *a: calls.append(images.dtype) or real(images, *a))
    ds = image_folder(tmp_path / "tiny", per_class=8)
    loader = D.folder_loader(ds, 32, 4, True, 0, total=3)
    assert all(x.dtype == torch.uint8 for x, _ in loader)  # the host never makes floats
    recipe, ex = settings("imagenette", ["img_size=32", "batch_size=4", "workers=0", "max_updates=3"])
    cpu = torch.device("cpu")
    batches = list(L.batches(ds, recipe, ex, 0, 0, 3, cpu, T.Dist()))
    assert len(batches) == 3 and calls == [torch.uint8] * 3  # once a batch, from uint8
    assert all(x.dtype == torch.float32 and abs(float(x.mean())) < 3 for [(x, _)] in batches)
    calls.clear()
    mem = synthetic(n_train=12)
    recipe, ex = settings("demo", ["img_size=32", "batch_size=4", "max_updates=3"])
    assert len(list(L.batches(mem, recipe, ex, 0, 0, 3, cpu, T.Dist()))) == 3 and calls == [torch.uint8] * 3


def test_cuda_batches_are_pinned_and_copied_without_waiting(tmp_path, monkeypatch):
    ds = image_folder(tmp_path / "tiny", per_class=4)
    recipe, ex = settings("imagenette", ["img_size=32", "batch_size=4", "workers=0"])
    source = L.batches(ds, recipe, ex, 0, 0, 2, torch.device("cuda"), T.Dist())
    assert source.source.loader.pin_memory and source.source.device == torch.device("cuda")  # built, not iterated
    moves = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: moves.append("pin") or t)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda t: False)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **kw: moves.append((a, kw)) or t)
    D.to_device(torch.zeros(2, dtype=torch.uint8), "cuda")
    assert moves == ["pin", ((torch.device("cuda"),), {"non_blocking": True})]


# ---------------------------------------------------------------------------- memory per run


def test_two_runs_in_one_process_report_their_own_peak_through_the_runner(tmp_path):
    """A large run, then a small one, through `run_plan` in this process: each record's
    peak is its own (the CPU's VmHWM, reset per run), not the process's high-water mark."""
    import json

    from roadmap.plan import RunSpec
    from roadmap.registry import config_for
    from roadmap.runner import run_plan

    big = config_for("resnet50")
    small = big.replace(widths=tuple(w // 4 for w in big.widths))
    specs = [RunSpec("big", "resnet50", "start", 0, big), RunSpec("small", "resnet50", "start", 1, small)]
    recipe, ex = settings(
        "demo", ["width_scale=1", "batch_size=16", "max_updates=2", "train_subset=32", "val_subset=16"]
    )
    folder = run_plan(
        specs,
        recipe,
        "demo",
        ex=ex,
        out=str(tmp_path / "runs"),
        device="cpu",
        progress=False,
        plot=False,
        use_reference=False,
    )
    records = {r["run"]: r for r in (json.loads(p.read_text()) for p in (folder / "runs").glob("*.json"))}
    assert {r["peak_mem_method"] for r in records.values()} == {"cpu_vmhwm_reset"}
    big_mb, small_mb = records["big"]["peak_mem_mb"], records["small"]["peak_mem_mb"]
    # resnet50's 25.6 M parameters, their gradients and AdamW's two moments: ~400 MB more
    assert big_mb - small_mb > 200, (big_mb, small_mb)
