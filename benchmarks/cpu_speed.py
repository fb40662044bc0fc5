"""Training speed on the CPU: what the reference preset adopted, and what it did not.

    python benchmarks/cpu_speed.py [--steps all|a,b,...] [--updates 6] [--compile]

For every step at the demo/reference width (x0.25, 32 px), times forward + backward +
AdamW updates on random batches and prints img/s of each variant beside the demo's
setting (fp32, channels-last, batch 128), with the ratio:
  - batch 256 (the reference preset's choice),
  - bf16 autocast (only where the CPU has avx512_bf16 or AMX),
  - 1 thread instead of all (torch's default),
  - torch.compile (with --compile: it costs minutes of compiling per step).
All ratios come from one run on one machine, so they compare; absolute numbers do not
travel between machines.
"""

import argparse
import sys
import time
from contextlib import nullcontext

import torch

from roadmap import tables
from roadmap.model import RoadmapNet
from roadmap.plan import paper_plan
from roadmap.recipe import get_preset
from roadmap.train import scale_config


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def img_per_s(cfg, batch, updates, bf16=False, compile=False, threads=None):
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = RoadmapNet(cfg).to(memory_format=torch.channels_last).train()
        step_model = torch.compile(model) if compile else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
        warmup = 3 if compile else 2
        for i in range(warmup + updates):
            if i == warmup:
                t0 = time.perf_counter()
            with ctx():
                loss = torch.nn.functional.cross_entropy(step_model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return batch * updates / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="all")
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    recipe = get_preset("reference")
    specs = paper_plan(only=None if args.steps == "all" else args.steps.split(","))
    variants = {"batch 256 (reference)": dict(batch=256)}
    if cpu_has_bf16():
        variants["batch 256, bf16 autocast"] = dict(batch=256, bf16=True)
    variants["batch 128, 1 thread"] = dict(batch=128, threads=1)
    if args.compile:
        variants["batch 256, torch.compile"] = dict(batch=256, compile=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 CPU: {cpu_has_bf16()}")
    totals = {v: [] for v in ["demo", *variants]}
    rows = []
    for i, spec in enumerate(specs, 1):
        cfg = scale_config(spec.cfg, recipe, 10)
        base = img_per_s(cfg, 128, args.updates)
        totals["demo"].append(base)
        row = {"step": spec.name, "demo: batch 128": f"{base:.0f} img/s"}
        for label, kw in variants.items():
            ips = img_per_s(cfg, updates=args.updates, **kw)
            totals[label].append(ips)
            row[label] = f"{ips:.0f} img/s ({ips / base:.2f}x)"
        rows.append(row)
        print(f"measured {spec.name} ({i}/{len(specs)})", file=sys.stderr, flush=True)
    print(tables.terminal(rows, right=["demo: batch 128", *variants]))
    # time for one epoch of every step: the sum of per-step times, not the mean of speeds
    epoch = {k: sum(60_000 / v for v in vals) for k, vals in totals.items()}
    print(
        "one epoch of every step: "
        + ", ".join(f"{k} {s / 60:.1f} min ({epoch['demo'] / s:.2f}x)" for k, s in epoch.items())
    )


if __name__ == "__main__":
    main()
