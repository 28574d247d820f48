"""Write the example workflows: the API-format graphs below are the one source; the UI-format files are made
from them and the nodes' INPUT_TYPES (widget order), so the two can never disagree.

    python -m workflows.build_workflows      # from the repository root; rewrites workflows/*.json and api/*.json

ComfyUI's Load button and template browser open the UI files (workflows/*.json, also reached as
example_workflows/); the tests run the API twins (workflows/api/*.json) through the node classes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from ti_core.toyworld.model import BUILTIN_NAME

HERE = Path(__file__).resolve().parent

# Room for the panels our JS adds (js/*.js, + margin), so nodes do not overlap; the trainer's also for the loss
# chart ComfyUI shows on it after a run, which would otherwise grow the node over the one below.
PANEL_HEIGHT = {"TITrainEmbedding": 290, "TILoadEmbedding": 130, "TILoadImages": 140}

# Core ComfyUI nodes the examples use: id -> (input name -> type, widget names in order, outputs).
CORE_NODES = {"PreviewImage": ({"images": "IMAGE"}, [], [])}

LOAD = {"class_type": "TILoadModel", "inputs": {"model_name": BUILTIN_NAME, "dtype": "fp32"}}
IMAGES = {"class_type": "TILoadImages", "inputs": {"folder": "ti-demo-images", "preview_size": 128}}


def train_inputs(name: str) -> dict:
    """The built-in model learns the demo's purple striped star (a pair it never saw) in about a minute on a CPU:
    one vector from "star", the "captions" templates ("a photo of a [name] on a blue background") so the word
    takes the object and not the backgrounds, centre crops (the star sits in the central square), 32 px."""
    return {"model": ["1", 0], "images": ["2", 0], "name": name, "init_text": "star", "vectors": 1,
            "steps": 300, "learning_rate": "5e-3", "batch_size": 8, "grad_accum": 1, "template": "captions",
            "crop": "center", "resolution": 0, "save_every": 100, "preview_every": 50, "train_seed": 0,
            "resume": False, "precision": "model", "validate_every": 25, "early_stop": 0}


def prompt(text: str, embedding=None) -> dict:
    inputs = {"model": ["1", 0], "text": text, **({"embedding": embedding} if embedding else {})}
    return {"class_type": "TIEncodePrompt", "inputs": inputs}


def sample_inputs(positive: str, negative: str) -> dict:
    """DDIM, 25 steps, cfg 5: what the built-in model was measured with. Size 0 = the model's own (32 px here),
    so the graph still fits when another checkpoint is picked."""
    return {"model": ["1", 0], "positive": [positive, 0], "negative": [negative, 0], "sampler": "ddim",
            "steps": 25, "cfg": 5.0, "seed": 0, "width": 0, "height": 0, "batch": 4}


# Prompts name a background: with none, the toy model tends to paint the background in the star's own purple.
WORKFLOWS = {
    "ti_train_embedding": {
        "1": LOAD, "2": IMAGES,
        "3": {"class_type": "TITrainEmbedding", "inputs": train_inputs("purple-star")},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    },
    "ti_generate_with_embedding": {
        "1": LOAD,
        "2": {"class_type": "TILoadEmbedding", "inputs": {"embedding_name": "purple-star.safetensors"}},
        "3": prompt("a photo of a embedding:purple-star on a green background", ["2", 0]),
        "4": prompt(""),
        "5": {"class_type": "TISample", "inputs": sample_inputs("3", "4")},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    },
    "ti_train_then_generate": {
        "1": LOAD, "2": IMAGES,
        # its own name: a second run of a name is refused (never overwritten), so both examples can be run
        "3": {"class_type": "TITrainEmbedding", "inputs": train_inputs("my-star")},
        "4": prompt("a embedding:my-star on a yellow background", ["3", 0]),
        "5": prompt(""),
        "6": {"class_type": "TISample", "inputs": sample_inputs("4", "5")},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    },
}


def node_signature(class_type: str, mappings: dict):
    """(socket inputs name -> type, widget names in order (with the extra seed-control slot), outputs)."""
    if class_type in CORE_NODES:
        return CORE_NODES[class_type]
    cls = mappings[class_type]
    spec = cls.INPUT_TYPES()
    sockets, widgets = {}, []
    for section in ("required", "optional"):
        for name, (kind, *opts) in spec.get(section, {}).items():
            options = opts[0] if opts else {}
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                widgets.append(name)
                # the front end adds the control to every input named seed/noise_seed, asked for or not
                if options.get("control_after_generate") or name in ("seed", "noise_seed"):
                    widgets.append(None)  # the "fixed / increment / randomize" control's value
            else:
                sockets[name] = kind
    outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
    return sockets, widgets, outputs


def to_ui(api: dict, mappings: dict, name: str = "workflow") -> dict:
    """The UI ("workflow", version 0.4) form of an API graph: nodes laid out in columns by dependency depth."""
    depth = {}

    def depth_of(node_id):
        if node_id not in depth:
            links = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((depth_of(src) for src in links), default=-1)
        return depth[node_id]

    links, nodes, rows = [], [], {}
    out_links, link_for = {}, {}
    for node_id in sorted(api, key=int):
        for name, value in api[node_id]["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                sockets = node_signature(api[node_id]["class_type"], mappings)[0]
                links.append([link_id, int(value[0]), value[1], int(node_id), None, sockets[name]])
                link_for[(node_id, name)] = links[-1]
                out_links.setdefault((value[0], value[1]), []).append(link_id)
    for order, node_id in enumerate(sorted(api, key=lambda n: (depth_of(n), int(n)))):
        node = api[node_id]
        sockets, widgets, outputs = node_signature(node["class_type"], mappings)
        inputs = []
        for slot, (name, kind) in enumerate(sockets.items()):
            link = link_for.get((node_id, name))
            if link is not None:
                link[4] = slot  # the destination slot: the input's position among the node's sockets
            inputs.append({"name": name, "type": kind, "link": link[0] if link else None})
        values = ["fixed" if w is None else node["inputs"][w] for w in widgets]
        column = depth_of(node_id)
        row = rows.get(column, 0)
        height = 80 + 26 * len(widgets) + 22 * len(sockets) + PANEL_HEIGHT.get(node["class_type"], 0)
        rows[column] = row + height + 60
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [60 + 400 * column, 60 + row],
            "size": [340, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": out_links.get((node_id, i)), "slot_index": i}
                        for i, (name, kind) in enumerate(outputs)],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "textual_inversion/" + name)), "revision": 0,
            "last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}


def render(mappings: dict) -> dict:
    """file path -> JSON text of every example workflow."""
    files = {}
    for name, api in WORKFLOWS.items():
        files[HERE / "api" / f"{name}.json"] = json.dumps(api, indent=1) + "\n"
        files[HERE / f"{name}.json"] = json.dumps(to_ui(api, mappings, name), indent=1) + "\n"
    return files


def main() -> None:
    import importlib.util
    import sys

    root = HERE.parent
    spec = importlib.util.spec_from_file_location("ti_pack", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["ti_pack"] = pack
    spec.loader.exec_module(pack)
    for path, text in render(pack.NODE_CLASS_MAPPINGS).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(root)}")


if __name__ == "__main__":
    main()
