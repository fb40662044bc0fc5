"""One image file, read by declared rules: a regular file only, every Pillow mode converted
explicitly to RGB uint8 or refused by name, and a cheap check that it will decode.

The rules, by mode (`to_rgb`):
- RGB as is; L (grayscale) repeated to three channels; 1 (bilevel) as black and white.
- P (palette) through its palette; with a transparent colour, as alpha (below).
- RGBA, LA, PA, RGBa, La and images with a transparent colour: composited on
  ALPHA_BACKGROUND (white), so a transparent pixel is the background, not whatever colour
  the file stores under it.
- RGBX, CMYK, YCbCr, HSV: converted by Pillow.
- I;16 (16-bit, any byte order): 0..65535 scaled to 0..255 (x / 257, rounded), so a
  16-bit image keeps its range instead of being clipped at 255.
- I (32-bit integers): read as 16-bit data when its values lie in 0..65535 (how 16-bit files
  may open), else refused: its range is not declared.
- F (32-bit float): 0..1 scaled to 0..255; values outside [0, 1] or not finite are refused.
- Anything else (LAB, packed BGR modes, ...) is refused by name.
"""

import os
import stat
from typing import Optional

import numpy as np

from ..errors import RoadmapError

ALPHA_BACKGROUND = (255, 255, 255)
CONVERTED = {"RGBX", "CMYK", "YCbCr", "HSV"}
WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
READ_MODES = {"RGB", "L", "1", "P", "I", "F"} | CONVERTED | WITH_ALPHA | SIXTEEN_BIT

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def regular_file(path, fix: str = "remove it or replace it with the file") -> os.stat_result:
    """`path`'s stat, refusing anything but a regular file before it is opened: reading a FIFO
    blocks until something writes to it, and a device never ends."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RoadmapError(f"{path}: cannot read it ({e.strerror}); a broken symbolic link?") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise RoadmapError(f"{path} is {kind}, not a file; {fix}")
    return st


def _composite(image):
    from PIL import Image

    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")  # Pillow: no La -> RGBA
    out = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _from_array(image, arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")


def to_rgb(image, name):
    """`image` as an RGB image of uint8 by the module's rules, or RoadmapError naming the mode."""
    mode = image.mode
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        return _composite(image)
    if mode == "RGB":
        return image
    if mode in ("L", "P") or mode in CONVERTED:
        return image.convert("RGB")
    if mode == "1":
        return image.convert("L").convert("RGB")
    if mode in WITH_ALPHA:
        return _composite(image)
    if mode in SIXTEEN_BIT or mode == "I":
        arr = np.asarray(image).astype(np.int64)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise RoadmapError(
                f"{name}: a 32-bit integer image with values {arr.min()}..{arr.max()}, outside the "
                "16-bit range 0..65535 roadmap reads it in; save it as 8- or 16-bit"
            )
        return _from_array(image, (arr * 255 + 32767) // 65535)
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            lo, hi = np.nanmin(arr), np.nanmax(arr)
            raise RoadmapError(
                f"{name}: a float image with values {lo:g}..{hi:g}"
                f"{'' if np.isfinite(arr).all() else ' (and NaN or infinite ones)'}; roadmap reads "
                "float images with values in [0, 1]; rescale it or save it as 8- or 16-bit"
            )
        return _from_array(image, np.rint(arr * 255))
    raise RoadmapError(
        f"{name}: images of Pillow mode {mode} are not read (roadmap reads "
        f"{', '.join(sorted(READ_MODES))}); convert it to RGB"
    )


def read_image(path):
    """The image at `path` as RGB uint8 (a PIL image), by the module's rules; a file that
    cannot be read is one RoadmapError naming it."""
    from PIL import Image

    regular_file(path)
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except Exception as e:  # truncated, damaged, not an image
        raise RoadmapError(f"{path}: cannot read this image ({type(e).__name__}: {e})") from None
    return to_rgb(image, path)


def _ends_whole(fmt: str, tail: bytes) -> bool:
    """Whether a JPEG or PNG ends with its end marker (a download cut short does not)."""
    if fmt == "JPEG":
        return tail.rstrip(b"\0").endswith(b"\xff\xd9")
    if fmt == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    return False


def check_image(path, tail: Optional[bytes] = None) -> Optional[str]:
    """Why the image at `path` would fail to train, or None: its header parsed, its mode one
    `to_rgb` reads, and its data whole. JPEG and PNG are whole when they end with their end
    marker (`tail`: the file's last bytes, read here if not given); any other, or one without
    it, is decoded."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            if tail is None:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64))
                tail = f.read()
                f.seek(0)
            image = Image.open(f)
            if image.mode not in READ_MODES:
                to_rgb(image, path)  # raises, naming the mode
            if not _ends_whole(image.format, tail):
                image.load()
                to_rgb(image, path)  # range checks of I and F images
    except RoadmapError as e:
        return str(e).removeprefix(f"{path}: ")
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def transformed(image, transform, name):
    """`transform(image)`, with an error raised inside it named as the transform's (an
    augmentation's bug), not blamed on the image, which was read."""
    if transform is None:
        return image
    try:
        return transform(image)
    except Exception as e:
        raise RoadmapError(
            f"{name}: the image was read, but the train/eval transform failed on it "
            f"({type(e).__name__}: {e}); this is an augmentation's error, not the image's: "
            "try --set randaug=none and report it"
        ) from None
