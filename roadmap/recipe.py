"""The training recipe (paper Table 5) and presets that scale it to a budget.

A preset is a `Recipe`; every field can be overridden from the command line with
`--set key=value`. `imagenet` is the paper verbatim; the others say what they scale down.
"""

import difflib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple, get_type_hints

from .config import ArchConfig
from .errors import RoadmapError
from .values import Invalid, convert, parse_text


@dataclass(frozen=True)
class Recipe:
    """What changes a run's numbers: every field but `description` is in the run key."""

    description: str = ""
    img_size: int = 224
    epochs: float = 300
    batch_size: int = 128  # per process
    lr: float = 4e-3  # at `lr_batch`; scaled linearly to the real global batch
    lr_batch: int = 4096
    min_lr: float = 1e-6
    warmup_epochs: float = 20
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    randaug: Optional[str] = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.8
    cutmix: float = 1.0
    reprob: float = 0.25  # random erasing
    smoothing: float = 0.1  # label smoothing
    drop_path: float = 0.1  # stochastic depth (ConvNeXt-T), applied to every step
    ema_decay: Optional[float] = None  # Table 10 is without EMA; 0.9999 for Table 1
    width_scale: float = 1.0  # multiplies every step's widths (its own 64 or 96)
    small_input_stem: bool = False  # every step's stem strides 2, not 4 (ArchConfig.small_input_stem)
    max_shift: int = 0  # in-memory data: random translation in pixels
    hflip: bool = True
    train_subset: Optional[int] = None  # first N training images (in-memory data)
    val_subset: Optional[int] = None
    max_updates: Optional[int] = None  # stop a step after this many updates (smoke tests)
    amp: bool = True  # bf16 autocast on CUDA (fp16 + loss scaling without bf16)
    clip_grad: Optional[float] = None  # clip the gradients' global norm to this (the paper: none)
    # images per update over all processes, made of batch_size x processes x micro-batches
    # (the official code's --update_freq); none: one batch per process, no accumulation
    global_batch: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def training_key(self) -> Dict[str, Any]:
        """The fields the run key covers, named one by one (KEY_FIELDS): a field added to
        the recipe later enters the key only where it differs from its default
        (KEY_FIELDS_LATER), so the committed runs keep their keys."""
        d = {k: getattr(self, k) for k in KEY_FIELDS}
        d.update({k: getattr(self, k) for k in KEY_FIELDS_LATER if getattr(self, k) != _DEFAULTS[k]})
        return d

    def apply(self, cfg: ArchConfig, num_classes: int) -> ArchConfig:
        """The step's final configuration: widths x width_scale (multiples of 8, at least 8),
        the data's classes, the recipe's drop path and stem. The only place widths are scaled."""
        widths = tuple(max(8, int(round(w * self.width_scale / 8)) * 8) for w in cfg.widths)
        return cfg.replace(
            widths=widths,
            num_classes=num_classes,
            drop_path_rate=self.drop_path,
            small_input_stem=self.small_input_stem,
        )

    def scaled_lr(self, global_batch: int) -> float:
        return self.lr * global_batch / self.lr_batch

    def micro_batches(self, world_size: int = 1) -> int:
        """Batches each process accumulates per update: global_batch / (batch_size x processes)."""
        if self.global_batch is None:
            return 1
        per_step = self.batch_size * world_size
        k, rest = divmod(self.global_batch, per_step)
        if k < 1 or rest:
            fits = [n for n in range(1, 17) if self.global_batch % (self.batch_size * n) == 0]
            raise RoadmapError(
                f"global_batch={self.global_batch} is not a whole number of batches of batch_size="
                f"{self.batch_size} x {world_size} process(es) = {per_step}; run on "
                + (f"{', '.join(map(str, fits))} processes" if fits else "another process count")
                + f", or --set batch_size=... or --set global_batch=... (e.g. {max(1, k) * per_step})"
            )
        return k

    def global_batch_size(self, world_size: int = 1) -> int:
        """Images per update over all processes (the learning rate scales with it)."""
        return self.batch_size * world_size * self.micro_batches(world_size)

    def with_overrides(self, pairs) -> "Recipe":
        """This recipe with `key=value` strings applied (recipe fields only: `settings` takes
        execution fields too)."""
        recipe, _ = apply_overrides(self, Execution(), pairs, execution=False)
        return recipe

    def check(self, prefix: str = ""):
        """Raise one RoadmapError for the first field out of its range (see RANGES), or for
        a combination that cannot mean what it says."""
        _check_fields(self, prefix)
        if self.max_shift >= self.img_size:
            raise RoadmapError(
                f"{prefix}max_shift={self.max_shift}: the random shift must be smaller than img_size={self.img_size}"
            )
        if self.warmup_epochs >= self.epochs:
            raise RoadmapError(
                f"{prefix}warmup_epochs={_show(self.warmup_epochs)}: the warmup must be "
                f"shorter than the training (epochs={_show(self.epochs)}); lower it"
            )
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            # timm's Mixup pairs each image with its mirror in the batch (every batch is full)
            raise RoadmapError(
                f"{prefix}batch_size={self.batch_size}: mixup and cutmix pair the images of a batch, so "
                f"the batch must be even; use batch_size={self.batch_size + 1}, or mixup=0 and cutmix=0"
            )
        if self.min_lr >= self.lr:
            raise RoadmapError(
                f"{prefix}min_lr={_show(self.min_lr)}: the cosine decays from lr to "
                f"min_lr, so min_lr must be below lr={_show(self.lr)}"
            )


@dataclass(frozen=True)
class Execution:
    """How a run is executed: switches that change speed, memory or logging, not the numbers
    (beyond float rounding: memory format, cuDNN's algorithm choice and compiling), so they
    stay out of the run key."""

    workers: int = 8  # DataLoader processes (folder data and RandAugment)
    eval_batch_size: int = 256
    channels_last: bool = True
    cudnn_benchmark: bool = True  # CUDA: let cuDNN time its conv algorithms
    compile: bool = False  # torch.compile the model (minutes of compiling first)
    ckpt_every_s: float = 60.0  # checkpoint at least this often (and at every epoch end)
    curve: bool = False  # also score the test split after every epoch: the learning curve

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def check(self, prefix: str = ""):
        _check_fields(self, prefix)


def _check_fields(obj, prefix: str):
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        try:
            convert(value, hints[f.name])
            _check_range(f.name, value)
        except Invalid as e:
            raise RoadmapError(f"{prefix}{f.name}={_show(value)}: {f.name} takes {_takes(f.name, e)}") from None


def apply_overrides(recipe: "Recipe", ex: "Execution", pairs, execution: bool = True):
    """`key=value` strings applied to the recipe or the execution, whichever has the field.

    Each value is read by its field's type and checked for range: `hflip=False`, `amp=no`
    and `amp=0` are false; `randaug=none` is None; numbers as JSON reads them (`epochs=2` is
    2, `lr=2e-3` is 0.002). A bad value is one RoadmapError naming the field and what it
    takes, before any data is loaded.
    """
    targets = {"recipe": (recipe, get_type_hints(Recipe))}
    if execution:
        targets["execution"] = (ex, get_type_hints(Execution))
    known = {k: where for where, (_, hints) in targets.items() for k in hints if k != "description"}
    changes = {where: {} for where in targets}
    for pair in pairs or ():
        if "=" not in pair:
            raise RoadmapError(f"--set {pair!r}: expected key=value, e.g. --set epochs=2")
        key, raw = (t.strip() if i == 0 else t for i, t in enumerate(pair.split("=", 1)))
        if key not in known and not execution and key in get_type_hints(Execution):
            raise RoadmapError(
                f"{key} is an execution setting, not part of the recipe: apply it "
                "with roadmap.recipe.settings(preset, pairs)"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise RoadmapError(
                f"--set {key}: unknown recipe field."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" Valid: {', '.join(known)}"
            )
        hint = targets[known[key]][1][key]
        try:
            value = convert(parse_text(raw, hint), hint)
            _check_range(key, value)
        except Invalid as e:
            raise RoadmapError(f"--set {key}={raw}: {key} takes {_takes(key, e)}") from None
        changes[known[key]][key] = value
    recipe = replace(recipe, **changes["recipe"])
    recipe.check(prefix="--set ")
    if execution:
        ex = replace(ex, **changes["execution"])
        ex.check(prefix="--set ")
    return recipe, ex


def settings(preset: str, pairs=()) -> Tuple["Recipe", "Execution"]:
    """The preset's recipe and execution with `--set key=value` overrides applied."""
    return apply_overrides(get_preset(preset), get_execution(preset), pairs)


# The run key, field by field. Add a new recipe field to KEY_FIELDS_LATER (keyed only where it
# differs from its default) or to Execution; tests/test_plan.py checks every field is placed.
KEY_FIELDS = (
    "img_size",
    "epochs",
    "batch_size",
    "lr",
    "lr_batch",
    "min_lr",
    "warmup_epochs",
    "weight_decay",
    "betas",
    "randaug",
    "mixup",
    "cutmix",
    "reprob",
    "smoothing",
    "drop_path",
    "ema_decay",
    "width_scale",
    "small_input_stem",
    "max_shift",
    "hflip",
    "train_subset",
    "val_subset",
    "max_updates",
    "amp",
)
KEY_FIELDS_LATER: Tuple[str, ...] = ("clip_grad", "global_batch")
_DEFAULTS = {f.name: f.default for f in fields(Recipe)}


def keyed_fields(recorded: Dict[str, Any]) -> Dict[str, Any]:
    """The key's fields of a recorded recipe (a run record's dict), as `training_key` makes them."""
    d = {k: recorded.get(k) for k in KEY_FIELDS}
    d.update({k: recorded[k] for k in KEY_FIELDS_LATER if recorded.get(k, _DEFAULTS[k]) != _DEFAULTS[k]})
    return d


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
    # BatchNorm steps normalize over the batch: one image per batch has no variance to use
    "batch_size": (lambda v: v >= 2, "an integer >= 2 (BatchNorm needs two images per batch)"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "lr_batch": _POSITIVE_INT,
    "min_lr": (lambda v: v >= 0, "a number >= 0"),
    "warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. 0.9,0.999"),
    "randaug": (_randaug, "a timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1, or none"),
    "mixup": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "cutmix": (lambda v: v >= 0, "a number >= 0 (0: off)"),
    "reprob": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "drop_path": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "ema_decay": (lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.9999, or none"),
    # x16 already makes ConvNeXt-T ~7 G parameters; beyond, a model cannot be built in memory
    "width_scale": (lambda v: 0 < v <= 16, "a number in (0, 16]"),
    "max_shift": (lambda v: v >= 0, "an integer >= 0"),
    "train_subset": (lambda v: v >= 1, "an integer >= 1, or none for all"),
    "val_subset": (lambda v: v >= 1, "an integer >= 1, or none for all"),
    "max_updates": (lambda v: v >= 1, "an integer >= 1, or none for no limit"),
    "global_batch": (lambda v: v >= 2, "an integer >= 2 (images per update over all processes), or none"),
    "clip_grad": (lambda v: v > 0, "a number > 0 (the gradients' largest global norm), or none"),
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


# Fashion-MNIST in memory on a CPU: 32 px, widths x0.25, light augmentation. `reference` trains
# the same thing longer.
_FASHION_CPU = Recipe(
    description="CPU in minutes: Fashion-MNIST in memory, padded 28 -> 32 px, widths x0.25 "
    "(16/24 base channels), 1 epoch, batch 128, AdamW lr 2e-3 with 10% warmup, "
    "label smoothing 0.1; mixup, cutmix, RandAugment, erasing, stochastic "
    "depth and EMA off, because one epoch cannot use that much regularization.",
    img_size=32,
    epochs=1,
    warmup_epochs=0.1,
    batch_size=128,
    lr=2e-3,
    lr_batch=128,
    min_lr=1e-5,
    randaug=None,
    mixup=0.0,
    cutmix=0.0,
    reprob=0.0,
    drop_path=0.0,
    width_scale=0.25,
    max_shift=2,
)

PRESETS: Dict[str, Recipe] = {
    "imagenet": Recipe(
        description="The paper's recipe verbatim (Table 5): ImageNet-1K ImageFolder, 224 px, "
        "300 epochs, AdamW lr 4e-3 at batch 4096 (scaled linearly), 20 warmup "
        "epochs, RandAugment 9/0.5, mixup 0.8, cutmix 1.0, erasing 0.25, "
        "smoothing 0.1, stochastic depth 0.1, no EMA (Table 10). The global batch is 4096 on "
        "any number of GPUs: 128 per GPU, accumulated over 4096 / (128 x GPUs) micro-batches.",
        global_batch=4096,
    ),
    "imagenette": Recipe(
        description="One GPU, a small real dataset in ImageFolder layout (e.g. Imagenette, "
        "10 classes, ~9.5k images) at 160 px: the paper's augmentation and "
        "regularization, 100 epochs with 5 warmup, batch 128, lr 4e-3 at 4096 "
        "scaled to the batch x 4 (small data tolerates it), EMA 0.999.",
        img_size=160,
        epochs=100,
        warmup_epochs=5,
        batch_size=128,
        lr=1.6e-2,
        ema_decay=0.999,
    ),
    "cifar": Recipe(
        description="One GPU, CIFAR-10/100 python batches at 32 px (the facebookresearch/"
        "ConvNeXt #58 setting): 100 epochs, batch 256, lightly regularized "
        "(mixup 0.2, no cutmix, RandAugment, erasing 0.25), drop path 0.1.",
        img_size=32,
        epochs=100,
        warmup_epochs=5,
        batch_size=256,
        lr=3.2e-2,
        mixup=0.2,
        cutmix=0.0,
        max_shift=4,
        small_input_stem=True,
    ),
    "demo": _FASHION_CPU,
    "reference": replace(
        _FASHION_CPU,
        description="The committed reference on 2 CPU cores: the demo's data and widths, trained "
        "4 epochs instead of 1 (all 13 steps x 3 seeds in about 70 minutes), batch 256, "
        "AdamW lr 4e-3 with a half-epoch warmup and cosine to 1e-5, label smoothing "
        "0.1, shift 2 px + flip, EMA 0.99 reported beside the raw weights. Chosen by "
        "benchmarks/noise_study.py: longer training is what quiets the seed noise.",
        epochs=4,
        warmup_epochs=0.5,
        batch_size=256,
        lr=4e-3,
        lr_batch=256,
        ema_decay=0.99,
    ),
}

# In-memory CPU presets: no DataLoader workers (batches are cut from tensors), a large eval batch.
_CPU = Execution(workers=0, eval_batch_size=500, ckpt_every_s=30.0)
EXECUTIONS: Dict[str, Execution] = {
    "imagenet": Execution(),
    "imagenette": Execution(),
    "cifar": Execution(workers=4),
    "demo": _CPU,
    "reference": _CPU,
}


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise RoadmapError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def get_execution(name: str) -> Execution:
    get_preset(name)  # the same error for an unknown name
    return EXECUTIONS[name]
