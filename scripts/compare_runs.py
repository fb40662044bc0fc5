"""Two results folders of the same runs (same keys), made on two machines: do they agree?

    python scripts/compare_runs.py results/reference-first-run results/reference-fashion-mnist

CPU training is reproducible on one machine, not bit-for-bit across machines, so the two
folders hold two independent draws of every step. Per step: each folder's mean top-1 over
its seeds, the difference, and Welch's 95% interval of it (scipy); then how many intervals
exclude 0 unadjusted and after Holm (one would expect about 5% unadjusted if the machines
train alike). Writes nothing; prints a Markdown table.
"""

import sys

import numpy as np
import pandas as pd
from scipy import stats

from roadmap import tables
from roadmap.analysis import finished
from roadmap.results import read_results
from roadmap.stats import holm


def main(a: str, b: str):
    ta, tb = finished(read_results(a)), finished(read_results(b))
    shared = sorted(set(ta["key"]) & set(tb["key"]))
    ta, tb = ta[ta["key"].isin(shared)], tb[tb["key"].isin(shared)]
    rows = []
    for run, g in ta.groupby("run", sort=False):
        x, y = g["top1"].to_numpy(float), tb[tb["run"] == run]["top1"].to_numpy(float)
        test = stats.ttest_ind(y, x, equal_var=False)
        ci = test.confidence_interval(0.95)
        rows.append(dict(step=run, seeds=len(x), a=x.mean(), b=y.mean(), lo=ci.low, hi=ci.high, p=test.pvalue))
    t = pd.DataFrame(rows).assign(diff=lambda d: d["b"] - d["a"])
    t["p_holm"] = holm(t["p"].to_numpy())
    print(f"{len(shared)} runs with the same key in both folders\n")
    cells = [
        {
            "step": r.step,
            "seeds": r.seeds,
            "first": f"{r.a:.2f}",
            "second": f"{r.b:.2f}",
            "difference [95% Welch]": f"{r['diff']:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]",
        }
        for _, r in t.iterrows()
    ]
    print(tables.markdown(cells, right=("seeds", "first", "second")), end="")
    same = ta.set_index("key")["top1"].eq(tb.set_index("key")["top1"].reindex(ta["key"]).to_numpy())
    excluding = f"{(t['p'] < 0.05).sum()} of {len(t)} unadjusted, {(t['p_holm'] < 0.05).sum()} after Holm"
    print(
        f"\nmedian |difference| {np.median(np.abs(t['diff'])):.2f}, mean difference {t['diff'].mean():+.2f}; "
        f"intervals excluding 0: {excluding}; runs with the same top-1 in both: {same.sum()} of {len(same)}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
