import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# Keep CPU tests predictable on the 2-core CI machine. `make test` runs pytest-xdist workers
# (`-n auto`: one per core); each then gets its share of the cores, and so do the notebook
# kernels and CLIs it starts (OMP_NUM_THREADS): OpenMP threads that outnumber the cores spin
# against each other and slow everything down many times over.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
warnings.filterwarnings("ignore", category=FutureWarning, module="fvcore")


def pytest_collection_modifyitems(items):
    """The tests marked `long` first (stable order otherwise): pytest-xdist hands out tests in
    this order, and a long test that starts last keeps one worker busy while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _image_cache(tmp_path_factory):
    """ImageFolder digests and header checks are cached under $XDG_CACHE_HOME/roadmap: the
    session's own folder, never the user's (the CLIs tests start inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


# ---- one tiny roadmap run for the whole session ---------------------------------------------

# What the shared run trains, as `roadmap run` arguments (with helpers.TINY): 2 steps x 2 seeds.
TINY_RUN_STEPS = ("resnet50", "separate_downsampling")
TINY_RUN_SEEDS = 2


@dataclass(frozen=True)
class TinyRun:
    folder: Path  # a results folder, named as `roadmap run` names its default (preset-data)
    stdout: str  # what `roadmap run` printed


@pytest.fixture(scope="session")
def tiny_run_shared(tmp_path_factory):
    """`roadmap run --only resnet50,separate_downsampling --seeds 2 --log tensorboard` on helpers.TINY,
    run once per session: tables, figure, tensorboard logs, run records.

    Shared by test_runner, test_report and test_reference: READ ONLY. A test that changes the
    folder (reruns into it, deletes the figure, writes a report) takes `tiny_run_copy` instead.
    """
    from helpers import TINY, run_roadmap

    folder = tmp_path_factory.mktemp("tiny_run") / "demo-fashion-mnist"
    proc = run_roadmap(
        "run",
        "--only",
        ",".join(TINY_RUN_STEPS),
        "--seeds",
        TINY_RUN_SEEDS,
        "--log",
        "tensorboard",
        "--out",
        folder,
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr
    return TinyRun(folder, proc.stdout)


@pytest.fixture
def tiny_run_copy(tiny_run_shared, tmp_path):
    """A copy of the shared tiny run that this test may change."""
    return Path(shutil.copytree(tiny_run_shared.folder, tmp_path / tiny_run_shared.folder.name))


# ---- full-size FLOPs, traced once --------------------------------------------------------------


@pytest.fixture(scope="session")
def cached_gflops():
    """`roadmap.measure.count_gflops`, remembered per architecture: fvcore traces each
    (model config, resolution) once per session. Tracing one full-size step at 224 px takes
    seconds, and the 13 steps are counted by several tests (test_steps, `roadmap flops`)."""
    from roadmap.measure import count_gflops

    counted = {}

    def gflops(model, resolution: int = 224, in_chans: int = 3) -> float:
        cfg = getattr(model, "cfg", None)
        if cfg is None:  # not a RoadmapNet: its config does not say what it computes
            return count_gflops(model, resolution, in_chans)
        key = (type(model).__qualname__, repr(cfg), resolution, in_chans)
        if key not in counted:
            counted[key] = count_gflops(model, resolution, in_chans)
        return counted[key]

    return gflops


@pytest.fixture
def flops_traced_once(cached_gflops, monkeypatch):
    """What roadmap.measure counts with (`roadmap flops`, flops_table) is `cached_gflops`."""
    import roadmap.measure

    monkeypatch.setattr(roadmap.measure, "count_gflops", cached_gflops)
    return cached_gflops


@pytest.fixture
def one_thread():
    """One CPU thread: two OpenMP threads on two cores that other work shares slow down 40x
    (the training tests use it: `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
