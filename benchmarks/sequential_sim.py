"""Error rates and cost of `roadmap run --until-decided`, by simulating whole roadmaps.

Each simulated roadmap has 13 steps (12 changes) whose true changes are drawn from a mix of
exact zeros, small changes (|Δ| = 0.25, neither resolvable cheaply nor equivalent within 0.5),
medium (0.6-0.9) and large ones (1-2.5), with random signs; each step has its own seed sd,
drawn like the reference's (bimodal: about half the steps 0.03-0.10, half 0.23-0.43 points),
and a seed effect shared by all steps (sd 0.1). The runs are then fed to the tool's own
decision code, `roadmap.sequential.decide`, exactly as `roadmap run --until-decided` does:
planned seeds first, then the seeds it asks for, until it says finished.

The truth is the change on this test set (the seed part of the report's interval); the
test-set part is a known added variance in the tool and is left out here.

Printed: the share of roadmaps with any change wrongly resolved (a true 0 resolved, or a
wrong sign) and with any change wrongly called equivalent (a true |Δ| >= margin called
equivalent), both to be <= 5%; the seeds per step the design spent, against the fixed
design (one look at the full alpha) that decides as many changes.

    python benchmarks/sequential_sim.py --roadmaps 400 --seed 0
"""

import argparse
import sys
import time

import numpy as np
import pandas as pd

from roadmap import sequential as Q

STEPS = 13


def draw_roadmap(rng):
    kind = rng.choice(4, size=STEPS - 1, p=[0.3, 0.2, 0.2, 0.3])
    size = np.select([kind == 0, kind == 1, kind == 2], [0.0, 0.25, rng.uniform(0.6, 0.9, STEPS - 1)],
                     rng.uniform(1.0, 2.5, STEPS - 1))  # fmt: skip
    delta = size * rng.choice([-1, 1], size=STEPS - 1)
    means = 85 + np.concatenate([[0.0], np.cumsum(delta)])
    quiet = rng.random(STEPS) < 0.5
    sds = np.where(quiet, rng.uniform(0.03, 0.10, STEPS), rng.uniform(0.23, 0.43, STEPS))
    return delta, means, sds


def all_runs(rng, means, sds, max_seeds):
    seed_effect = rng.normal(0, 0.1, max_seeds)
    y = means[:, None] + seed_effect[None, :] + rng.normal(0, 1, (STEPS, max_seeds)) * sds[:, None]
    return pd.DataFrame(
        dict(model=np.repeat([f"s{i:02d}" for i in range(STEPS)], max_seeds), seed=np.tile(np.arange(max_seeds), STEPS),
             top1=y.ravel())
    )  # fmt: skip


CHANGES = [(f"s{i:02d}", f"s{i + 1:02d}") for i in range(STEPS - 1)]


def run_design(full: pd.DataFrame, design: Q.Design):
    """What the runner does: train the planned seeds, then whatever `decide` asks for."""
    have = {m: design.planned for m in full["model"].unique()}
    while True:
        runs = full[full["seed"] < full["model"].map(have)]
        d = Q.decide(runs, CHANGES, design)
        if d.finished:
            return d, have
        if not d.targets:
            raise RuntimeError("the design is waiting but asks for nothing")
        for m, n in d.targets.items():
            have[m] = max(have[m], n)


def errors(table: pd.DataFrame, delta: np.ndarray, margin: float):
    resolved = (table["state"] == "resolved").to_numpy()
    sign = np.where(table["sign"] == "+", 1, -1)
    false_res = (resolved & ((delta == 0) | (np.sign(delta) != sign))).any()
    false_eq = ((table["state"] == "equivalent").to_numpy() & (np.abs(delta) >= margin)).any()
    return bool(false_res), bool(false_eq), float((table["state"] != "open").mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--roadmaps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planned", type=int, default=5)
    ap.add_argument("--max-seeds", type=int, default=12)
    ap.add_argument("--looks", type=int, default=3)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    design = Q.make_design(a.planned, a.max_seeds, a.looks)
    fixed = {n: Q.make_design(n, n, 1) for n in range(a.planned, a.max_seeds + 1)}
    t0 = time.time()
    fr = fe = 0
    spent, decided = [], []
    fixed_decided = {n: [] for n in fixed}
    fixed_fr = {n: 0 for n in fixed}
    for r in range(a.roadmaps):
        delta, means, sds = draw_roadmap(rng)
        full = all_runs(rng, means, sds, a.max_seeds)
        d, have = run_design(full, design)
        x, y, share = errors(d.table, delta, design.margin)
        fr, fe = fr + x, fe + y
        spent.append(np.mean(list(have.values())))
        decided.append(share)
        for n, fd in fixed.items():
            dn = Q.decide(full[full["seed"] < n], CHANGES, fd)
            xn, _, sn = errors(dn.table, delta, fd.margin)
            fixed_fr[n] += xn
            fixed_decided[n].append(sn)
        if (r + 1) % 50 == 0:
            print(f"{r + 1} roadmaps, {time.time() - t0:.0f} s", file=sys.stderr)
    n = a.roadmaps
    mean_spent, share = float(np.mean(spent)), float(np.mean(decided))
    spend = "/".join(f"{w:.2f}" for w in design.weights)
    print(f"design: looks at {list(design.looks)} seeds per step, alpha {design.alpha:.2f} spent {spend}, "
          f"Holm over {len(CHANGES)} changes, margin {design.margin}")  # fmt: skip
    print("fixed designs (one look, full alpha): seeds per step -> share of changes decided, false resolved")
    for k in fixed:
        print(f"  {k:2d} seeds: {np.mean(fixed_decided[k]):.3f} decided, false resolved {fixed_fr[k]}/{n}")
    same = next((k for k in fixed if np.mean(fixed_decided[k]) >= share), None)
    same_text = f"{same} seeds per step" if same else f"more than {a.max_seeds} seeds per step"
    print(f"sequential: {mean_spent:.2f} seeds per step on average, {share:.3f} of changes decided; "
          f"a fixed design deciding as many needs {same_text}")  # fmt: skip
    print(f"{time.time() - t0:.0f} s for {n} roadmaps")
    print(f"false resolved {fr}/{n}, false equivalent {fe}/{n}, seeds per step {mean_spent:.2f} "
          f"(fixed design of the same power: {same_text}), decided {share:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
