"""Subcommands that need the training stack: run, plot."""
import os
from pathlib import Path

from .errors import RoadmapError


def _csv_list(text, cast=str):
    if not text:
        return None
    try:
        return [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise RoadmapError(f"cannot read {text!r} as a comma-separated list") from None


def cmd_run(args):
    import torch

    from .plan import paper_plan
    from .recipe import get_preset
    from .runner import run_plan
    from .train import Dist

    recipe = get_preset(args.preset).with_overrides(args.set)
    if args.roadmap:
        from .custom import load_roadmap
        if args.only or args.kernel_sizes:
            raise RoadmapError("--roadmap runs its own steps; drop --only/--kernel-sizes")
        specs = load_roadmap(args.roadmap).plan(upto=args.upto, start=getattr(args, "from"))
    else:
        specs = paper_plan(upto=args.upto, start=getattr(args, "from"), only=_csv_list(args.only),
                           kernel_sizes=_csv_list(args.kernel_sizes, int))
    if args.seeds < 1:
        raise RoadmapError("--seeds must be at least 1")
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))

    dist = Dist()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .distributed import init_distributed
        dist = init_distributed(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    try:
        run_plan(specs, recipe, args.preset, data=args.data, seeds=seeds, out=args.out,
                 device=args.device, dist=dist, progress=not args.no_progress,
                 plot=not args.no_plot, tensorboard=(args.log == "tensorboard"))
    finally:
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


def cmd_plot(args):
    from .plot import plot_trajectory
    deltas = None
    try:
        from .report import transitions
        from .results import read_results
        deltas = transitions(read_results(args.dir))
    except ImportError:
        pass
    for p in plot_trajectory(args.dir, deltas=deltas):
        print(p)


def add_subcommands(sub):
    p = sub.add_parser("run", help="train and measure the roadmap's steps, write results and the figure")
    p.add_argument("--upto", metavar="STEP", help="last step to run (inclusive)")
    p.add_argument("--from", metavar="STEP", help="first step to run (inclusive)")
    p.add_argument("--only", metavar="STEP[,STEP...]", help="run just these steps")
    p.add_argument("--kernel-sizes", metavar="K[,K...]",
                   help="the paper's kernel sweep on large_kernel, e.g. 3,5,7,9,11")
    p.add_argument("--roadmap", metavar="FILE", help="a custom roadmap (TOML) instead of the paper's")
    p.add_argument("--preset", default="demo",
                   help="recipe scale: demo (CPU, minutes; default), cifar, imagenette, imagenet")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=3 (repeatable)")
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (default), or PATH to an ImageFolder tree or CIFAR batches")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds per step (default 1)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="results folder (default results/<preset>-<data>)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--log", choices=("none", "tensorboard"), default="none",
                   help="also write training curves (tensorboard: DIR/tensorboard/<step>-seed<N>)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plot", help="draw the trajectory figure of a results folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_plot)

    # Further subcommands register themselves here, one line each (report, bench, ...).
    return sub
