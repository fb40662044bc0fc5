"""The training recipe (paper Table 5) and presets that scale it to a budget.

A preset is a `Recipe`; every field can be overridden from the command line with
`--set key=value`. `imagenet` is the paper verbatim; the others say what they scale down.
"""
import difflib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional, get_type_hints

from .errors import RoadmapError
from .values import Invalid, convert, parse_text


@dataclass(frozen=True)
class Recipe:
    description: str = ""
    img_size: int = 224
    epochs: float = 300
    batch_size: int = 128          # per process
    lr: float = 4e-3               # at `lr_batch`; scaled linearly to the real global batch
    lr_batch: int = 4096
    min_lr: float = 1e-6
    warmup_epochs: float = 20
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    randaug: Optional[str] = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.8
    cutmix: float = 1.0
    reprob: float = 0.25           # random erasing
    smoothing: float = 0.1         # label smoothing
    drop_path: float = 0.1         # stochastic depth (ConvNeXt-T), applied to every step
    ema_decay: Optional[float] = None  # Table 10 is without EMA; 0.9999 for Table 1
    width_scale: float = 1.0       # multiplies every step's widths (its own 64 or 96)
    small_input_stem: bool = False  # every step's stem strides 2, not 4 (ArchConfig.small_input_stem)
    max_shift: int = 0             # in-memory data: random translation in pixels
    hflip: bool = True
    train_subset: Optional[int] = None   # first N training images (in-memory data)
    val_subset: Optional[int] = None
    max_updates: Optional[int] = None    # stop a step after this many updates (smoke tests)
    eval_batch_size: int = 256
    workers: int = 8
    channels_last: bool = True
    amp: bool = True               # bf16 autocast on CUDA (fp16 + loss scaling without bf16)
    cudnn_benchmark: bool = True   # CUDA: let cuDNN time its conv algorithms
    compile: bool = False          # torch.compile the model (minutes of compiling first)
    ckpt_every_s: float = 60.0     # checkpoint at least this often (and at every epoch end)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def training_key(self) -> Dict[str, Any]:
        """Fields that change the result (not how it is logged, checkpointed or sped up).

        Memory format, cuDNN's algorithm choice and compiling change only float rounding;
        amp stays in: bf16 changes the numbers beyond rounding.
        """
        d = self.to_dict()
        for k in ("description", "workers", "ckpt_every_s", "eval_batch_size",
                  "channels_last", "cudnn_benchmark", "compile"):
            d.pop(k)
        return d

    def scaled_lr(self, global_batch: int) -> float:
        return self.lr * global_batch / self.lr_batch

    def with_overrides(self, pairs) -> "Recipe":
        """Apply `key=value` strings, each read by its field's type and checked for range.

        `hflip=False`, `amp=no` and `amp=0` are false; `randaug=none` is None. Numbers are
        read as JSON reads them (`epochs=2` is 2, `lr=2e-3` is 0.002). A bad value is one
        RoadmapError naming the field and what it takes, before any data is loaded.
        """
        hints = get_type_hints(Recipe)
        changes = {}
        for pair in pairs or ():
            if "=" not in pair:
                raise RoadmapError(f"--set {pair!r}: expected key=value, e.g. --set epochs=2")
            key, raw = pair.split("=", 1)
            key = key.strip()
            if key not in hints:
                close = difflib.get_close_matches(key, hints, n=1)
                raise RoadmapError(f"--set {key}: unknown recipe field."
                                   + (f" Did you mean {close[0]!r}?" if close else "")
                                   + f" Valid: {', '.join(hints)}")
            try:
                value = convert(parse_text(raw, hints[key]), hints[key])
                _check_range(key, value)
            except Invalid as e:
                raise RoadmapError(f"--set {key}={raw}: {key} takes {_takes(key, e)}") from None
            changes[key] = value
        recipe = replace(self, **changes)
        recipe.check(prefix="--set ")
        return recipe

    def check(self, prefix: str = ""):
        """Raise one RoadmapError for the first field out of its range (see RANGES)."""
        hints = get_type_hints(Recipe)
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                convert(value, hints[f.name])
                _check_range(f.name, value)
            except Invalid as e:
                raise RoadmapError(f"{prefix}{f.name}={_show(value)}: {f.name} takes {_takes(f.name, e)}") from None
        if self.max_shift >= self.img_size:
            raise RoadmapError(f"{prefix}max_shift={self.max_shift}: the random shift must be "
                               f"smaller than img_size={self.img_size}")


def _show(value) -> str:
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _randaug(spec: str) -> bool:
    """Whether timm's create_transform understands `spec` (rand-..., augmix-... or an AutoAugment policy)."""
    from timm.data import auto_augment as aa
    hparams = dict(translate_const=100, img_mean=(124, 116, 104))
    try:
        if spec.startswith("rand"):
            aa.rand_augment_transform(spec, hparams)
        elif spec.startswith("augmix"):
            aa.augment_and_mix_transform(spec, hparams)
        else:
            aa.auto_augment_transform(spec, hparams)
    except Exception:  # timm says "no" with asserts, KeyErrors and ValueErrors alike
        return False
    return True


# What a field takes beyond its type: (test, what it takes). None passes where the type allows it.
_POSITIVE_INT = (lambda v: v >= 1, "an integer >= 1")
RANGES = {
    "img_size": _POSITIVE_INT,
    "epochs": (lambda v: v > 0, "a number > 0"),
    "batch_size": _POSITIVE_INT,
    "lr": (lambda v: v > 0, "a number > 0"),
    "lr_batch": _POSITIVE_INT,
    "min_lr": (lambda v: v >= 0, "a number >= 0"),
    "warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. 0.9,0.999"),
    "randaug": (_randaug, 'a timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1, or none'),
    "mixup": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "cutmix": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "reprob": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "drop_path": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "ema_decay": (lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.9999, or none"),
    "width_scale": (lambda v: v > 0, "a number > 0"),
    "max_shift": (lambda v: v >= 0, "an integer >= 0"),
    "train_subset": (lambda v: v >= 1, "an integer >= 1, or none for all"),
    "val_subset": (lambda v: v >= 1, "an integer >= 1, or none for all"),
    "max_updates": (lambda v: v >= 1, "an integer >= 1, or none for no limit"),
    "eval_batch_size": _POSITIVE_INT,
    "workers": (lambda v: v >= 0, "an integer >= 0"),
    "ckpt_every_s": (lambda v: v >= 0, "a number >= 0"),
}


def _takes(key: str, e: Invalid) -> str:
    """What `key` takes: its range (which says the type too), else its type."""
    return RANGES[key][1] if key in RANGES else str(e)


def _check_range(key: str, value):
    test, takes = RANGES.get(key, (None, ""))
    if value is not None and test is not None and not test(value):
        raise Invalid(takes)


PRESETS: Dict[str, Recipe] = {
    "imagenet": Recipe(
        description="The paper's recipe verbatim (Table 5): ImageNet-1K ImageFolder, 224 px, "
                    "300 epochs, AdamW lr 4e-3 at batch 4096 (scaled linearly), 20 warmup "
                    "epochs, RandAugment 9/0.5, mixup 0.8, cutmix 1.0, erasing 0.25, "
                    "smoothing 0.1, stochastic depth 0.1, no EMA (Table 10)."),
    "imagenette": Recipe(
        description="One GPU, a small real dataset in ImageFolder layout (e.g. Imagenette, "
                    "10 classes, ~9.5k images) at 160 px: the paper's augmentation and "
                    "regularization, 100 epochs with 5 warmup, batch 128, lr 4e-3 at 4096 "
                    "scaled to the batch x 4 (small data tolerates it), EMA 0.999.",
        img_size=160, epochs=100, warmup_epochs=5, batch_size=128, lr=1.6e-2, ema_decay=0.999),
    "cifar": Recipe(
        description="One GPU, CIFAR-10/100 python batches at 32 px (the facebookresearch/"
                    "ConvNeXt #58 setting): 100 epochs, batch 256, lightly regularized "
                    "(mixup 0.2, no cutmix, RandAugment, erasing 0.25), drop path 0.1.",
        img_size=32, epochs=100, warmup_epochs=5, batch_size=256, lr=3.2e-2, mixup=0.2, cutmix=0.0,
        max_shift=4, workers=4, small_input_stem=True),
    "demo": Recipe(
        description="CPU in minutes: Fashion-MNIST in memory, padded 28 -> 32 px, widths x0.25 "
                    "(16/24 base channels), 1 epoch, batch 128, AdamW lr 2e-3 with 10% warmup, "
                    "label smoothing 0.1; mixup, cutmix, RandAugment, erasing, stochastic "
                    "depth and EMA off, because one epoch cannot use that much regularization.",
        img_size=32, epochs=1, warmup_epochs=0.1, batch_size=128, lr=2e-3, lr_batch=128,
        min_lr=1e-5, randaug=None, mixup=0.0, cutmix=0.0, reprob=0.0, drop_path=0.0,
        width_scale=0.25, max_shift=2, workers=0, eval_batch_size=500, ckpt_every_s=30.0),
    "reference": Recipe(
        description="The committed reference on 2 CPU cores: the demo's data and widths, trained "
                    "4 epochs instead of 1 (all 13 steps x 3 seeds in about 70 minutes), batch 256, "
                    "AdamW lr 4e-3 with a half-epoch warmup and cosine to 1e-5, label smoothing "
                    "0.1, shift 2 px + flip, EMA 0.99 reported beside the raw weights. Chosen by "
                    "benchmarks/noise_study.py: longer training is what quiets the seed noise.",
        img_size=32, epochs=4, warmup_epochs=0.5, batch_size=256, lr=4e-3, lr_batch=256,
        min_lr=1e-5, randaug=None, mixup=0.0, cutmix=0.0, reprob=0.0, drop_path=0.0,
        ema_decay=0.99, width_scale=0.25, max_shift=2, workers=0, eval_batch_size=500,
        ckpt_every_s=30.0),
}


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise RoadmapError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]
