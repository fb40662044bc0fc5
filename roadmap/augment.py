"""timm's augmentations, made safe for the Pillow versions we allow.

timm's RandAugment asks Posterize for 0 bits at the top magnitude (`PosterizeIncreasing`
at m >= 10 with mstd 0.5, about 1 image in 1,000 of the paper's `rand-m9-mstd0.5-inc1`).
Older Pillow returned a black image for 0 bits, which is what the policy means (TF's and
UDA's implementations keep "4 down to 0" bits); Pillow 13 raises ValueError instead. We
keep the augmentation as meant: 0 bits is a black image of the same mode and size.
"""

from __future__ import annotations

from PIL import Image, ImageOps


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """Keep the `bits_to_keep` most significant bits of each channel; 0 keeps none (black)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)  # every bit masked off: zeros in every band
    return ImageOps.posterize(img, bits_to_keep)


def _ops(t):
    """The AugmentOps inside one of timm's auto-augment transforms (RandAugment and AugMix
    keep a list, AutoAugment a list of sub-policies)."""
    for op in getattr(t, "ops", None) or ():
        yield op
    for sub in getattr(t, "policy", None) or ():
        yield from sub


def make_safe(transform):
    """`transform` (a torchvision Compose from timm's create_transform, or one transform)
    with every Posterize op of its auto-augmentation replaced by `posterize` above.
    Returns the number of ops replaced, so a caller or test can see the fix took hold."""
    replaced = 0
    for t in getattr(transform, "transforms", [transform]):
        for op in _ops(t):
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = posterize
                replaced += 1
    return replaced
