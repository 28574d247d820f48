"""ComfyUI entry point of the Textual Inversion node pack (V1 API).

ComfyUI imports this file when the repository sits in `ComfyUI/custom_nodes/`. The nodes live in `nodes/`;
the library they wrap is `ti_core/`, which works without ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
