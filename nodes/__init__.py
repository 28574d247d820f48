"""The pack's ComfyUI nodes: thin V1 wrappers over ti_core, registered in one table.

Ids are permanent (saved workflows store them): never rename one; add a new id instead.
"""

from __future__ import annotations

import logging

from .embedding_nodes import TILoadEmbedding, TISaveEmbedding
from .image_nodes import TILoadImages, TISquareCrop
from .model_nodes import TIEncodePrompt, TILoadModel, TISample
from .native_nodes import TIApplyEmbedding, TITrainEmbeddingNative
from .train_nodes import TITrainEmbedding

NODES = {
    "TILoadModel": (TILoadModel, "TI Load Model"),
    "TIEncodePrompt": (TIEncodePrompt, "TI Encode Prompt"),
    "TISample": (TISample, "TI Sample"),
    "TILoadImages": (TILoadImages, "TI Load Training Images"),
    "TISquareCrop": (TISquareCrop, "TI Square Crop"),
    "TITrainEmbedding": (TITrainEmbedding, "TI Train Embedding"),
    "TILoadEmbedding": (TILoadEmbedding, "TI Load Embedding"),
    "TISaveEmbedding": (TISaveEmbedding, "TI Save Embedding"),
    "TITrainEmbeddingNative": (TITrainEmbeddingNative, "TI Train Embedding (graph's model)"),
    "TIApplyEmbedding": (TIApplyEmbedding, "TI Apply Embedding to CLIP"),
}

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODES.items()}


def _register_routes() -> None:
    from . import comfy_adapter, routes

    server = comfy_adapter.prompt_server()
    if server is None:
        return
    try:
        routes.register(server)
    except Exception:  # the nodes work without the routes; the pack must still load
        logging.getLogger("textual_inversion").warning("textual_inversion: routes not added", exc_info=True)


_register_routes()
