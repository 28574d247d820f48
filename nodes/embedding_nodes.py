"""Load embeddings of any shared format from models/embeddings, and save them in the format a tool needs."""

from __future__ import annotations

import json

from . import comfy_adapter as comfy

CATEGORY = "textual_inversion"
SAVE_FORMATS = {"safetensors": ".safetensors", "a1111-pt": ".pt", "diffusers": ".bin"}
STATE_SUFFIX = ".state.safetensors"  # the trainer's resume states live beside the embeddings; they are not ones


def embedding_choices() -> list[str]:
    from ..ti_core.embeddings import EXTENSIONS

    return [n for n in comfy.list_files("embeddings", EXTENSIONS) if not n.endswith(STATE_SUFFIX)]


def embedding_info(path) -> dict:
    """ti_core's inspect report of one embedding file (format, vectors, widths, norms, metadata)."""
    from ..ti_core.embeddings import load_embedding
    from ..ti_core.info import describe_embedding

    return {"file": path.name, **describe_embedding(load_embedding(path))}


class TILoadEmbedding:
    DESCRIPTION = ("Load an embedding from models/embeddings in any format people share (safetensors, A1111 .pt "
                   "and PNG/WebP, diffusers, OneTrainer, kohya, ...), detected from the content. The node shows "
                   "its format, vector count, widths and metadata.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("TI_EMBEDDING", "STRING")
    RETURN_NAMES = ("embedding", "info")
    OUTPUT_TOOLTIPS = ("The embedding; its prompt word is the file name without extension.",
                       "The embedding's inspect report as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"embedding_name": (embedding_choices(), {
            "tooltip": "A file in models/embeddings. Pickles are read safely (tensors only, nothing runs)."})}}

    @classmethod
    def IS_CHANGED(cls, embedding_name):
        """The file's sha256: a word retrained under the same name is read (and encoded) again, never served from
        ComfyUI's cache."""
        import hashlib

        try:
            path = comfy.find_file("embeddings", embedding_name)
            return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else float("nan")
        except (OSError, ValueError):
            return float("nan")  # run, so the node reports the error itself

    def load(self, embedding_name):
        from ..ti_core.embeddings import load_embedding, name_from_path
        from ..ti_core.errors import EmbeddingError

        path = comfy.find_file("embeddings", embedding_name)
        if path is None:
            raise EmbeddingError(f"{embedding_name} is not in models/embeddings (press R to refresh the list).")
        embedding = load_embedding(path, name=name_from_path(path))
        info = json.dumps(embedding_info(path), indent=1)
        return {"ui": {"text": [info]}, "result": (embedding, info)}


class TISaveEmbedding:
    DESCRIPTION = ("Save an embedding to models/embeddings as safetensors (ComfyUI, A1111, kohya), an A1111 .pt, "
                   "or a diffusers learned_embeds .bin. An existing file is never replaced: that is an error.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "embedding": ("TI_EMBEDDING", {"tooltip": "The embedding to save."}),
            "name": ("STRING", {"default": "my-embedding", "tooltip": "File name without extension; also the "
                                                                      "prompt word (`embedding:name`)."}),
            "format": (list(SAVE_FORMATS), {"default": "safetensors", "tooltip": "safetensors: every tool; "
                       "a1111-pt: A1111's .pt (SD1/SD2 only); diffusers: learned_embeds .bin (SD1/SD2 only)."}),
        }}

    def save(self, embedding, name, format):
        import dataclasses

        from ..ti_core.embeddings import check_name, save_embedding
        from .safe_paths import resolve_inside

        check_name(name.strip())  # says what is wrong with the name, before it becomes a path
        path = resolve_inside(comfy.folder_paths_for("embeddings")[0], name.strip() + SAVE_FORMATS[format])
        written = save_embedding(dataclasses.replace(embedding, name=name.strip()), path, format=format)
        return {"ui": {"text": [f"saved {written.name}", f"in {written.parent}"]}}  # the name first: paths are long
