"""Evaluation: top-1/top-5 and inference speed on the validation split, the learning
curve's points, and per-image correctness packed for the record."""

import base64
import time
from typing import Dict

import numpy as np
import torch

from ..env import autocast_for, sync
from .build import Setup
from .state import TrainState

EVAL_WARMUP = 1  # untimed passes over the first validation batch before timing inference


def score_epoch(s: Setup, st: TrainState, val) -> Dict:
    """The learning curve's point at an epoch's end. Scoring draws no random numbers the
    run uses (each update reseeds), so the run's path and final numbers are unchanged."""
    point = dict(epoch=st.update / s.per_epoch, top1=evaluate(s.eval_model, val, s)["top1"])
    point["top1_ema"] = evaluate(s.ema.module, val, s)["top1"] if s.ema is not None else None
    s.train_model.train()
    return point


@torch.no_grad()
def evaluate(model, val, s: Setup) -> Dict:
    """Top-1/top-5 on the validation split, per-image top-1 hits, and inference img/s: the
    forward passes of full-size batches, after EVAL_WARMUP untimed passes of the first."""
    model.eval()
    hits1, hits5, timed_n, timed_s, first = [], [], 0, 0.0, None
    for x, y in val:
        x = x.contiguous(memory_format=s.fmt)
        if first is None:
            first = len(x)
            for _ in range(EVAL_WARMUP):
                with autocast_for(s.device, s.amp):
                    model(x)
        sync(s.device)
        t0 = time.perf_counter()
        with autocast_for(s.device, s.amp):
            logits = model(x)
        sync(s.device)
        if len(x) == first:  # a smaller last batch is a new shape: compiled or tuned anew
            timed_s, timed_n = timed_s + time.perf_counter() - t0, timed_n + len(x)
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits1.append(top[:, 0] == y)
        hits5.append((top == y[:, None]).any(dim=1))
    hit1, seen = torch.cat(hits1).cpu(), sum(len(h) for h in hits1)
    return dict(
        top1=100.0 * int(hit1.sum()) / seen,
        top5=100.0 * int(torch.cat(hits5).sum()) / seen,
        infer_img_s=timed_n / max(timed_s, 1e-9),
        val_correct=pack_bits(hit1.numpy()),
    )


def pack_bits(correct: np.ndarray) -> str:
    """Per-image correctness as text for a JSON record: one bit an image (10,000 -> 1,668 chars)."""
    return base64.b64encode(np.packbits(correct.astype(bool), bitorder="little")).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """The boolean array `pack_bits` wrote, `n` images long."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)
