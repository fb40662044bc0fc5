"""`roadmap` command line: list, flops, show, run, plot, report, bench. Every parser is here.

Every mistake the user can make is one line on stderr, `roadmap: error: ...`, and exit 2;
runs that failed (recorded as such) exit 1; an interrupt (Ctrl-C, SIGTERM) says how to
resume; nothing ends in a traceback unless ROADMAP_DEBUG=1 asks for one.

Commands import what they need when they run: `roadmap list` and `--help` load no torch.
"""

import argparse
import contextlib
import errno
import functools
import io
import os
import signal
import sys
from pathlib import Path

from .errors import RoadmapError

# Seeds feed torch/numpy generators through small linear mixes (roadmap/train/, data.py); below
# 2^31 every mix stays inside the 64-bit seeds the generators take.
MAX_SEED = 2**31 - 1
CLUSTER_FLAGS = (
    "--partition",
    "--nodes",
    "--gpus-per-node",
    "--tasks-per-node",
    "--cpus-per-task",
    "--mem-gb",
    "--timeout-min",
    "--wait",
)
INTERRUPTED = "finished runs are saved, rerun the same command to resume"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error (the usage is --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the same way out as Ctrl-C (runs recorded, temporary
    files and process groups cleaned up), then exit 143."""


# ---------------------------------------------------------------------------- flag values


def _resolution(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels") from None
    if value < 32:  # every paper step downsamples 32x: a smaller input vanishes
        raise argparse.ArgumentTypeError(f"{value}: the steps downsample 32x, so give at least 32")
    return value


def _csv_list(text, cast=str, flag=""):
    """A comma-separated flag value; None when the flag was not given. An empty list is an
    error (`--only ""` must not mean "run everything")."""
    if text is None:
        return None
    try:
        items = [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise RoadmapError(f"{flag} {text!r}: cannot read it as a comma-separated list") from None
    if not items:
        raise RoadmapError(f"{flag} {text!r}: names nothing; give one or more, comma-separated")
    return items


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (taskset, cgroups, SLURM)
    except AttributeError:
        return os.cpu_count() or 1


def check_threads(threads):
    if threads is not None and threads < 1:
        raise RoadmapError(f"--threads {threads}: give at least 1 (or leave it out for torch's default)")


def use_threads(threads) -> int:
    """Set torch's CPU threads: --threads, at most the cores this process may use (more
    threads than cores only wait on each other), or torch's default."""
    check_threads(threads)
    import torch

    cores = available_cores()
    if threads is not None and threads > cores:
        print(
            f"roadmap: note: --threads {threads}: only {cores} core(s) available here; using {cores}",
            file=sys.stderr,
            flush=True,
        )
        threads = cores
    torch.set_num_threads(threads or torch.get_num_threads())
    return torch.get_num_threads()


# ---------------------------------------------------------------------------- commands


def cmd_list(args):
    from .steps import ROADMAP
    from .tables import terminal

    rows = [
        {
            "#": str(i),
            "step": s.name,
            "phase": s.phase,
            "top-1": f"{s.paper_top1:.2f}" + (f" ± {s.paper_top1_sd:.2f}" if s.paper_top1_sd is not None else ""),
            "GFLOPs": f"{s.paper_gflops:.2f}",
            "change": s.title,
        }
        for i, s in enumerate(ROADMAP)
    ]
    print(terminal(rows, right=("#", "top-1", "GFLOPs")))
    print("\npaper numbers: Liu et al. 2022, Table 10 (ImageNet-1K top-1, 224px, 3 seeds, no EMA)")


def cmd_flops(args):
    from .measure import flops_table

    table = flops_table(resolution=args.resolution)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.to_string(index=False))
        if args.resolution == 224:
            worst = table["diff"].abs().max()
            print(f"\nlargest |fvcore - paper| = {worst:.3f} GFLOPs (tolerance 0.10)")


def cmd_show(args):
    from .describe import describe_step

    print(describe_step(args.step, resolution=args.resolution))


def _check_run_flags(args):
    """Flags that are wrong whatever the data: one error before anything is loaded."""
    for flag in ("upto", "from", "roadmap", "data", "out", "preset"):
        value = getattr(args, flag)
        if value is not None and not str(value).strip():
            raise RoadmapError(f"--{flag} is empty; give a value or leave the flag out")
    if args.seeds < 1:
        raise RoadmapError("--seeds must be at least 1")
    if not 0 <= args.seed_offset <= MAX_SEED - (args.seeds - 1):
        raise RoadmapError(
            f"--seed-offset {args.seed_offset}: seeds run from 0 to {MAX_SEED} "
            f"(2^31 - 1), so with --seeds {args.seeds} the offset is 0 to "
            f"{MAX_SEED - args.seeds + 1}"
        )
    check_threads(args.threads)


def _run_specs(args):
    """The runs `roadmap run` asks for, and the custom roadmap's name (None: the paper's)."""
    if args.roadmap:
        from .custom import load_roadmap

        if args.only is not None or args.kernel_sizes is not None:
            raise RoadmapError("--roadmap runs its own steps; drop --only/--kernel-sizes")
        custom = load_roadmap(args.roadmap)
        return custom.plan(upto=args.upto, start=getattr(args, "from")), custom.name
    from .plan import paper_plan

    return paper_plan(
        upto=args.upto,
        start=getattr(args, "from"),
        only=_csv_list(args.only, flag="--only"),
        kernel_sizes=_csv_list(args.kernel_sizes, int, "--kernel-sizes"),
    ), None


def cmd_run(args):
    from .recipe import settings

    _check_run_flags(args)
    recipe, ex = settings(args.preset, args.set)
    specs, roadmap_name = _run_specs(args)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    if args.until_decided:
        if args.launcher == "submitit":
            raise RoadmapError("--until-decided looks between rounds of seeds: run it with --launcher local")
        from .sequential import make_design

        if args.seed_offset + args.max_seeds - 1 > MAX_SEED:
            raise RoadmapError(
                f"--max-seeds {args.max_seeds} with --seed-offset {args.seed_offset} passes seed {MAX_SEED}"
            )
        args.design = make_design(args.seeds, args.max_seeds, args.looks, args.seed_offset)
    if args.launcher == "submitit":
        from .launch import submit_plan

        return submit_plan(specs, seeds, recipe, ex, args, run_defaults(), roadmap_name)
    cluster_flags = [f for f in CLUSTER_FLAGS if getattr(args, f.lstrip("-").replace("-", "_"))]
    if cluster_flags:
        raise RoadmapError(f"{', '.join(cluster_flags)} need --launcher submitit")
    run_local(specs, recipe, ex, seeds, roadmap_name, args)


def run_local(specs, recipe, ex, seeds, roadmap_name, args):
    """Train here: one process, or this rank of a torchrun / submitit process group."""
    import torch

    from .env import env_int
    from .runner import run_plan
    from .train import Dist
    from .until_decided import run_until_decided

    dist = Dist()
    if env_int("WORLD_SIZE", 1, minimum=1) > 1:
        from .distributed import init_distributed

        dist = init_distributed(args.device)
    use_threads(args.threads)
    design = getattr(args, "design", None)
    run = functools.partial(run_until_decided, design=design) if design else run_plan
    try:
        run(
            specs,
            recipe,
            args.preset,
            dist,
            ex=ex,
            data=args.data,
            seeds=seeds,
            out=args.out,
            roadmap=roadmap_name,
            device=args.device,
            progress=not args.no_progress,
            plot=not args.no_plot,
            tensorboard=(args.log == "tensorboard"),
            retry_failed=args.retry_failed,
            use_reference=not args.no_reference,
            keep_weights=not args.no_weights,
        )
    finally:
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


def cmd_plot(args):
    from .outputs import write_outputs

    written = write_outputs(args.dir)
    if not written["figures"]:
        raise RoadmapError(f"{args.dir}: no finished runs to plot yet")
    for p in written["files"]:
        print(p)


def cmd_report(args):
    """`roadmap report A B --out M` merges runs: first warn where A and B disagree about a run
    (the same key with other numbers) or mix CPU thread counts; then report as usual."""
    from .outputs import write_report
    from .results import merge_warnings, read_results

    if len(args.dirs) > 1 or args.out is not None:
        out = [args.out] if args.out is not None and Path(args.out).is_dir() else []
        tables = []
        for d in list(args.dirs) + out:
            try:
                tables.append((d, read_results(d)))
            except RoadmapError:
                pass  # the report itself says what is wrong with that folder
        for w in merge_warnings(tables):
            print(f"roadmap: warning: {w}", file=sys.stderr, flush=True)
    report = write_report(args.dirs, out=args.out, plot=not args.no_plot)
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(report["findings"])
    for p in report["paths"]:
        print(p)


def cmd_bench(args):
    """The checks `roadmap run` makes on the same flags, then roadmap.bench."""
    if any(s.split("=", 1)[0].strip() == "img_size" for s in args.set or ()):
        raise RoadmapError("--set img_size: bench's image size is --resolution (at least 32)")
    args.threads = use_threads(args.threads)  # bad --set values fail in bench_recipe, as in run
    from . import bench

    return bench.cmd_bench(args)


# ---------------------------------------------------------------------------- parsers
# argparse %-formats help strings: a literal percent sign is written %%.


def _shared_flags() -> argparse.ArgumentParser:
    """--device, --threads and --set, for the commands that train or time models (run, bench)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's; at most the cores available)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. --set epochs=3 (repeatable)"
    )
    return p


def _add_run(sub, shared):
    p = sub.add_parser(
        "run", parents=[shared], help="train and measure the roadmap's steps, write results and the figure"
    )
    p.add_argument("--upto", metavar="STEP", help="last step to run (inclusive)")
    p.add_argument("--from", metavar="STEP", help="first step to run (inclusive)")
    p.add_argument("--only", metavar="STEP[,STEP...]", help="run just these steps")
    p.add_argument(
        "--kernel-sizes", metavar="K[,K...]", help="the paper's kernel sweep on large_kernel, e.g. 3,5,7,9,11"
    )
    p.add_argument(
        "--roadmap",
        metavar="FILE",
        help="a custom roadmap instead of the paper's: a "
        "TOML/YAML file, or the name of a shipped example (micro_first, leave_one_out)",
    )
    p.add_argument(
        "--preset",
        default="demo",
        help="recipe scale: demo (CPU, minutes; default), "
        "reference (CPU, the committed 3-seed reference), cifar, imagenette, imagenet",
    )
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist (default), or PATH to an ImageFolder tree or CIFAR batches",
    )
    p.add_argument("--seeds", type=int, default=1, help="number of seeds per step (default 1)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    p.add_argument(
        "--until-decided",
        action="store_true",
        help="after the --seeds planned seeds, add seeds only at the steps next to a change that is "
        "still open (neither resolved nor shown within ±0.5 of 0), look again, and stop when every "
        "change is decided or --max-seeds is reached; a group-sequential design valid under its "
        "own looks (docs/statistics.md)",
    )
    p.add_argument("--max-seeds", type=int, default=12, help="--until-decided: the cap of seeds per step (default 12)")
    p.add_argument(
        "--looks",
        type=int,
        default=3,
        help="--until-decided: looks from --seeds to --max-seeds, alpha split equally over them (default 3)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="results folder (default runs/<preset>-<data>, "
        "runs/<preset>-<data>-<roadmap> for --roadmap; finished runs of the committed "
        "results/<preset>-<data> are reused)",
    )
    p.add_argument(
        "--log",
        choices=("none", "tensorboard"),
        default="none",
        help="also write training curves (tensorboard: DIR/tensorboard/<step>-seed<N>)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the figure at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="train every run here, even those found in the committed results/<preset>-<data>",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the runs recorded as failed (by default a rerun reports them and exits 1)",
    )
    p.add_argument(
        "--no-weights",
        action="store_true",
        help="keep no weights of finished runs (by default DIR/weights/<key>.safetensors, loadable "
        "with roadmap.trained.load or timm.create_model(..., checkpoint_path=...))",
    )
    _add_cluster_flags(p)
    p.set_defaults(func=cmd_run)


def _add_cluster_flags(p):
    g = p.add_argument_group(
        "cluster",
        "--launcher submitit: one job per step and seed, each a "
        "`roadmap run` of that step and seed with every flag above "
        "(multi-GPU in one process: torchrun --nproc_per_node=N -m roadmap run)",
    )
    g.add_argument(
        "--launcher",
        choices=("local", "submitit"),
        default="local",
        help="local: train here (default); submitit: submit jobs",
    )
    g.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="submitit's executor: slurm (default) or local (this machine, for tests)",
    )
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--nodes", type=int, help="nodes per job (default 1)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node; one DDP process each")
    g.add_argument("--tasks-per-node", type=int, help="processes per node (default: the GPUs per node, or 1)")
    g.add_argument("--cpus-per-task", type=int, help="CPU cores per process (default: the data loader's workers + 1)")
    g.add_argument("--mem-gb", type=float, help="memory per node")
    g.add_argument("--timeout-min", type=int, help="job time limit; a job requeues and resumes past it")
    g.add_argument(
        "--wait",
        action="store_true",
        help="wait for the jobs, then write the tables and figure (always on --cluster local)",
    )


def _add_report(sub):
    p = sub.add_parser(
        "report", help="per-step changes with 95%% intervals, agreement with the paper: report.md, report.json"
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folder(s); several are merged")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the one DIR; required with several)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    p.set_defaults(func=cmd_report)


def _add_bench(sub, shared):
    p = sub.add_parser("bench", parents=[shared], help="img/s and memory of our models vs timm's, and of our runner")
    p.add_argument(
        "--steps",
        default="resnet50,separate_downsampling",
        help="steps to measure (default: the two endpoints, compared with timm)",
    )
    p.add_argument("--batch-size", type=int, help="images per step (default 64 on CUDA, 8 on CPU)")
    p.add_argument("--resolution", type=_resolution, default=224, help="image size (>= 32, default 224)")
    p.add_argument("--iters", type=int, help="timed iterations (default 20 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed iterations first (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, help="measurements, alternating, the best kept (default 3 on CUDA, 5 on CPU)")
    p.add_argument("--no-runner", action="store_true", help="skip the runner-overhead measurement")
    p.set_defaults(func=cmd_bench)


def cmd_doctor(args):
    from .doctor import doctor

    use_threads(args.threads)
    return doctor(args.device, args.data, True if args.all else None, args.compile_timeout)


def _add_doctor(sub):
    p = sub.add_parser("doctor", help="check this machine: install, data, every model family; on CUDA far more")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--data", default="fashion-mnist", help="the data to check loads (default: fashion-mnist)")
    p.add_argument("--all", action="store_true", help="also the GPU checks without a GPU (small sizes; minutes)")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds torch.compile may take (300)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.set_defaults(func=cmd_doctor)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="roadmap", description="Replay the ConvNeXt roadmap, ResNet-50 -> ConvNeXt-T.")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_flags()

    p = sub.add_parser("list", help="the roadmap's steps, in order, with the paper's numbers")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("flops", help="params and fvcore GFLOPs of every step next to the paper's")
    p.add_argument("--resolution", type=_resolution, default=224, help="input size in pixels (>= 32)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how to print the table")
    p.set_defaults(func=cmd_flops)
    p = sub.add_parser("show", help="what a step changes and its model's stage-level summary")
    p.add_argument("step", help="a step's name (roadmap list)")
    p.add_argument("--resolution", type=_resolution, default=224, help="input size in pixels (>= 32)")
    p.set_defaults(func=cmd_show)
    _add_run(sub, shared)
    p = sub.add_parser("plot", help="draw the trajectory figure of a results folder")
    p.add_argument("dir", help="a results folder (the --out of roadmap run)")
    p.set_defaults(func=cmd_plot)
    _add_report(sub)
    _add_bench(sub, shared)
    _add_doctor(sub)
    return parser


def run_defaults() -> dict:
    """`roadmap run`'s flag values when none is given (launch.py passes on the others)."""
    return vars(build_parser().parse_args(["run"]))


def run_command(argv) -> int:
    """Parse `argv` and run its command; errors propagate (main turns them into one line)."""
    args = build_parser().parse_args(argv)
    result = args.func(args)
    sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    return int(result or 0)


# ---------------------------------------------------------------------------- main


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _on_sigterm(signum, frame):
    raise Terminated()


def _catch_sigterm():
    """SIGTERM (kill, torchrun, a scheduler) raises Terminated; returns the handler it replaced."""
    if sys.platform == "win32" or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # someone (submitit, a test runner) handles it already
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals cannot be handled here
        return None


def _any_terminal():
    """A stdout that takes only ASCII (PYTHONIOENCODING=ascii, LANG=C) or a name in bytes that
    are not UTF-8: print what cannot be encoded as an escape (± as \\xb1), never fail on it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="backslashreplace")


def main(argv=None) -> int:
    _any_terminal()
    previous = _catch_sigterm()
    try:
        return run_command(argv)
    except RoadmapError as e:
        for line in getattr(e, "lines", None) or [e]:  # schema.InvalidFiles: one line per bad file
            print(f"roadmap: error: {_one_line(line)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt as e:
        how = " (SIGTERM)" if isinstance(e, Terminated) else ""
        print(f"roadmap: interrupted{how}; {INTERRUPTED}", file=sys.stderr)
        # The signal reached the DataLoader workers too (a scheduler signals the process
        # group): torch's SIGCHLD handler would raise on their deaths while the loader shuts
        # down, a traceback after the line above. They are meant to end: let them.
        with contextlib.suppress(AttributeError, ValueError):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        # `roadmap list | head -1`: the reader has gone; say nothing (and let exit not retry).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if os.environ.get("ROADMAP_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        what = e.strerror or e
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the documented line, wherever it happened
            name = os.fsdecode(e.filename) if e.filename else ""
            folder = os.path.dirname(os.path.abspath(name)) if name else "the disk"
            what, where = f"no space left on {folder}", f" (writing {os.path.basename(name)})" if name else ""
        print(f"roadmap: error: {what}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, or a mistake not caught by name yet: still one line
        if os.environ.get("ROADMAP_DEBUG"):
            raise
        print(
            f"roadmap: error: {type(e).__name__}: {_one_line(e)} (unexpected; rerun with "
            "ROADMAP_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
