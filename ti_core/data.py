"""Training images: read any common image file as 8-bit RGB (plus its alpha), and make it square without stretching.

Reading (`open_image`, `load_images`): EXIF orientation is applied (phone photos are often stored sideways with
an orientation tag); grayscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit values are scaled, not
clipped); transparency is flattened onto white and the alpha channel is kept apart, so the trainer can use it as
a loss weight (as A1111 allows); animated files give their first frame; Pillow's decompression-bomb limit is
enforced. A caption may sit beside an image as "<stem>.txt".

Squaring: `square_crop` resizes the short side to the training size and crops (center, random or around a focus
point); `pad_to_square` ("outcrop") fits the long side and fills the border with the edge pixels or a blurred copy.
Images are never stretched: the other trainers' stretching of non-square images is what users complain about most.
Geometry functions take "RGB" images and "L" masks (a mask pads with 0: the padding carries no loss weight).
"""

from __future__ import annotations

import numbers
import random
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from .errors import ImageSetError, SettingError
from .textfile import read_user_text

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_EXTENSION = ".txt"
CROP_MODES = ("center", "random", "pad", "focus")
OFFSET_MODES = ("center", "random", "focus")  # the modes that crop (pad does not)
PAD_FILLS = ("edge", "blur")
BACKGROUND = (255, 255, 255)  # transparent pixels are flattened onto white
BLUR_FRACTION = 0.05  # "blur" padding: Gaussian radius as a fraction of the output size (26 px at 512)

# What Pillow raises for unreadable, truncated or corrupt files (it has no common base class for them).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_SUPPORTED = " ".join(IMAGE_EXTENSIONS)


@dataclass
class SourceImage:
    path: Path | None  # None for images that did not come from a file (e.g. a ComfyUI tensor)
    rgb: Image.Image  # mode "RGB", 8-bit, orientation applied, transparency flattened onto white
    alpha: Image.Image | None  # mode "L" when the source had any transparent pixel, else None
    caption: str = ""  # text of "<stem>.txt" beside the image, stripped; "" if none

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation was applied."""
        return self.rgb.size


# --------------------------------------------------------------------------------------------- reading


def open_image(path) -> SourceImage:
    """Read one image file as 8-bit RGB (+ alpha when it has transparency) with its caption."""
    path = Path(path)
    decoded = _decode(path)
    rgb, alpha = _rgb_and_alpha(decoded, path)
    return SourceImage(path=path, rgb=rgb, alpha=alpha, caption=read_caption(path))


def _decode(path: Path) -> Image.Image:
    """The first frame, fully decoded and upright (EXIF orientation applied)."""
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise ImageSetError(f"image {path} {what}; pass an existing image file ({_SUPPORTED}).")
    if path.stat().st_size == 0:
        raise ImageSetError(f"image {path} is an empty file (0 bytes); copy it again from its source, or remove it.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; refuse both, as the caller asked for images
            # that are safe to decode.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSetError(
            f"image {path} is too large to decode safely: {exc} Downscale it (training uses at most about "
            "1024 x 1024 pixels), or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from exc
    except _DECODE_ERRORS as exc:
        said = str(exc) or type(exc).__name__
        raise ImageSetError(
            f"cannot read image {path}: Pillow says {said!r}. The file is truncated, corrupt or not really "
            f"a {path.suffix or 'image'} file; re-save it as PNG or JPEG, or remove it from the folder."
        ) from exc


def _rgb_and_alpha(image: Image.Image, path: Path) -> tuple[Image.Image, Image.Image | None]:
    if image.mode == "F":
        raise ImageSetError(
            f"image {path} holds 32-bit floating-point pixels, whose brightness range is not defined; "
            "save it as an 8- or 16-bit PNG or TIFF."
        )
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = _gray16_to_8bit(image)
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in image.info:
        return _convert(image, "RGB", path), None
    rgba = _convert(image, "RGBA", path)
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:  # an alpha channel with nothing transparent in it
        return rgba.convert("RGB"), None
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), alpha


def _gray16_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale ("I;16*", or "I", which Pillow uses for 16-bit PGM) -> "L", scaled 0..65535 -> 0..255.

    Pillow's own convert("L") clips instead, which turns most of a 16-bit image white. A transparent key value
    (PNG tRNS) becomes an alpha channel ("LA").
    """
    values = np.asarray(image).astype(np.float64)
    gray = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))
    key = image.info.get("transparency")
    if not isinstance(key, numbers.Integral):
        return gray
    alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8))
    return Image.merge("LA", (gray, alpha))


def _convert(image: Image.Image, mode: str, path: Path) -> Image.Image:
    try:
        return image.convert(mode)
    except ValueError as exc:
        raise ImageSetError(
            f"image {path} has pixel mode {image.mode!r}, which cannot be converted to {mode} ({exc}); "
            "re-save it as an 8-bit RGB PNG or JPEG."
        ) from exc


def read_caption(image_path: Path) -> str:
    """The stripped text of "<stem>.txt" beside the image, or "" when there is none."""
    caption_path = Path(image_path).with_suffix(CAPTION_EXTENSION)
    if not caption_path.is_file():
        return ""
    return read_user_text(caption_path, "caption file", ImageSetError).strip()


def load_images(folder) -> tuple[list[SourceImage], list[str]]:
    """Every image directly in `folder` (not in subfolders), sorted by file name, and warnings for the user.

    Files are recognised by extension (case-insensitive). Other files and subfolders are skipped with a
    warning; caption files (.txt beside an image) are not warned about, orphan .txt files are. Hidden files
    (names starting with ".", e.g. macOS "._IMG_1.jpg" resource forks and .DS_Store) are ignored. Every
    unreadable image is listed in one error, so they can all be fixed at once.
    """
    folder = Path(folder)
    entries = _list_folder(folder)
    image_paths = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    image_stems = {p.stem for p in image_paths}
    notes = _skipped_entries(entries, image_stems)
    if not image_paths:
        raise ImageSetError(f"no images in {folder}: {_describe(entries)}. Put {_SUPPORTED} files directly in it.")
    images, failures = [], []
    for path in image_paths:
        try:
            images.append(open_image(path))
        except ImageSetError as exc:
            failures.append(str(exc))
    if failures:
        count = f"{len(failures)} of the {len(image_paths)} images" if len(image_paths) > 1 else "the image"
        raise ImageSetError(f"{count} in {folder} cannot be used; fix or remove them: " + " | ".join(failures))
    if len(images) == 1:
        notes.append(
            f"only one image in {folder} ({image_paths[0].name}): textual inversion learns a concept from what "
            "3-5 images share; from a single image it tends to copy that picture, background included."
        )
    return images, notes


def _list_folder(folder: Path) -> list[Path]:
    if not folder.exists():
        raise ImageSetError(f"image folder {folder} does not exist; pass the folder that holds the training images.")
    if not folder.is_dir():
        raise ImageSetError(
            f"{folder} is a file, not a folder; pass the folder that holds the training images "
            f"(its parent is {folder.parent})."
        )
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as exc:
        raise ImageSetError(f"cannot list image folder {folder}: {exc.strerror or exc}.") from exc


def _skipped_entries(entries: list[Path], image_stems: set[str]) -> list[str]:
    notes = []
    for path in entries:
        suffix = path.suffix.lower()
        if path.is_dir():
            notes.append(f"skipped folder {path.name}/: images in subfolders are not read.")
        elif suffix == CAPTION_EXTENSION:
            if path.stem not in image_stems:
                notes.append(f"skipped {path.name}: a caption file with no image named {path.stem}.* beside it.")
        elif suffix not in IMAGE_EXTENSIONS:
            notes.append(f"skipped {path.name}: not an image file (images are {_SUPPORTED}).")
    return notes


def _describe(entries: list[Path]) -> str:
    if not entries:
        return "the folder is empty (hidden files are ignored)"
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:8])
    more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
    return f"it holds only {len(entries)} other entries: {shown}{more}"


# --------------------------------------------------------------------------------------------- squaring


def fit_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so that min(width, height) == size, keeping the aspect ratio (up or down)."""
    _check_size(size)
    _check_mode(img)
    w, h = img.size
    if w <= h:
        target = (size, max(size, round(h * size / w)))
    else:
        target = (max(size, round(w * size / h)), size)
    return _resize(img, target)


def pad_to_square(img: Image.Image, size: int, fill: str = "edge") -> Image.Image:
    """Outcrop: fit the long side to `size`, centre the image on a size x size canvas and fill the border.

    fill="edge" repeats the outermost pixels outward; fill="blur" puts a strongly blurred copy of the image,
    scaled to cover the square, behind it. An "L" mask is always padded with 0, so the border gets no loss weight.
    """
    _check_size(size)
    _check_choice(fill, PAD_FILLS, "fill")
    _check_mode(img)
    w, h = img.size
    inner = (max(1, round(w * size / max(w, h))), max(1, round(h * size / max(w, h))))
    small = _resize(img, inner)
    left, top = (size - inner[0]) // 2, (size - inner[1]) // 2
    if img.mode == "RGB" and fill == "edge":
        pixels = np.asarray(small)
        widths = ((top, size - inner[1] - top), (left, size - inner[0] - left), (0, 0))
        return Image.fromarray(np.pad(pixels, widths, mode="edge"))
    if img.mode == "L":
        canvas = Image.new("L", (size, size), 0)
    else:
        canvas = _center_crop_cover(img, size).filter(ImageFilter.GaussianBlur(BLUR_FRACTION * size))
    canvas.paste(small, (left, top))
    return canvas


def square_crop(
    img: Image.Image,
    size: int,
    mode: str = "center",
    *,
    rng: random.Random | None = None,
    focus: tuple[float, float] | None = None,
    fill: str = "edge",
) -> Image.Image:
    """A size x size square of `img`: short side resized to `size`, then cropped; or padded when mode == "pad".

    mode: "center"; "random" (a position drawn from `rng`); "focus" (the window centred on `focus` = (x, y), each
    0..1 of the image's width and height, as far as the borders allow); "pad" (`pad_to_square` with `fill`).
    """
    _check_choice(mode, CROP_MODES, "mode")
    _check_choice(fill, PAD_FILLS, "fill")
    if mode == "pad":
        return pad_to_square(img, size, fill)
    resized = fit_short_side(img, size)
    top, left = crop_offsets(resized.size, size, mode, rng=rng, focus=focus)
    return resized.crop((left, top, left + size, top + size))


def crop_offsets(
    size_wh: tuple[int, int],
    crop: int,
    mode: str,
    rng: random.Random | None = None,
    focus: tuple[float, float] | None = None,
    multiple: int = 1,
) -> tuple[int, int]:
    """(top, left) of a crop x crop window inside a (width, height) image; both are multiples of `multiple`.

    The trainer crops cached latents: it asks for pixel offsets with multiple=8 so that they map to whole
    latent cells. "center" and "focus" take the allowed offset nearest to the ideal one; "random" draws each
    allowed offset with equal probability from `rng`.
    """
    _check_choice(mode, OFFSET_MODES, "mode", hint=' ("pad" does not crop: use pad_to_square)')
    _check_positive_int(multiple, "multiple")
    _check_positive_int(crop, "crop")
    width, height = size_wh
    if crop > width or crop > height:
        raise SettingError(
            f"a {crop} x {crop} crop does not fit in a {width} x {height} image; resize the short side to at "
            "least the crop size first (fit_short_side)."
        )
    if mode == "random" and rng is None:
        raise SettingError('crop mode "random" needs rng=random.Random(seed), so that crops are reproducible.')
    if mode == "focus":
        fx, fy = _check_focus(focus)
    else:
        fx, fy = 0.5, 0.5
    top = _offset(height, crop, fy, multiple, rng if mode == "random" else None)
    left = _offset(width, crop, fx, multiple, rng if mode == "random" else None)
    return top, left


def _offset(length: int, crop: int, centre: float, multiple: int, rng: random.Random | None) -> int:
    """An offset in multiples of `multiple` that keeps the window inside: random, or nearest to `centre`."""
    positions = (length - crop) // multiple + 1  # offsets 0, multiple, 2 * multiple, ...
    if rng is not None:
        return rng.randrange(positions) * multiple
    ideal = centre * length - crop / 2
    return min(max(round(ideal / multiple), 0), positions - 1) * multiple


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An "RGB" image -> float32 [3, H, W] in [-1, 1] (what the VAE encodes); an "L" mask -> [1, H, W] in [0, 1]."""
    _check_mode(img)
    pixels = torch.from_numpy(np.array(img, dtype=np.float32))
    if img.mode == "L":
        return (pixels / 255.0).unsqueeze(0)
    return pixels.permute(2, 0, 1).contiguous() / 127.5 - 1.0


def _resize(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    if target == img.size:
        return img.copy()
    # LANCZOS keeps photos sharp; a mask gets BILINEAR, which cannot ring outside the weights it had.
    resample = Image.Resampling.BILINEAR if img.mode == "L" else Image.Resampling.LANCZOS
    return img.resize(target, resample)


def _center_crop_cover(img: Image.Image, size: int) -> Image.Image:
    cover = fit_short_side(img, size)
    top, left = crop_offsets(cover.size, size, "center")
    return cover.crop((left, top, left + size, top + size))


# --------------------------------------------------------------------------------------------- argument checks


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0 or size % 8:
        raise SettingError(
            f"size must be a positive multiple of 8 (e.g. 512, 768, 1024), got {size!r}: the VAE works on "
            "8 x 8 pixel cells."
        )


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise SettingError(f"{name} must be a positive integer, got {value!r}.")


def _check_choice(value, legal: tuple[str, ...], name: str, hint: str = "") -> None:
    if value not in legal:
        raise SettingError(f"unknown {name} {value!r}; use one of {', '.join(legal)}{hint}.")


def _check_mode(img: Image.Image) -> None:
    if img.mode not in ("RGB", "L"):
        raise ImageSetError(
            f"expected an 'RGB' image or an 'L' mask, got mode {img.mode!r} ({img.size[0]} x {img.size[1]}); "
            "read files with open_image, which converts them."
        )


def _check_focus(focus) -> tuple[float, float]:
    try:
        fx, fy = (float(v) for v in focus)
    except (TypeError, ValueError) as exc:
        raise SettingError(
            f'crop mode "focus" needs focus=(x, y), each between 0 and 1 of the image size; got {focus!r}.'
        ) from exc
    if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0):  # also refuses NaN
        raise SettingError(f"focus must be (x, y) with both between 0 and 1 (0.5, 0.5 = centre); got {focus!r}.")
    return fx, fy
