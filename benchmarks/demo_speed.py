"""What makes the demo preset fast on a CPU: prints training img/s and ratios.

    python benchmarks/demo_speed.py [--steps resnet50,large_kernel,separate_downsampling]

Compares, with the runner's own `train_run` on Fashion-MNIST at the demo width:
channels_last vs contiguous memory, batch 64/128/256, and the in-memory batch
pipeline vs a DataLoader of PIL images through timm's transforms.
"""

import argparse
import sys

import torch

from roadmap import data as D
from roadmap import tables
from roadmap.plan import paper_plan
from roadmap.recipe import settings
from roadmap.train import scale_config, train_run


def img_per_s(spec, ds, overrides, updates):
    recipe, ex = settings("demo", [f"max_updates={updates}", *overrides])
    cfg = scale_config(spec.cfg, recipe, ds.num_classes)
    m = train_run(spec.name, cfg, recipe, ex, ds, 0, torch.device("cpu"), progress=False)
    return m["train_img_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="resnet50,large_kernel,separate_downsampling")
    ap.add_argument("--updates", type=int, default=30)
    args = ap.parse_args()
    ds = D.load_dataset("fashion-mnist").subset(train=20_000, val=1_000)
    variants = {
        "demo (channels_last, batch 128, in memory)": [],
        "contiguous (NCHW) memory": ["channels_last=false"],
        "batch 64": ["batch_size=64", "lr_batch=64"],
        "batch 256": ["batch_size=256", "lr_batch=256"],
        "PIL DataLoader (timm transforms, 2 workers)": ["randaug=rand-m1-n1", "workers=2"],
    }
    print(f"torch threads: {torch.get_num_threads()}")
    rows = []
    for spec in paper_plan(only=args.steps.split(",")):
        base = None
        for label, overrides in variants.items():
            ips = img_per_s(spec, ds, overrides, args.updates)
            base = base or ips
            rows.append({"step": spec.name, "setting": label, "img/s": f"{ips:.0f}", "x demo": f"{ips / base:.2f}x"})
            print(f"measured {spec.name}: {label}", file=sys.stderr, flush=True)
    print(tables.terminal(rows, right=("img/s", "x demo")))


if __name__ == "__main__":
    main()
