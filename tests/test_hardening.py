"""Bad inputs and faults through the `roadmap` CLI: one clear line, no traceback, nothing lost.

Every case runs the command line in a process of its own, with its working directory in a
fresh empty folder, and checks: the exit code (2 for a bad input), one line on stderr
naming the problem, no `Traceback`, no file created or changed outside `--out` (the working
directory stays empty, the inputs stay as they were), and the finished runs already in
`--out` kept byte for byte.

Each process is forked from a server that imported roadmap once (multiprocessing's
forkserver), which saves the 3-5 s of imports a fresh interpreter pays per case; the cases
that are about the interpreter itself (a closed stdout pipe, `--help`) start
`python -m roadmap`. `ROADMAP_TEST_ENTRY=subprocess` starts `python -m roadmap` for every
case (slower, same checks).
"""

import gzip
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import roadmap_cmd

ENTRY = os.environ.get("ROADMAP_TEST_ENTRY", "fork")
# The demo preset, shrunk: tiny runs of 2 updates on the 64-image data below.
QUICK = [
    "--set",
    "batch_size=16",
    "--set",
    "max_updates=2",
    "--set",
    "eval_batch_size=32",
    "--no-progress",
    "--no-plot",
    "--threads",
    "1",
]


# ---- running the CLI ------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def error_lines(self):
        return [line for line in self.stderr.splitlines() if line.strip()]


def _child(argv, cwd, env, out_path, err_path):
    """In the forked process: the console script's `sys.exit(main())`, with our cwd, env and files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    import warnings

    warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore does for a fresh interpreter
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    from roadmap.cli import main

    sys.exit(main(list(argv)))


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(
            ["roadmap", "roadmap.cli", "roadmap.runner", "roadmap.custom", "roadmap.report", "roadmap.plot"]
        )
    return _CTX


def cli(*args, cwd, env=None, entry=None, timeout=300) -> Result:
    """Run `roadmap ARGS` in its own process (see the module docstring)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    argv = [str(a) for a in args]
    if (entry or ENTRY) == "subprocess":
        proc = subprocess.run(roadmap_cmd(*argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)
    logs = Path(env["ROADMAP_TEST_LOGS"])
    out_path, err_path = logs / "stdout", logs / "stderr"
    p = _context().Process(target=_child, args=(argv, str(cwd), env, str(out_path), str(err_path)))
    p.start()
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise TimeoutError(f"roadmap {' '.join(argv)} took over {timeout} s")
    return Result(p.exitcode, out_path.read_text(), err_path.read_text())


def snapshot(folder: Path) -> Dict[str, str]:
    """Every file under `folder`: relative path -> hash of its bytes."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha1(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_clear_line(res: Result, *needles: str, code: int = 2):
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = res.error_lines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


# ---- tiny inputs the cases use ----------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool = True):
    head = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">i", d) for d in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fashion(folder: Path, n_train=64, n_val=32, labels=None) -> Path:
    """Fashion-MNIST's four idx.gz files, with random 28 x 28 images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_val)):
        y = np.arange(n) % 10 if labels is None else np.full(n, labels)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return folder


def make_cifar(folder: Path, n=32, train: Optional[bytes] = None) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    if train is not None:
        (folder / "data_batch_1").write_bytes(train)
    return folder


def make_images(root: Path, classes=("cat", "dog"), per_class=8, val_classes=None, val=True, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, names in (("train", classes), ("val", val_classes or classes)):
        if split == "val" and not val:
            continue
        for name in names:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return root


class Evil:
    """A pickle that would create a file if anything unpickled it without restrictions."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    make_fashion(root / "fmnist")
    make_fashion(root / "fmnist_oneclass", labels=3)
    make_fashion(root / "fmnist_badlabel", labels=12)
    trunc = make_fashion(root / "fmnist_truncgz")
    gz = trunc / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    bad = make_fashion(root / "fmnist_badmagic")
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04 not idx"))
    partial = make_fashion(root / "fmnist_partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    (root / "empty_dir").mkdir()
    make_cifar(root / "cifar_ok")
    make_cifar(root / "cifar_empty", train=b"")
    make_cifar(root / "cifar_evil", train=pickle.dumps({"data": Evil(root / "PWNED"), "labels": [0]}))
    make_cifar(root / "cifar_shape", train=pickle.dumps({"data": np.zeros(100, np.uint8), "labels": [0]}))
    make_cifar(root / "cifar_none", train=pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}))
    make_cifar(root / "cifar_list", train=pickle.dumps([1, 2, 3]))
    make_images(root / "folder_oneclass", classes=("cat",))
    make_images(root / "folder_mismatch", classes=("cat", "dog"), val_classes=("cat", "cow"))
    make_images(root / "folder_noval", val=False)
    (root / "latin1.toml").write_bytes('name = "caf\xe9"\nstart = "resnet50"\n'.encode("latin-1"))
    (root / "invalid.toml").write_text('start = "resnet50"\n[[step]\n')
    (root / "unknown_toggle.toml").write_text('[[step]]\nname = "x"\nchanges = { kernal_size = 5 }\n')
    (root / "a_file").write_text("not a folder\n")
    garbage = root / "results_garbage"
    garbage.mkdir()
    (garbage / "results.csv").write_bytes(bytes(range(256)) * 8)
    empty = root / "results_empty"
    empty.mkdir()
    (empty / "results.csv").write_text("")
    badjson = root / "results_badjson"
    (badjson / "runs").mkdir(parents=True)
    (badjson / "runs" / "0123456789abcdef.json").write_text('{"key": "0123456789abcdef", "top1": ')
    notrun = root / "results_notrun"
    (notrun / "runs").mkdir(parents=True)
    (notrun / "runs" / "0123456789abcdef.json").write_text("[1, 2, 3]")
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory, inputs):
    """A results folder holding one finished run (resnet50, seed 0) on the tiny data."""
    work = tmp_path_factory.mktemp("finished")
    res = cli(*FINISHED, "--out", work / "out", cwd=work, env=_env(inputs, work))
    assert res.returncode == 0, res.stderr
    return work / "out"


def _env(inputs: Path, logs: Path, **extra) -> Dict[str, str]:
    return {
        "ROADMAP_FASHION_MNIST": str(inputs / "fmnist"),
        "ROADMAP_TEST_LOGS": str(logs),
        "HOME": str(logs),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


@pytest.fixture
def sandbox(tmp_path, inputs, finished):
    """cwd: an empty folder; out: a copy of the finished folder; logs and HOME elsewhere."""
    box = dict(cwd=tmp_path / "cwd", out=tmp_path / "out", logs=tmp_path / "logs")
    box["cwd"].mkdir()
    box["logs"].mkdir()
    shutil.copytree(finished, box["out"])
    return box


# ---- the table of bad inputs -------------------------------------------------------------


@dataclass
class Case:
    id: str
    args: Sequence[str]  # after `roadmap`; {in} = the inputs folder, {out} = --out
    needles: Sequence[str]  # what the one line on stderr must say
    env: Dict[str, str] = field(default_factory=dict)
    code: int = 2
    out: bool = True  # add --out {out} (a copy of a finished results folder)
    check: Optional[Callable[[Path], None]] = None  # more checks, given the inputs folder


def _not_pwned(inputs: Path):
    assert not (inputs / "PWNED").exists(), "the crafted pickle ran code"


RUN = ("run", "--only", "resnet50", *QUICK)
FINISHED = (*RUN, "--set", "hflip=False", "--set", "amp=no")  # the run in `finished`
CASES = [
    # doctor: its flags are checked before any check runs
    Case("doctor-device-bogus", ("doctor", "--device", "bogus"), ["--device bogus", "not a device"], out=False),
    Case("doctor-threads-0", ("doctor", "--threads", "0"), ["--threads 0"], out=False),
    # --set: converted by the field's type and range-checked before any data is loaded
    Case("set-epochs-abc", (*RUN, "--set", "epochs=abc"), ["--set epochs=abc", "a number > 0"]),
    Case("set-batch-size-0", (*RUN, "--set", "batch_size=0"), ["batch_size=0", "integer >= 2"]),
    Case("set-lr-0", (*RUN, "--set", "lr=0"), ["lr=0", "> 0"]),
    Case("set-lr-nan", (*RUN, "--set", "lr=nan"), ["lr=nan", "> 0"]),
    Case("set-smoothing-1.5", (*RUN, "--set", "smoothing=1.5"), ["smoothing=1.5", "[0, 1)"]),
    Case("set-randaug-bogus", (*RUN, "--set", "randaug=bogus"), ["randaug=bogus", "RandAugment"]),
    Case("set-workers-neg", (*RUN, "--set", "workers=-1"), ["workers=-1", ">= 0"]),
    Case("set-img-size-small", (*RUN, "--set", "img_size=16"), ["img_size=16", "too small", "32"]),
    Case("set-max-updates-0", (*RUN, "--set", "max_updates=0"), ["max_updates=0", ">= 1"]),
    Case("set-epochs-0", (*RUN, "--set", "epochs=0"), ["epochs=0", "> 0"]),
    Case("set-epochs-none", (*RUN, "--set", "epochs=none"), ["epochs=none", "a number"]),
    Case("set-hflip-maybe", (*RUN, "--set", "hflip=maybe"), ["hflip=maybe", "true or false"]),
    Case("set-ema-decay-1.5", (*RUN, "--set", "ema_decay=1.5"), ["ema_decay=1.5", "(0, 1)"]),
    Case("set-betas-one", (*RUN, "--set", "betas=0.9"), ["betas=0.9", "two numbers"]),
    Case("set-reprob-2", (*RUN, "--set", "reprob=2"), ["reprob=2", "probability"]),
    Case("set-max-shift-huge", (*RUN, "--set", "max_shift=40"), ["max_shift=40", "img_size"]),
    Case("set-unknown-field", (*RUN, "--set", "epochz=3"), ["unknown recipe field", "did you mean 'epochs'"]),
    Case("set-no-equals", (*RUN, "--set", "epochs"), ["expected key=value"]),
    # what to run
    Case("only-empty", ("run", "--only", "", *QUICK), ["--only", "names nothing"]),
    Case("only-comma", ("run", "--only", ",", *QUICK), ["--only", "names nothing"]),
    Case(
        "kernel-sizes-empty",
        ("run", "--only", "large_kernel", "--kernel-sizes", "", *QUICK),
        ["--kernel-sizes", "names nothing"],
    ),
    Case(
        "kernel-sizes-even",
        ("run", "--only", "large_kernel", "--kernel-sizes", "4", *QUICK),
        ["not an odd kernel size"],
    ),
    Case(
        "kernel-sizes-text",
        ("run", "--only", "large_kernel", "--kernel-sizes", "3,x", *QUICK),
        ["--kernel-sizes", "comma-separated"],
    ),
    Case("upto-typo", ("run", "--upto", "large_kernal", *QUICK), ["did you mean 'large_kernel'"]),
    Case("upto-empty", ("run", "--upto", "", *QUICK), ["--upto is empty"]),
    Case("from-after-upto", ("run", "--from", "gelu", "--upto", "resnet50", *QUICK), ["comes after"]),
    Case("seeds-0", (*RUN, "--seeds", "0"), ["--seeds must be at least 1"]),
    Case("seeds-text", (*RUN, "--seeds", "x"), ["--seeds", "invalid int"]),
    Case("seed-offset-huge", (*RUN, "--seed-offset", str(10**30)), ["--seed-offset", "2^31"]),
    Case("seed-offset-negative", (*RUN, "--seed-offset", "-1"), ["--seed-offset -1"]),
    Case("threads-negative", (*RUN, "--threads", "-3"), ["--threads -3", "at least 1"]),
    Case("device-foo", (*RUN, "--device", "foo"), ["--device foo", "cpu"]),
    Case("preset-unknown", ("run", "--preset", "huge", *QUICK), ["unknown preset 'huge'"]),
    Case("roadmap-missing", ("run", "--roadmap", "{in}/nope.toml", *QUICK), ["no such file"]),
    Case("roadmap-not-utf8", ("run", "--roadmap", "{in}/latin1.toml", *QUICK), ["latin1.toml", "not UTF-8"]),
    Case("roadmap-invalid-toml", ("run", "--roadmap", "{in}/invalid.toml", *QUICK), ["not valid TOML"]),
    Case(
        "roadmap-unknown-toggle",
        ("run", "--roadmap", "{in}/unknown_toggle.toml", *QUICK),
        ["unknown_toggle.toml, line 3", "did you mean 'kernel_size'"],
    ),
    Case("roadmap-with-only", ("run", "--roadmap", "micro_first", "--only", "gelu", *QUICK), ["drop --only"]),
    # data
    Case("data-missing", (*RUN, "--data", "{in}/nope"), ["no such file or directory", "ImageFolder"]),
    Case("data-empty-dir", (*RUN, "--data", "{in}/empty_dir"), ["not a dataset layout"]),
    Case(
        "fashion-env-missing",
        RUN,
        ["ROADMAP_FASHION_MNIST", "no such folder"],
        env={"ROADMAP_FASHION_MNIST": "{in}/nope"},
    ),
    Case(
        "fashion-env-incomplete",
        RUN,
        ["ROADMAP_FASHION_MNIST", "lacks t10k-labels-idx1-ubyte"],
        env={"ROADMAP_FASHION_MNIST": "{in}/fmnist_partial"},
    ),
    Case(
        "fashion-truncated-gz",
        RUN,
        ["train-images-idx3-ubyte.gz", "cannot read it"],
        env={"ROADMAP_FASHION_MNIST": "{in}/fmnist_truncgz"},
    ),
    Case(
        "fashion-not-idx",
        RUN,
        ["train-images-idx3-ubyte.gz", "not an uint8 IDX file"],
        env={"ROADMAP_FASHION_MNIST": "{in}/fmnist_badmagic"},
    ),
    Case("fashion-one-class", RUN, ["1 class", "at least two"], env={"ROADMAP_FASHION_MNIST": "{in}/fmnist_oneclass"}),
    Case(
        "fashion-label-out-of-range", RUN, ["label 12", "0..9"], env={"ROADMAP_FASHION_MNIST": "{in}/fmnist_badlabel"}
    ),
    Case("train-subset-one-class", (*RUN, "--set", "train_subset=1"), ["1 class", "train_subset"]),
    Case(
        "batch-larger-than-data",
        (*RUN, "--set", "batch_size=100", "--set", "max_updates=1"),
        ["64 training images cannot fill one global batch of 100"],
    ),
    Case("cifar-empty-batch", (*RUN, "--data", "{in}/cifar_empty"), ["data_batch_1", "empty"]),
    Case(
        "cifar-crafted-pickle",
        (*RUN, "--data", "{in}/cifar_evil"),
        ["data_batch_1", "refused", "nothing was run"],
        check=_not_pwned,
    ),
    Case("cifar-wrong-shape", (*RUN, "--data", "{in}/cifar_shape"), ["data_batch_1", "3072"]),
    Case("cifar-no-images", (*RUN, "--data", "{in}/cifar_none"), ["data_batch_1", "holds no images"]),
    Case("cifar-not-a-dict", (*RUN, "--data", "{in}/cifar_list"), ["data_batch_1", "not a dict"]),
    Case("folder-one-class", (*RUN, "--data", "{in}/folder_oneclass"), ["1 class folder", "at least two"]),
    Case("folder-class-mismatch", (*RUN, "--data", "{in}/folder_mismatch"), ["different class folders"]),
    Case("folder-no-val", (*RUN, "--data", "{in}/folder_noval"), ["no val/ folder"]),
    # where results go
    Case("out-is-a-file", (*RUN, "--out", "{in}/a_file"), ["a_file", "is a file, not a folder"], out=False),
    Case("out-under-a-file", (*RUN, "--out", "{in}/a_file/sub"), ["a_file/sub", "cannot write"], out=False),
    # the other commands
    Case("flops-resolution-0", ("flops", "--resolution", "0"), ["--resolution", "at least 32"], out=False),
    Case("show-resolution-16", ("show", "gelu", "--resolution", "16"), ["--resolution", "at least 32"], out=False),
    Case(
        "show-unknown-step",
        ("show", "large_kernal"),
        ["unknown step 'large_kernal'", "did you mean 'large_kernel'"],
        out=False,
    ),
    Case("plot-garbage-csv", ("plot", "{in}/results_garbage"), ["results.csv is not a readable table"], out=False),
    Case("plot-empty-csv", ("plot", "{in}/results_empty"), ["results.csv is not a readable table"], out=False),
    Case("plot-missing-folder", ("plot", "{in}/nope"), ["no such results folder"], out=False),
    Case(
        "plot-corrupt-run-json",
        ("plot", "{in}/results_badjson"),
        ["0123456789abcdef.json is not valid JSON"],
        out=False,
    ),
    Case("plot-run-json-not-object", ("plot", "{in}/results_notrun"), ["is not a run record"], out=False),
    Case("report-garbage-csv", ("report", "{in}/results_garbage", "--no-plot"), ["not a readable table"], out=False),
    Case("unknown-command", ("frobnicate",), ["invalid choice: 'frobnicate'"], out=False),
    Case("unknown-option", ("list", "--colour"), ["unrecognized arguments: --colour"], out=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case, sandbox, inputs):
    fill = lambda s: str(s).replace("{in}", str(inputs)).replace("{out}", str(sandbox["out"]))  # noqa: E731
    args = [fill(a) for a in case.args] + (["--out", sandbox["out"]] if case.out else [])
    before_inputs, before_out = snapshot(inputs), snapshot(sandbox["out"])
    res = cli(*args, cwd=sandbox["cwd"], env=_env(inputs, sandbox["logs"], **{k: fill(v) for k, v in case.env.items()}))
    assert_one_clear_line(res, *case.needles, code=case.code)
    assert list(sandbox["cwd"].iterdir()) == [], "files were written outside --out"
    assert snapshot(inputs) == before_inputs, "an input file was changed"
    assert snapshot(sandbox["out"]) == before_out, "the finished results were changed"
    if case.check:
        case.check(inputs)


def test_the_table_has_no_duplicates_and_reaches_every_command():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), "two cases share an id"
    calls = [(tuple(c.args), tuple(sorted(c.env.items())), c.out) for c in CASES]
    assert len(set(calls)) == len(calls), "two cases run the same command line"
    from roadmap.cli import build_parser

    commands = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    assert commands - {c.args[0] for c in CASES} <= {"bench"}  # its bad arguments: tests/test_bench.py


# ---- --set means what it says -----------------------------------------------------------


def test_false_spelled_as_text_is_false(finished):
    recipe = json.loads(pd.read_csv(finished / "results.csv")["recipe"].iloc[0])
    assert recipe["hflip"] is False and recipe["amp"] is False  # --set hflip=False, amp=no


def test_set_and_roadmap_toggles_share_one_conversion():
    from roadmap.custom import _Invalid, check_toggle
    from roadmap.recipe import get_preset
    from roadmap.values import convert, parse_text

    demo = get_preset("demo")
    assert [demo.with_overrides([f"hflip={t}"]).hflip for t in ("False", "no", "0", "off", "true", "YES")] == [
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    # run keys of valid values are what they always were: "2" is the int 2, not 2.0
    assert demo.with_overrides(["epochs=2"]).training_key()["epochs"] == 2
    assert type(demo.with_overrides(["epochs=2"]).training_key()["epochs"]) is int
    assert demo.with_overrides(["betas=0.9,0.95"]).betas == (0.9, 0.95)
    assert demo.with_overrides(["randaug=none"]).randaug is None
    assert check_toggle("depthwise", True) is True and check_toggle("layer_scale_init", 1) == 1.0
    assert convert(parse_text("7", int), int) == check_toggle("kernel_size", 7) == 7
    with pytest.raises(_Invalid, match="true or false"):
        check_toggle("depthwise", "no")  # a TOML file says false, not "no"


# ---- faults inside runs -----------------------------------------------------------------


def _box(tmp_path, inputs):
    cwd, logs = tmp_path / "cwd", tmp_path / "logs"
    cwd.mkdir()
    logs.mkdir()
    return cwd, _env(inputs, logs)


def test_a_failing_run_is_recorded_and_the_next_one_runs(tmp_path, inputs):
    # A row named too long for a file name: its TensorBoard folder cannot be made (an OS error).
    long_name = "x" * 300
    (tmp_path / "long.toml").write_text(
        f'start = "resnet50"\nmode = "independent"\n[[step]]\nname = "{long_name}"\n'
        'paper_step = "stage_ratio"\n[[step]]\npaper_step = "patchify_stem"\n'
    )
    cwd, env = _box(tmp_path, inputs)
    out = tmp_path / "out"
    res = cli(
        "run", "--roadmap", tmp_path / "long.toml", "--log", "tensorboard", "--out", out, *QUICK, cwd=cwd, env=env
    )
    assert_one_clear_line(res, "1 of 3 run(s) failed", "File name too long", "--retry-failed", code=1)
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["ok", "failed", "ok"]  # the run after the failure ran
    assert "File name too long" in table["error"].iloc[1]
    assert list(cwd.iterdir()) == []
    kept = snapshot(out / "runs")

    again = cli(
        "run", "--roadmap", tmp_path / "long.toml", "--log", "tensorboard", "--out", out, *QUICK, cwd=cwd, env=env
    )
    assert_one_clear_line(again, "failed", "--retry-failed", code=1)
    assert again.stdout.count("done earlier, skipped") == 2
    assert "failed earlier: OSError: [Errno 36] File name too long" in again.stdout
    assert "--retry-failed to try again" in again.stdout
    assert snapshot(out / "runs") == kept, "a rerun changed recorded runs"

    retry = cli(
        "run",
        "--roadmap",
        tmp_path / "long.toml",
        "--log",
        "tensorboard",
        "--out",
        out,
        *QUICK,
        "--retry-failed",
        cwd=cwd,
        env=env,
    )
    assert retry.returncode == 1 and "trying again" in retry.stdout and "Traceback" not in retry.stderr


def test_a_truncated_image_fails_before_training_and_the_fix_works(tmp_path, inputs):
    # issue 31, item 8: one unreadable file in val/ is found before any step trains (not after
    # every step has), a macOS ._x.png beside it is no image, and the fix the line gives works
    data = make_images(tmp_path / "imgs")
    bad = data / "val" / "dog" / "3.png"
    bad.write_bytes(bad.read_bytes()[:300])
    (data / "val" / "dog" / "._3.png").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X")
    cwd, env = _box(tmp_path, inputs)
    argv = (
        "run",
        "--only",
        "resnet50,gelu",
        "--data",
        data,
        "--preset",
        "imagenette",
        "--set",
        "img_size=32",
        "--set",
        "workers=0",
        "--set",
        "width_scale=0.25",
        "--set",
        "warmup_epochs=0",
        "--out",
        tmp_path / "out",
        *QUICK,
    )
    res = cli(*argv, cwd=cwd, env=env)
    assert_one_clear_line(res, f"{bad}: cannot read this image", "nothing has trained", "rerun the same command")
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained, nothing recorded
    bad.unlink()
    again = cli(*argv, cwd=cwd, env=env)
    assert again.returncode == 0, again.stderr
    assert list(pd.read_csv(tmp_path / "out" / "results.csv")["status"]) == ["ok", "ok"]


def _tiny_key(inputs, monkeypatch, *sets):
    """The run key `roadmap run --only resnet50 QUICK` gives on the tiny data, and its setup."""
    from roadmap import data as D
    from roadmap.plan import data_identity, paper_plan, plan_runs
    from roadmap.recipe import settings

    monkeypatch.setenv("ROADMAP_FASHION_MNIST", str(inputs / "fmnist"))
    ds = D.load_dataset("fashion-mnist")
    recipe, ex = settings("demo", ["batch_size=16", "max_updates=2", "eval_batch_size=32", *sets])
    spec = paper_plan(only=["resnet50"])[0]
    run = plan_runs([spec], recipe, data_identity(ds), [0])[0]
    return run.key, (recipe, ex), run, ds


@pytest.mark.parametrize("kind", ["garbage", "crafted", "foreign"])
def test_a_bad_checkpoint_is_moved_aside_and_the_run_restarts(kind, tmp_path, inputs, monkeypatch):
    key, *_ = _tiny_key(inputs, monkeypatch)
    out = tmp_path / "out"
    ckpt = out / "checkpoints" / f"{key}.pt"
    ckpt.parent.mkdir(parents=True)
    if kind == "garbage":
        ckpt.write_bytes(b"PK\x03\x04 half a zip file")
    elif kind == "crafted":
        torch.save({"model": Evil(inputs / "PWNED"), "optimizer": {}, "state": {}}, ckpt)
    else:  # loads fine, but is another model's: applying it fails half-way
        torch.save({"model": {"fc.weight": torch.zeros(3, 3)}, "optimizer": {}, "state": {}}, ckpt)
    cwd, env = _box(tmp_path, inputs)
    res = cli("run", "--only", "resnet50", "--out", out, *QUICK, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.error_lines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"checkpoint {ckpt} could not be loaded" in lines[0] and "from scratch" in lines[0]
    assert (out / "checkpoints" / f"{key}.pt.bad").is_file() and not ckpt.exists()
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["status"] == "ok" and row["resumed"] == 0 and row["key"] == key
    _not_pwned(inputs)


def test_resume_adds_up_wall_time_and_warns_about_threads(tmp_path, inputs, monkeypatch):
    from dataclasses import replace

    from roadmap.train import train_run

    key, (recipe, ex), run, ds = _tiny_key(inputs, monkeypatch)
    ckpt = tmp_path / "out" / "checkpoints" / f"{key}.pt"
    ckpt.parent.mkdir(parents=True)

    class Stop(Exception):
        pass

    def stop_after_first_checkpoint(m):
        if m["update"] == 2:
            raise Stop

    # ckpt_every_s is not part of the key: save after every update, then stop after one
    with pytest.raises(Stop):
        train_run(
            run.spec.name,
            run.cfg,
            recipe,
            replace(ex, ckpt_every_s=0),
            ds,
            0,
            torch.device("cpu"),
            str(ckpt),
            progress=False,
            on_update=stop_after_first_checkpoint,
        )
    state = torch.load(ckpt, weights_only=True)
    assert state["state"]["update"] == 1
    state["state"]["wall_s"], state["threads"] = 1000.0, 7  # an earlier process's time; another machine
    torch.save(state, ckpt)
    cwd, env = _box(tmp_path, inputs)
    res = cli("run", "--only", "resnet50", "--out", tmp_path / "out", *QUICK, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.error_lines()
    assert len(lines) == 1 and "made with 7 CPU thread(s)" in lines[0] and "--threads 7" in lines[0]
    row = pd.read_csv(tmp_path / "out" / "results.csv").iloc[0]
    assert row["resumed"] == 1 and row["updates"] == 2 and row["threads"] == 1
    assert 1000 < row["wall_s"] < 1000 + 300


def test_an_error_in_a_data_worker_comes_back_as_one_line(tmp_path):
    from roadmap import data as D
    from roadmap.runner import error_line

    folder = make_images(tmp_path / "imgs", per_class=2)
    bad = folder / "val" / "cat" / "1.png"
    ds = D.load_dataset(str(folder))
    bad.write_bytes(bad.read_bytes()[:300])  # cut short after the load checked it
    with pytest.raises(Exception) as caught:
        for _ in D.folder_loader(ds, 32, 4, train=False, workers=1):
            pass
    assert "Original Traceback" in str(caught.value)  # the worker's traceback rides along
    line = error_line(caught.value)
    assert line.startswith(f"{bad}: cannot read this image") and "\n" not in line


def test_stale_temp_files_are_swept_and_fresh_ones_kept(tmp_path, inputs, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    old = [
        out / "runs" / ".roadmap-tmp-123-beef0000-abc.json.part",
        out / "checkpoints" / ".roadmap-tmp-99-cafe0000-k.pt.part",
        out / ".roadmap-tmp-5-f00d0000-results.csv.part",
    ]
    (out / "checkpoints").mkdir(exist_ok=True)
    # the user's own temporary files: never the tool's to delete, however old
    users = [out / "foo.tmp1", out / "runs" / ".notes.json.tmp123-beef", out / "checkpoints" / "k.pt.tmp99"]
    for p in old + users:
        p.write_text("half")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    fresh = out / "runs" / ".roadmap-tmp-456-f00d0000-def.json.part"  # another live process may be writing it
    fresh.write_text("half")
    cwd, env = _box(tmp_path, inputs)
    res = cli(*FINISHED, "--out", out, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    assert "removed 3 stale temporary file(s)" in res.stdout and "done earlier, skipped" in res.stdout
    assert not any(p.exists() for p in old) and fresh.exists()
    assert all(p.read_text() == "half" for p in users)


def test_a_corrupt_run_record_is_named_and_kept(tmp_path, inputs, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    record = next((out / "runs").glob("*.json"))
    record.write_text('{"key": "trunc')
    cwd, env = _box(tmp_path, inputs)
    res = cli(*FINISHED, "--out", out, cwd=cwd, env=env)
    assert_one_clear_line(res, f"{record} is not valid JSON", "delete it")
    assert record.read_text() == '{"key": "trunc'


def test_read_only_out_is_one_line(tmp_path, inputs):
    if os.geteuid() != 0:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
        out = target / "out"
    elif Path("/sys").is_dir() and not os.access("/sys", os.W_OK):
        out = Path("/sys/roadmap-test-out")
    else:  # root can write anywhere writable; /sys refuses even root on Linux
        out = Path("/sys/roadmap-test-out")
        try:
            out.mkdir()
            out.rmdir()
            pytest.skip("no read-only place to point --out at")
        except OSError:
            pass
    cwd, env = _box(tmp_path, inputs)
    res = cli("run", "--only", "resnet50", "--out", out, *QUICK, cwd=cwd, env=env)
    assert_one_clear_line(res, str(out), "cannot write results there")


def test_merging_disagreeing_runs_warns(tmp_path, inputs, finished):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(finished, a)
    shutil.copytree(finished, b)
    record = next((b / "runs").glob("*.json"))
    row = json.loads(record.read_text())
    row["top1"], row["threads"] = row["top1"] + 5, 2
    row.pop("val_correct"), row.pop("val_n")  # another machine's hits would differ too: none here
    record.write_text(json.dumps(row))
    cwd, env = _box(tmp_path, inputs)
    res = cli("report", a, b, "--out", tmp_path / "merged", "--no-plot", cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "1 run key(s) recorded with different numbers" in res.stderr and f"in {b}" in res.stderr
    assert "mix CPU runs made with 1, 2 threads" in res.stderr


def test_results_files_are_0644_like_the_figures(finished):
    mode = 0o666 & ~_umask()
    for p in [finished / "results.csv", finished / "summary.csv", *(finished / "runs").glob("*.json")]:
        assert p.stat().st_mode & 0o777 == mode, p


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# ---- a full disk ------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_full_disk_while_writing_results_says_so(tmp_path, monkeypatch):
    from roadmap import results as R
    from roadmap.errors import RoadmapError

    monkeypatch.setattr(R.os, "fsync", _enospc)
    with pytest.raises(RoadmapError, match=f"no space left on {tmp_path}"):
        R.atomic_write_text(tmp_path / "results.csv", "a,b\n")
    assert list(tmp_path.iterdir()) == [], "the temporary file is removed"


def test_full_disk_while_checkpointing_says_so(tmp_path, monkeypatch):
    from roadmap.errors import RoadmapError
    from roadmap.train import state as T

    def half_written(obj, f):
        f.write(b"PK" * 1000)
        _enospc()

    monkeypatch.setattr(T.torch, "save", half_written)
    with pytest.raises(RoadmapError, match=f"no space left on {tmp_path}"):
        T.atomic_torch_save({"a": 1}, str(tmp_path / "k.pt"))
    assert list(tmp_path.iterdir()) == []


def test_cifar_batches_from_numpy_1_still_load(tmp_path):
    # CIFAR's own files were pickled with numpy 1 (module numpy.core.multiarray).
    from roadmap import data as D

    folder = make_cifar(tmp_path / "c")
    for name in ("data_batch_1", "test_batch"):
        raw = pickle.dumps(pickle.loads((folder / name).read_bytes()), protocol=2)
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        assert b"numpy.core.multiarray" in (folder / name).read_bytes()
    ds = D.load_dataset(str(folder))
    assert ds.train_images.shape == (32, 3, 32, 32) and ds.num_classes == 10


# ---- the interpreter itself ---------------------------------------------------------------


def test_help_of_every_command(tmp_path):
    res = cli("--help", cwd=tmp_path, entry="subprocess")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    commands = ["list", "flops", "show", "run", "plot", "report", "bench"]
    assert all(c in res.stdout for c in commands)
    env = {"ROADMAP_TEST_LOGS": str(tmp_path)}
    for c in commands:
        sub = cli(c, "--help", cwd=tmp_path, env=env)
        assert sub.returncode == 0 and sub.stderr == "" and "usage: roadmap" in sub.stdout, (c, sub.stderr)


def test_a_closed_pipe_is_not_an_error(tmp_path):
    # `roadmap list | head -1` where head has gone before roadmap writes
    proc = subprocess.Popen(
        roadmap_cmd("list"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 0 and err == "", err


def test_real_entry_point_gives_the_same_line(tmp_path, inputs):
    # one bad input through `python -m roadmap`, as the forked cases do it
    cwd, env = _box(tmp_path, inputs)
    res = cli(*RUN, "--set", "smoothing=1.5", "--out", tmp_path / "out", cwd=cwd, env=env, entry="subprocess")
    assert_one_clear_line(res, "--set smoothing=1.5: smoothing takes a number in [0, 1)")
    assert list(cwd.iterdir()) == [] and not (tmp_path / "out").exists()
