"""Human-readable views of a step: what changed, and the model's stage-level layout."""

from .config import ArchConfig
from .measure import count_gflops, count_params
from .model import RoadmapNet
from .registry import config_for, get_step, previous_step


def block_layout(cfg: ArchConfig, in_chs: int, out_chs: int, hidden: int) -> str:
    k = f"{cfg.kernel_size}x{cfg.kernel_size}{' dw' if cfg.depthwise else ''}"
    if cfg.spatial_first:
        convs = [f"{k} {in_chs}", f"1x1 {in_chs}->{hidden}", f"1x1 {hidden}->{out_chs}"]
    else:
        convs = [f"1x1 {in_chs}->{hidden}", f"{k} {hidden}", f"1x1 {hidden}->{out_chs}"]
    return " | ".join(convs)


def describe_step(name: str, resolution: int = 224) -> str:
    step = get_step(name)
    cfg = config_for(name)
    prev = previous_step(name)
    lines = [f"{step.name}  ({step.phase}): {step.title}", f"  why: {step.why}"]
    if step.note:
        lines.append(f"  note: {step.note}")
    lines.append(
        f"  paper: top-1 {step.paper_top1}"
        + (f" ± {step.paper_top1_sd}" if step.paper_top1_sd is not None else "")
        + f", {step.paper_gflops} GFLOPs"
    )
    if prev is None:
        lines.append("  changes: (the starting point: timm's resnet50)")
    else:
        lines.append(f"  changes from {prev}:")
        for key, (old, new) in config_for(prev).diff(cfg).items():
            lines.append(f"    {key}: {old!r} -> {new!r}")
    model = RoadmapNet(cfg)
    lines.append(
        f"  model: {count_params(model) / 1e6:.2f} M params, "
        f"{count_gflops(model, resolution):.2f} GFLOPs at {resolution}px"
    )
    stem = (
        "7x7/2 conv, norm, act, 3x3/2 max-pool"
        if cfg.stem == "resnet"
        else f"{cfg.patch_size}x{cfg.patch_size}/{cfg.patch_size} conv, norm"
    )
    lines.append(f"    stem: {stem} -> {cfg.widths[0]} ch ({count_params(model.stem):,} params)")
    in_chs = cfg.widths[0]
    for i, (stage, depth, out_chs, hidden) in enumerate(
        zip(model.stages, cfg.depths, cfg.residual_widths, cfg.hidden_widths)
    ):
        if cfg.downsample == "separate" and in_chs != out_chs:
            down = "norm + 2x2/2 conv, then "
        elif in_chs != out_chs or i > 0:
            down = (
                "(first block strides and projects its shortcut) " if i > 0 else "(first block projects its shortcut) "
            )
        else:
            down = ""
        lines.append(
            f"    stage {i + 1}: {down}{depth} x [{block_layout(cfg, out_chs, out_chs, hidden)}]"
            f" ({count_params(stage) / 1e6:.2f} M)"
        )
        in_chs = out_chs
    acts = "after each conv and the sum" if cfg.activations == "all" else "one, between the 1x1 convs"
    norms = "after each conv" if cfg.norms == "all" else "one, after the first conv"
    lines.append(
        f"    block: {cfg.act} ({acts}); {cfg.norm} norm ({norms})"
        + (f"; layer scale {cfg.layer_scale_init:g}" if cfg.layer_scale_init else "")
    )
    lines.append(f"    head: global avg pool{', norm' if cfg.head_norm else ''}, fc {in_chs}->{cfg.num_classes}")
    return "\n".join(lines)
