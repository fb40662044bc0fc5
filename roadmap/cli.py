"""`roadmap` command line: list, flops, show (and run, plot, report once they exist).

Every mistake the user can make is one line on stderr, `roadmap: error: ...`, and exit 2;
runs that failed (recorded as such) exit 1; nothing ends in a traceback unless
ROADMAP_DEBUG=1 asks for one.
"""
import argparse
import errno
import os
import re
import sys

from .errors import RoadmapError


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error (the usage is --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _escape_percent(parser: argparse.ArgumentParser):
    """argparse %-formats every help string, so a bare % ("95% intervals") crashes --help.
    Escape them in this parser and its subcommands, keeping %(default)s and %%."""
    def fix(text):
        return re.sub(r"%%|%\(|%", lambda m: m.group() if len(m.group()) == 2 else "%%", text) \
            if isinstance(text, str) else text
    for action in parser._actions:
        action.help = fix(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for pseudo in action._choices_actions:
                pseudo.help = fix(pseudo.help)
            for sub in action.choices.values():
                _escape_percent(sub)
    for group in parser._action_groups:
        group.description = fix(group.description)
    parser.description = fix(parser.description)


def _resolution(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels") from None
    if value < 32:  # every paper step downsamples 32x: a smaller input vanishes
        raise argparse.ArgumentTypeError(f"{value}: the steps downsample 32x, so give at least 32")
    return value


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
    parser = Parser(
        prog="roadmap", description="Replay the ConvNeXt roadmap, ResNet-50 -> ConvNeXt-T.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the roadmap's steps, in order, with the paper's numbers")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("flops", help="params and fvcore GFLOPs of every step next to the paper's")
    p.add_argument("--resolution", type=_resolution, default=224, help="input size in pixels (>= 32)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("show", help="what a step changes and its model's stage-level summary")
    p.add_argument("step")
    p.add_argument("--resolution", type=_resolution, default=224, help="input size in pixels (>= 32)")
    p.set_defaults(func=cmd_show)

    from . import commands
    commands.add_subcommands(sub)
    _escape_percent(parser)
    return parser


def _one_line(text) -> str:
    return " ".join(str(text).split())


def main(argv=None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        result = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except RoadmapError as e:
        print(f"roadmap: error: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("roadmap: interrupted; finished steps are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `roadmap list | head -1`: the reader has gone; say nothing (and let exit not retry).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if os.environ.get("ROADMAP_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        what = "no space left" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror or e
        print(f"roadmap: error: {what}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, or a mistake not caught by name yet: still one line
        if os.environ.get("ROADMAP_DEBUG"):
            raise
        print(f"roadmap: error: {type(e).__name__}: {_one_line(e)} (unexpected; rerun with "
              "ROADMAP_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
