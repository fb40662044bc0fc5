"""Does the kernel sweep's direction change when the stem keeps more resolution?

    python benchmarks/small_input_stem.py [--kernels 3,7,11] [--seeds 2] [--epochs 1]

At 32 px both stems leave stage 1 at 8x8, where a 7x7 kernel already sees the whole
map. `small_input_stem=true` (ResNet stem without max-pool, 2x2 patchify) leaves 16x16.
This trains the paper's kernel sweep on `large_kernel` with both stems (the reference
preset, shortened to --epochs) and reports each kernel change with its 95% interval
from the pooled model of each stem. Writes OUT/sweep.csv and OUT/sweep.md.
"""

import argparse
from pathlib import Path

import pandas as pd
import torch

from roadmap import tables
from roadmap.analysis import analyse
from roadmap.plan import paper_plan
from roadmap.recipe import get_preset
from roadmap.results import atomic_write_text, read_results
from roadmap.runner import run_plan


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", default="3,7,11")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/small-input-stem")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = [int(k) for k in args.kernels.split(",")]
    specs = paper_plan(only=["large_kernel"], kernel_sizes=kernels)
    out = Path(args.out)
    rows = []
    for stem in (False, True):
        recipe = get_preset("reference").with_overrides(
            [f"epochs={args.epochs}", "warmup_epochs=0.1", f"small_input_stem={str(stem).lower()}"]
        )
        folder = out / ("stem_stride_2" if stem else "stem_stride_4")
        run_plan(specs, recipe, "reference", seeds=range(args.seeds), out=str(folder), progress=False)
        steps, trans, fit = analyse(read_results(folder))
        for _, t in trans.iterrows():
            rows.append(
                dict(
                    stem="stride 2 (small_input_stem)" if stem else "stride 4 (paper)",
                    change=f"{t['from']} -> {t['to']}",
                    delta=t["delta"],
                    ci_low=t["ci_low"],
                    ci_high=t["ci_high"],
                    p_holm=t["p_holm"],
                    resolved=t["resolved"],
                    paper_delta=t["paper_delta"],
                    seed_sd=fit.sigma,
                    df=fit.df,
                )
            )
        for _, s in steps.iterrows():
            print(
                f"{folder.name} {s['run']}: {s['top1_mean']:.2f} ± {s['top1_std']:.2f} ({s['seeds']} seeds)", flush=True
            )
    table = pd.DataFrame(rows)
    atomic_write_text(out / "sweep.csv", table.to_csv(index=False, float_format="%.4f"))
    md = tables.markdown(
        [
            {
                "stem": r.stem,
                "change": r.change,
                "Δ top-1": f"{r.delta:+.2f}",
                "95% CI": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                "Holm p": f"{r.p_holm:.2g}",
                "resolved": "yes" if r.resolved else "no",
                "paper Δ": f"{r.paper_delta:+.2f}",
            }
            for r in table.itertuples()
        ],
        right=("Δ top-1", "Holm p", "paper Δ"),
    )
    cmd = f"python benchmarks/small_input_stem.py --kernels {args.kernels} --seeds {args.seeds} --epochs {args.epochs}"
    atomic_write_text(out / "sweep.md", f"Made by `{cmd}`.\n\n" + md)
    print(md, end="")


if __name__ == "__main__":
    main()
