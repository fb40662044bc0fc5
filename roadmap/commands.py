"""Subcommands that need the training stack: run, plot."""
import os
import sys
from pathlib import Path

from .errors import RoadmapError


# Seeds feed torch/numpy generators through small linear mixes (train.py, data.py); below
# 2^31 every mix stays inside the 64-bit seeds the generators take.
MAX_SEED = 2 ** 31 - 1


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


def _check_run_flags(args):
    """Flags that are wrong whatever the data: one error before anything is loaded."""
    for flag in ("upto", "from", "roadmap", "data", "out", "preset"):
        value = getattr(args, flag)
        if value is not None and not str(value).strip():
            raise RoadmapError(f"--{flag} is empty; give a value or leave the flag out")
    if args.seeds < 1:
        raise RoadmapError("--seeds must be at least 1")
    if not 0 <= args.seed_offset <= MAX_SEED - (args.seeds - 1):
        raise RoadmapError(f"--seed-offset {args.seed_offset}: seeds run from 0 to {MAX_SEED} "
                           f"(2^31 - 1), so with --seeds {args.seeds} the offset is 0 to "
                           f"{MAX_SEED - args.seeds + 1}")
    if args.threads is not None and args.threads < 1:
        raise RoadmapError(f"--threads {args.threads}: give at least 1 (or leave it out for torch's default)")


def cmd_run(args):
    import torch

    from .plan import paper_plan
    from .recipe import settings
    from .runner import run_plan
    from .train import Dist

    _check_run_flags(args)
    recipe, ex = settings(args.preset, args.set)
    if args.roadmap:
        from .custom import load_roadmap
        if args.only is not None or args.kernel_sizes is not None:
            raise RoadmapError("--roadmap runs its own steps; drop --only/--kernel-sizes")
        custom = load_roadmap(args.roadmap)
        specs = custom.plan(upto=args.upto, start=getattr(args, "from"))
        roadmap = custom.slug  # a folder of its own: its rows would mix into the paper's chart
    else:
        roadmap = None
        specs = paper_plan(upto=args.upto, start=getattr(args, "from"),
                           only=_csv_list(args.only, flag="--only"),
                           kernel_sizes=_csv_list(args.kernel_sizes, int, "--kernel-sizes"))
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    if args.launcher == "submitit":
        from .launch import submit_plan
        return submit_plan(specs, seeds, recipe, ex, args)
    cluster_flags = [f for f in CLUSTER_FLAGS if getattr(args, f.lstrip("-").replace("-", "_"))]
    if cluster_flags:
        raise RoadmapError(f"{', '.join(cluster_flags)} need --launcher submitit")

    dist = Dist()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .distributed import init_distributed
        dist = init_distributed(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    try:
        run_plan(specs, recipe, args.preset, dist, ex=ex, data=args.data, seeds=seeds, out=args.out,
                 roadmap=roadmap, device=args.device, progress=not args.no_progress,
                 plot=not args.no_plot, tensorboard=(args.log == "tensorboard"),
                 retry_failed=args.retry_failed, use_reference=not args.no_reference)
    finally:
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


CLUSTER_FLAGS = ("--partition", "--nodes", "--gpus-per-node", "--tasks-per-node", "--cpus-per-task",
                 "--mem-gb", "--timeout-min", "--wait")


def cmd_plot(args):
    from .outputs import write_outputs
    written = write_outputs(args.dir)
    if not written["figures"]:
        raise RoadmapError(f"{args.dir}: no finished runs to plot yet")
    for p in written["figures"]:
        print(p)


def add_subcommands(sub):
    p = sub.add_parser("run", help="train and measure the roadmap's steps, write results and the figure")
    p.add_argument("--upto", metavar="STEP", help="last step to run (inclusive)")
    p.add_argument("--from", metavar="STEP", help="first step to run (inclusive)")
    p.add_argument("--only", metavar="STEP[,STEP...]", help="run just these steps")
    p.add_argument("--kernel-sizes", metavar="K[,K...]",
                   help="the paper's kernel sweep on large_kernel, e.g. 3,5,7,9,11")
    p.add_argument("--roadmap", metavar="FILE", help="a custom roadmap instead of the paper's: a TOML/YAML file, or the "
                        "name of a shipped example (micro_first, leave_one_out)")
    p.add_argument("--preset", default="demo",
                   help="recipe scale: demo (CPU, minutes; default), reference (CPU, the committed 3-seed reference), cifar, imagenette, imagenet")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=3 (repeatable)")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (default), or PATH to an ImageFolder tree or CIFAR batches")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds per step (default 1)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="results folder (default runs/<preset>-<data>; finished runs of the committed results/<preset>-<data> are reused)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--log", choices=("none", "tensorboard"), default="none",
                   help="also write training curves (tensorboard: DIR/tensorboard/<step>-seed<N>)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-reference", action="store_true",
                   help="train every run here, even those found in the committed results/<preset>-<data>")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs recorded as failed (by default a rerun reports them and exits 1)")
    g = p.add_argument_group("cluster", "--launcher submitit: one job per step and seed "
                             "(multi-GPU in one process: torchrun --nproc_per_node=N -m roadmap run)")
    g.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: train here (default); submitit: submit jobs")
    g.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                   help="submitit's executor: slurm (default) or local (this machine, for tests)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--nodes", type=int, help="nodes per job (default 1)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node; one DDP process each")
    g.add_argument("--tasks-per-node", type=int,
                   help="processes per node (default: the GPUs per node, or 1)")
    g.add_argument("--cpus-per-task", type=int, help="CPU cores per process")
    g.add_argument("--mem-gb", type=float, help="memory per node")
    g.add_argument("--timeout-min", type=int, help="job time limit; a job requeues and resumes past it")
    g.add_argument("--wait", action="store_true",
                   help="wait for the jobs, then write the tables and figure (always on --cluster local)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plot", help="draw the trajectory figure of a results folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_plot)

    # Further subcommands register themselves here, one line each (report, bench, ...).
    from .report import add_parser; add_parser(sub)  # noqa: E702
    _warn_on_merge(sub.choices["report"])
    from .bench import add_parser; add_parser(sub)  # noqa: E702
    return sub


def _warn_on_merge(report_parser):
    """`roadmap report A B --out M` merges runs: first warn where A and B disagree about a run
    (the same key with other numbers) or mix CPU thread counts; then report as usual."""
    report = report_parser.get_default("func")

    def cmd_report(args):
        from .results import merge_warnings, read_results
        if len(args.dirs) > 1 or args.out is not None:
            tables = []
            for d in list(args.dirs) + ([args.out] if args.out is not None and Path(args.out).is_dir() else []):
                try:
                    tables.append((d, read_results(d)))
                except RoadmapError:
                    pass  # the report itself says what is wrong with that folder
            for w in merge_warnings(tables):
                print(f"roadmap: warning: {w}", file=sys.stderr, flush=True)
        return report(args)

    report_parser.set_defaults(func=cmd_report)
