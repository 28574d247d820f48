"""The pack's ComfyUI nodes: thin V1 wrappers over ti_core, registered here.

The node classes arrive with the nodes issue; until then the pack registers none, so ComfyUI loads it
cleanly and shows no nodes.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
