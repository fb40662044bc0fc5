"""`roadmap` command line: list, flops, show (and run, plot, report once they exist)."""
import argparse
import sys

from .errors import RoadmapError


def cmd_list(args):
    from steps import ROADMAP
    print(f"{'#':>2}  {'step':24s} {'phase':20s} {'top-1':>12s} {'GFLOPs':>7s}  change")
    for i, s in enumerate(ROADMAP):
        sd = f" ± {s.paper_top1_sd:.2f}" if s.paper_top1_sd is not None else ""
        print(f"{i:>2}  {s.name:24s} {s.phase:20s} {s.paper_top1:>6.2f}{sd:>6s} {s.paper_gflops:>7.2f}  {s.title}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roadmap", description="Replay the ConvNeXt roadmap, ResNet-50 -> ConvNeXt-T.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the roadmap's steps, in order, with the paper's numbers")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("flops", help="params and fvcore GFLOPs of every step next to the paper's")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("show", help="what a step changes and its model's stage-level summary")
    p.add_argument("step")
    p.add_argument("--resolution", type=int, default=224)
    p.set_defaults(func=cmd_show)

    from . import commands
    commands.add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except RoadmapError as e:
        print(f"roadmap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roadmap: interrupted; finished steps are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
