"""Training pictures: load a folder (sizes kept, captions from .txt files) and square images without stretching."""

from __future__ import annotations

import logging

from . import comfy_adapter as comfy

CATEGORY = "textual_inversion"
DEMO_IMAGES = "ti-demo-images"  # drawn into ComfyUI's input folder on first use, so the example workflows run offline


def draw_demo_images(path) -> None:
    """Draw the demo concept (a purple striped star the built-in model never saw) into an absent or empty folder;
    a folder holding anything is the user's, and is never touched."""
    from ..ti_core.toyworld.concept import draw_concept

    if path.is_dir() and any(path.iterdir()):
        return
    draw_concept(path)


def images_folder(folder: str):
    """A folder inside ComfyUI's input directory, by name (or by an absolute path that lies inside it); anything
    outside is refused, so a shared workflow cannot read pictures from elsewhere on the machine."""
    from .safe_paths import relative_inside, resolve_inside

    root = comfy.input_directory()
    path = resolve_inside(root, relative_inside(root, folder))
    if folder == DEMO_IMAGES:
        draw_demo_images(path)
    return path


def folder_fingerprint(folder) -> str:
    """sha256 over the names and bytes of the folder's files: changes when any picture or caption does."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class TILoadImages:
    DESCRIPTION = ("Load the training pictures of a folder inside ComfyUI's input folder (by name, or by an absolute "
                   "path inside it; folders elsewhere are refused). "
                   "Sizes and aspect ratios are kept (the trainer crops or pads, never stretches); a .txt file "
                   "beside a picture is its caption. Unreadable files are all named in one error.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("TI_IMAGES", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "preview", "captions")
    OUTPUT_TOOLTIPS = ("The pictures at full size with captions, for TITrainEmbedding.",
                       "Centre squares of the pictures, to look at (PreviewImage).",
                       "The captions, one line per picture.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": ("STRING", {"default": DEMO_IMAGES, "tooltip": "A folder in ComfyUI's input directory (its "
                                  f"name, or its absolute path). '{DEMO_IMAGES}' is drawn for you (4 pictures of a "
                                  "purple "
                                  "striped star, each captioned with its background)."}),
            "preview_size": ("INT", {"default": 256, "min": 64, "max": 2048, "step": 8,
                                     "tooltip": "Side of the square preview images (the training size is set on "
                                                "TITrainEmbedding)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder, preview_size=256):
        try:
            return folder_fingerprint(images_folder(folder))
        except (OSError, ValueError):
            return float("nan")  # run, so the node reports the error itself

    def load(self, folder, preview_size):
        from ..ti_core.data import load_images, square_crop
        from .convert import pil_to_image

        images, notes = load_images(images_folder(folder))
        for note in notes:  # also in the server's log, for runs queued through the API
            logging.getLogger("textual_inversion").warning(f"TILoadImages: {note}")
        preview = pil_to_image([square_crop(i.rgb, preview_size, "center") for i in images])
        captions = "\n".join(i.caption for i in images)
        return {"ui": {"text": [describe_images(images), *notes]}, "result": (images, preview, captions)}


def describe_images(images, most: int = 8) -> str:
    """What was loaded, for the node's panel: count, captions, and each picture's size (the first `most`)."""
    captioned = sum(1 for i in images if i.caption)
    lines = [f"{len(images)} picture(s), {captioned} with a caption:"]
    lines += [f"  {i.path.name}  {i.rgb.size[0]}x{i.rgb.size[1]}" for i in images[:most]]
    if len(images) > most:
        lines.append(f"  and {len(images) - most} more")
    return "\n".join(lines)


class TISquareCrop:
    DESCRIPTION = ("Make square images without stretching: crop the centre, a random square, the square around a "
                   "focus point, or pad the whole picture onto a square (edges extended or blurred).")
    CATEGORY = CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("size x size images.",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..ti_core.data import CROP_MODES, PAD_FILLS

        return {"required": {
            "image": ("IMAGE", {"tooltip": "Images of any size."}),
            "size": ("INT", {"default": 512, "min": 8, "max": 8192, "step": 8, "tooltip": "Side of the square."}),
            "mode": (list(CROP_MODES), {"default": "center", "tooltip": "center, random (from the seed), focus "
                                                                        "(around focus_x/focus_y) or pad (no crop)."}),
            "focus_x": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Focus point, 0 = left edge, 1 = right edge (mode focus)."}),
            "focus_y": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Focus point, 0 = top edge, 1 = bottom edge (mode focus)."}),
            "fill": (list(PAD_FILLS), {"default": "edge", "tooltip": "How pad mode fills the sides: extend the "
                                                                     "edge pixels, or a blurred copy."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the random crops (mode random)."}),
        }}

    def crop(self, image, size, mode, focus_x, focus_y, fill, seed):
        import random

        from ..ti_core.data import square_crop
        from .convert import image_to_pil, pil_to_image

        rng = random.Random(seed)
        squares = [square_crop(img, size, mode, rng=rng, focus=(focus_x, focus_y), fill=fill)
                   for img in image_to_pil(image)]
        return (pil_to_image(squares),)
