"""`roadmap doctor`: is this machine ready to run the roadmap, and what does it do? One table.

Every training check calls what `roadmap run` calls (`train.train_run`, `data.folder_loader`,
the CLI in a subprocess): there is no second training path. Checks:

    install          versions; the 13 steps registered as timm models; safetensors
    data             --data loads (default: the embedded Fashion-MNIST)
    family <step>    two updates of the last step of each phase (BatchNorm ResNet, stem,
                     depthwise, inverted bottleneck, large kernel, LayerNorm ConvNeXt), on
                     in-memory random images with the paper's augmentation (mixup, cutmix,
                     erasing, drop path, EMA): a finite loss, img/s, peak memory
    host reads       the loop's host reads per update (`audit.DeviceAudit`): <= 0.15
  on CUDA (or everywhere with --all, at small sizes on a CPU):
    bf16 / TF32      the autocast dtype this GPU computes natively; TF32 matmuls on
    step <name>      two updates of each of the 13 steps at 224 px, full width, amp and
                     channels_last: peak memory and img/s
    channels_last    the same run in NCHW: img/s beside NHWC's
    loader feed      JPEG ImageFolder -> the imagenet recipe's transforms (RandAugment) ->
                     uint8 batches, img/s with this process's workers, against the img/s
                     ConvNeXt-T trains at: a GPU waiting for data fails
    DDP 1 process    `torchrun --nproc_per_node=1 -m roadmap run` (NCCL on CUDA, gloo on CPU)
    kill / resume    SIGKILL after the first checkpoint, rerun: resumed, same numbers as a
                     straight run
    torch.compile    two compiled updates in a subprocess, with a timeout (optional: a timeout
                     is "skipped", not a failure)

Exit status 1 if a check fails, else 0.
"""

import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from . import data as D
from .env import amp_dtype, configure_cuda, cpus_available, resolve_device
from .errors import RoadmapError
from .measure import model_cost
from .recipe import settings
from .registry import config_for, get_step, step_names
from .train import Dist, scale_config, train_run, workers_for


@dataclass
class Check:
    name: str
    result: str  # ok, FAIL, skipped
    figure: str
    fix: str


class Skip(Exception):
    """A check that does not apply here; its message says why."""


def families() -> List[str]:
    """The last step of each phase: one model of each kind the roadmap builds."""
    last = {}
    for name in step_names():
        last[get_step(name).phase] = name
    return list(last.values())


def synthetic(img_size: int, n_train: int, n_val: int, classes: int = 10) -> D.Dataset:
    """Random uint8 images in memory: what the loop sees, with no data on disk."""
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, img_size, img_size), dtype=torch.uint8, generator=g)
    return D.Dataset(
        "doctor",
        "random",
        classes,
        (0.5,) * 3,
        (0.25,) * 3,
        images(n_train),
        torch.arange(n_train) % classes,
        images(n_val),
        torch.arange(n_val) % classes,
    )


def write_jpeg_folder(root: Path, per_class: int, size: Tuple[int, int] = (500, 375)) -> Path:
    """A two-class ImageFolder of JPEGs about ImageNet's size (train/ and val/)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    for split, n in (("train", per_class), ("val", max(2, per_class // 4))):
        for c in range(2):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                f = 4 + i % 9 + 6 * c
                img = 128 + 60 * np.sin(xx / f + i) + 50 * np.cos(yy / (f + 3))
                img = np.clip(img[..., None] + rng.normal(0, 14, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=90)
    return root


class Doctor:
    def __init__(
        self,
        device: str = "auto",
        data: str = "fashion-mnist",
        full: Optional[bool] = None,
        compile_timeout: float = 300.0,
        progress: Callable[[Check], None] = lambda c: None,
    ):
        self.device = resolve_device(device)
        self.cuda = self.device.type == "cuda"
        self.full = self.cuda if full is None else full
        self.data, self.compile_timeout, self.progress = data, compile_timeout, progress
        self.checks: List[Check] = []
        self.train_img_s: Optional[float] = None  # ConvNeXt-T's, for the loader check
        self.tmp = Path(tempfile.mkdtemp(prefix=f"roadmap-doctor-{os.getpid()}-"))
        # full size on a GPU; a check of the code paths, in seconds, on a CPU
        self.px, self.batch, self.width = (224, 64, 1.0) if self.cuda else (32, 8, 0.25)

    # ------------------------------------------------------------------ running checks

    def check(self, name: str, fix: str, fn: Callable[[], str]):
        try:
            c = Check(name, "ok", fn(), fix)
        except Skip as e:
            c = Check(name, "skipped", str(e), "")
        except Exception as e:  # a failed check is a row, not a traceback
            if os.environ.get("ROADMAP_DEBUG"):
                traceback.print_exc()
            text = " ".join(str(e).split())
            c = Check(name, "FAIL", (text if isinstance(e, RoadmapError) else f"{type(e).__name__}: {text}")[:200], fix)
        self.checks.append(c)
        self.progress(c)

    def gpu_only(self):
        if not self.full:
            why = "not on CUDA" if torch.cuda.is_available() else "no CUDA device is visible"
            raise Skip(f"{why}; --all runs it here at small sizes")

    def run(self) -> List[Check]:
        try:
            self._run()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)  # ours alone: made by mkdtemp above
        return self.checks

    def _run(self):
        logging.getLogger("timm").setLevel(logging.ERROR)  # a 2-update schedule's notes are not news
        self.check("install", "reinstall: make install (or pip install -e .)", self.install)
        self.check("data", "make data (Fashion-MNIST from Debian), or --data PATH to an ImageFolder", self.load_data)
        for step in families():
            self.check(
                f"family {step}",
                "report it with the figure; rerun with ROADMAP_DEBUG=1",
                lambda step=step: self.family(step),
            )
        self.check("host reads", "a host sync was added to the loop: see roadmap/audit.py", self.host_reads)
        self.check("bf16 / TF32", "--set amp=false if the GPU's autocast fails", self.precision)
        for step in step_names():
            self.check(
                f"step {step}", "lower --set batch_size (memory), or report it", lambda step=step: self.step(step)
            )
        self.check("channels_last", "--set channels_last=false if NCHW is faster here", self.channels_last)
        self.check(
            "loader feed", "more loader workers (--set workers=, CPUs per GPU), faster JPEG decoding", self.loader_feed
        )
        self.check("DDP 1 process", "check NCCL/gloo: torchrun --standalone; NCCL_DEBUG=INFO", self.ddp)
        self.check("kill / resume", "--out must be writable and its checkpoints intact", self.kill_resume)
        self.check("torch.compile", "--set compile=false (the default)", self.compile)

    # ------------------------------------------------------------------ CPU and CUDA

    def install(self) -> str:
        import safetensors
        import timm

        import roadmap  # noqa: F401  (registers the steps as timm models)

        missing = [n for n in step_names() if not timm.is_model(f"roadmap_{n}")]
        if missing:
            raise RoadmapError(f"steps not registered as timm models: {', '.join(missing)}")
        cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
        return (
            f"Python {platform.python_version()}, torch {torch.__version__}{cuda}, timm {timm.__version__}, "
            f"safetensors {safetensors.__version__}; {cpus_available()} CPUs; {len(step_names())} steps in timm"
        )

    def load_data(self) -> str:
        ds = D.load_dataset(self.data)
        return f"{ds.name}: {ds.num_train} train / {ds.num_val} val, {ds.num_classes} classes"

    def recipe(self, sets=(), px=None, small=True):
        px = px or self.px
        base = ["randaug=none", f"img_size={px}", "max_updates=2", "warmup_epochs=1", "epochs=2", "ema_decay=0.999"]
        size = (
            ["width_scale=0.25", "batch_size=8", "eval_batch_size=16"]
            if small
            else [f"width_scale={self.width}", f"batch_size={self.batch}", f"eval_batch_size={self.batch}"]
        )
        return settings("imagenette", [*base, *size, *sets])

    def two_updates(self, step: str, px: int, small: bool, sets=()) -> dict:
        recipe, ex = self.recipe(sets, px, small)
        ds = synthetic(px, recipe.batch_size * 2, ex.eval_batch_size)
        cfg = scale_config(config_for(step), recipe, ds.num_classes)
        m = train_run(step, cfg, recipe, ex, ds, 0, self.device, progress=False)
        if not (m["train_loss"] == m["train_loss"] and abs(m["train_loss"]) < 1e4):
            raise RoadmapError(f"loss {m['train_loss']}")
        return m

    def family(self, step: str) -> str:
        return self._figure(self.two_updates(step, self.px if self.cuda else 32, small=not self.cuda))

    @staticmethod
    def _figure(m: dict) -> str:
        img_s = m["train_img_s"] or m["compute_img_s"] or 0
        mem = m["peak_mem_mb"]
        return f"loss {m['train_loss']:.2f}, {img_s:,.0f} img/s, peak {mem:,.0f} MB" + (
            f", MFU {100 * m['mfu']:.0f}%" if m.get("mfu") else ""
        )

    def host_reads(self) -> str:
        from .audit import DeviceAudit

        counts = []
        for updates in (2, 12):
            recipe, ex = self.recipe([f"max_updates={updates}", "epochs=12", "clip_grad=1.0"], 32, True)
            ds = synthetic(32, recipe.batch_size * updates, 16)
            cfg = scale_config(config_for("layer_norm"), recipe, ds.num_classes)
            model_cost(cfg, 32), model_cost(cfg, 224)  # fvcore's trace (cached) must not run under the audit
            with DeviceAudit(self.device) as audit:
                train_run("layer_norm", cfg, recipe, ex, ds, 0, self.device, progress=False)
            counts.append(len(audit.reads))
            if audit.misplaced:
                raise RoadmapError(f"a tensor off the device: {audit.misplaced[0]}")
        per_update = (counts[1] - counts[0]) / 10
        if per_update > 0.15:
            raise RoadmapError(f"{per_update:.2f} host reads per update (at most 0.15): {audit.summary()}")
        return f"{per_update:.2f} reads/update (one per 10 updates); every tensor on the device"

    # ------------------------------------------------------------------ CUDA (or --all)

    def precision(self) -> str:
        self.gpu_only()
        if not self.cuda:
            raise Skip("CPU: no autocast (float32)")
        configure_cuda(self.recipe()[1])
        dtype = amp_dtype(self.device, True)
        x = torch.randn(256, 256, device=self.device)
        with torch.autocast("cuda", dtype=dtype):
            y = x @ x
        assert y.dtype == dtype
        tf32 = torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        name = torch.cuda.get_device_name(self.device)
        return (
            f"{name}: autocast {str(dtype).replace('torch.', '')}"
            + (" (native)" if dtype == torch.bfloat16 else " + loss scaling")
            + f"; TF32 {'on' if tf32 else 'off'}"
        )

    def step(self, step: str) -> str:
        self.gpu_only()
        m = self.two_updates(step, self.px, small=False, sets=["max_updates=4", "epochs=2"])
        if step == "separate_downsampling":
            self.train_img_s = m["train_img_s"]
        return self._figure(m)

    def channels_last(self) -> str:
        self.gpu_only()
        nhwc, nchw = (
            self.two_updates(
                "separate_downsampling", self.px, small=False, sets=["max_updates=4", f"channels_last={c}"]
            )
            for c in ("true", "false")
        )
        return f"NHWC {nhwc['train_img_s']:,.0f} img/s, NCHW {nchw['train_img_s']:,.0f} img/s"

    def jpegs(self) -> Path:
        root = self.tmp / "jpegs"
        if not root.exists():
            write_jpeg_folder(root, per_class=48 if self.full else 8)
        return root

    def loader_feed(self) -> str:
        self.gpu_only()
        ds = D.load_dataset(str(self.jpegs()))
        recipe, ex = settings("imagenet", ["img_size=224", "batch_size=32"])
        workers = workers_for(ex, Dist())
        loader = D.folder_loader(ds, 224, 32, True, workers, total=3, randaug=recipe.randaug, pin=self.cuda)
        it = iter(loader)
        next(it)  # workers started
        t0, n = time.perf_counter(), 0
        for x, _ in it:
            assert x.dtype == torch.uint8
            n += len(x)
        feed = n / (time.perf_counter() - t0)
        need = self.train_img_s
        figure = f"{feed:,.0f} img/s with {workers} workers ({feed / max(workers, 1):,.0f} per worker)"
        if need:
            figure += f"; ConvNeXt-T trains at {need:,.0f} img/s"
            if self.cuda and feed < need:
                raise RoadmapError(f"{figure}: the GPU would wait for data")
        return figure

    def cli_run(self, out: Path, sets=(), torchrun: bool = False, **kw) -> subprocess.Popen:
        """`roadmap run` on the JPEG folder, as a user runs it (the CLI in a subprocess)."""
        px = 64 if self.cuda else 32
        args = [
            "-m",
            "roadmap",
            "run",
            "--preset",
            "imagenette",
            "--data",
            str(self.jpegs()),
            "--device",
            self.device.type,
            "--no-plot",
            "--no-progress",
            "--no-reference",
            "--no-weights",
            "--only",
            "layer_norm",
            "--out",
            str(out),
            "--set",
            f"img_size={px}",
            "--set",
            "batch_size=8",
            "--set",
            "eval_batch_size=16",
            "--set",
            "width_scale=0.25",
            "--set",
            "workers=0",
            "--set",
            "warmup_epochs=0",
        ]
        for s in sets:
            args += ["--set", s]
        pre = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun else []
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        return subprocess.Popen(
            [sys.executable, *pre, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw
        )

    def finished(self, proc: subprocess.Popen, timeout: float) -> str:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RoadmapError(f"no result in {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise RoadmapError(f"exit {proc.returncode}: {(err or out).strip().splitlines()[-1:]}")
        return out

    def record(self, out: Path) -> dict:
        import json

        files = list((out / "runs").glob("*.json"))
        if len(files) != 1:
            raise RoadmapError(f"{len(files)} run records in {out}")
        return json.loads(files[0].read_text())

    def ddp(self) -> str:
        self.gpu_only()
        out = self.tmp / "ddp"
        self.finished(self.cli_run(out, ["max_updates=2"], torchrun=True), 300)
        r = self.record(out)
        return f"world_size {r['world_size']}, {r['updates']} updates, loss {r['train_loss']:.3f}"

    def kill_resume(self) -> str:
        self.gpu_only()
        sets = ["max_updates=12", "epochs=3", "ckpt_every_s=0"]
        killed = self.tmp / "killed"
        proc = self.cli_run(killed, sets)
        deadline = time.time() + 300
        while proc.poll() is None and not list((killed / "checkpoints").glob("*.pt")) and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise Skip("the run ended before its first checkpoint: nothing to resume")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        self.finished(self.cli_run(killed, sets), 300)
        straight = self.tmp / "straight"
        self.finished(self.cli_run(straight, sets), 300)
        a, b = self.record(killed), self.record(straight)
        if a["resumed"] != 1:
            raise RoadmapError(f"the rerun did not resume (resumed={a['resumed']})")
        tol = 1e-3 if self.cuda else 1e-6  # bf16 and atomics on CUDA: equal up to rounding
        if abs(a["train_loss"] - b["train_loss"]) > tol * abs(b["train_loss"]):
            raise RoadmapError(f"resumed loss {a['train_loss']} != straight {b['train_loss']}")
        return f"resumed at update {a['updates']}: loss {a['train_loss']:.4f} = {b['train_loss']:.4f}"

    def compile(self) -> str:
        self.gpu_only()
        t0 = time.perf_counter()
        out = self.tmp / "compiled"
        try:
            self.finished(self.cli_run(out, ["max_updates=2", "compile=true"]), self.compile_timeout)
        except RoadmapError as e:
            if "no result in" in str(e):
                raise Skip(f"not done in {self.compile_timeout:.0f} s (--compile-timeout)") from None
            raise
        r = self.record(out)
        return f"compiled and trained in {time.perf_counter() - t0:.0f} s, loss {r['train_loss']:.3f}"


def table(checks: List[Check]) -> str:
    rows = [("check", "result", "figure", "if it fails")] + [(c.name, c.result, c.figure, c.fix) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def doctor(
    device: str = "auto",
    data: str = "fashion-mnist",
    full: Optional[bool] = None,
    compile_timeout: float = 300.0,
    verbose: bool = True,
) -> int:
    """Run the checks, print the table; 1 if any check failed, else 0."""
    say = (lambda c: print(f"  {c.name}: {c.result}", file=sys.stderr, flush=True)) if verbose else (lambda c: None)
    checks = Doctor(device, data, full, compile_timeout, say).run()
    print(table(checks))
    failed = [c.name for c in checks if c.result == "FAIL"]
    print(
        f"\n{len(checks) - len(failed)} of {len(checks)} checks passed or skipped"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
