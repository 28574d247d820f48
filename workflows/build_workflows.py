"""Write the example workflows: the API-format graphs below are the one source; the UI-format files are made
from them and the nodes' INPUT_TYPES (widget order), so the two can never disagree.

    python -m workflows.build_workflows      # from the repository root; rewrites workflows/*.json, *.jpg, api/*.json

ComfyUI's Load button and template browser open the UI files (workflows/*.json, also reached as
example_workflows/); the template browser shows <name>.jpg as each card's picture. The tests run the API twins
(workflows/api/*.json) through the node classes. Each UI file also holds a Note node (a front-end-only node, so
not in its API twin) saying what to pick and what to expect. The UI files store no view offset (`extra.ds`): the
front end then fits the whole graph into the window when it opens one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from ti_core.toyworld.model import BUILTIN_NAME

HERE = Path(__file__).resolve().parent

# Room for the panels our JS adds (js/*.js, + margin), so nodes do not overlap. The trainer's panel holds its chart,
# status lines and the sample preview in a fixed height; it shows no node image (which would grow the node).
TRAINER_ROOM = 430
# ComfyUI's bundled front end (1.27) widens our nodes to about 430 px when it opens a workflow, whatever the file
# says: nodes this wide, in columns this far apart, do not overlap in either front end.
NODE_WIDTH, COLUMN = 440, 500
PANEL_HEIGHT = {"TITrainEmbedding": TRAINER_ROOM, "TITrainEmbeddingNative": TRAINER_ROOM, "TILoadEmbedding": 130,
                "TILoadImages": 140, "Note": 300, "CLIPTextEncode": 60}

# Core ComfyUI nodes the examples use: id -> (input name -> type, widget names in order, outputs), as in
# ComfyUI's nodes.py (0.3.64); None is the seed's "control after generate" value.
CORE_NODES = {
    "PreviewImage": ({"images": "IMAGE"}, [], []),
    "Note": ({}, ["text"], []),
    "CheckpointLoaderSimple": ({}, ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ({"clip": "CLIP"}, ["text"], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ({}, ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "KSampler": ({"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent_image": "LATENT"},
                 ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"], [("LATENT", "LATENT")]),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, [], [("IMAGE", "IMAGE")]),
    "SaveImage": ({"images": "IMAGE"}, ["filename_prefix"], []),
    "ImageScaleBy": ({"image": "IMAGE"}, ["upscale_method", "scale_by"], [("IMAGE", "IMAGE")]),
}
FRONT_END_ONLY = ("Note",)  # nodes the front end keeps out of the API prompt
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # a placeholder: the user picks their own checkpoint

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


# The toy model draws 32 px pictures; shown at that size they are a thin strip on the node. Square pixels, 8x.
def enlarged(image: list) -> dict:
    return {"class_type": "ImageScaleBy", "inputs": {"image": image, "upscale_method": "nearest-exact",
                                                     "scale_by": 8.0}}


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
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "7": enlarged(["5", 0]),
    },
    "ti_train_then_generate": {
        "1": LOAD, "2": IMAGES,
        # its own name: a second run of a name is refused (never overwritten), so both examples can be run
        "3": {"class_type": "TITrainEmbedding", "inputs": train_inputs("my-star")},
        "4": prompt("a embedding:my-star on a yellow background", ["3", 0]),
        "5": prompt(""),
        "6": {"class_type": "TISample", "inputs": sample_inputs("4", "5")},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
        "9": enlarged(["6", 0]),
    },
}


def note(text: str) -> dict:
    return {"class_type": "Note", "inputs": {"text": text}}


def native_generation(first: int, clip: list, positive: str, model: list, vae: list, prefix: str) -> dict:
    """CLIPTextEncode (positive, negative) -> KSampler -> VAEDecode -> SaveImage, ComfyUI's own text-to-image,
    with node ids from `first` on."""
    ids = [str(first + i) for i in range(6)]
    return {
        ids[0]: {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": clip}},
        ids[1]: {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}},
        ids[2]: {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        ids[3]: {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 0, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": [ids[0], 0], "negative": [ids[1], 0], "latent_image": [ids[2], 0], "denoise": 1.0}},
        ids[4]: {"class_type": "VAEDecode", "inputs": {"samples": [ids[3], 0], "vae": vae}},
        ids[5]: {"class_type": "SaveImage", "inputs": {"images": [ids[4], 0], "filename_prefix": prefix}},
    }


NATIVE_TRAIN = {**train_inputs("my-concept"), "batch_size": 1, "preview_every": 0, "validate_every": 0}
del NATIVE_TRAIN["model"]

WORKFLOWS["ti_native_train_then_generate"] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    "2": IMAGES,
    "3": {"class_type": "TITrainEmbeddingNative",
          "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], **NATIVE_TRAIN}},
    **native_generation(4, ["3", 2], "a photo of embedding:my-concept on a table", ["1", 0], ["1", 2],
                        "ti_native/my-concept"),
    "10": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    "11": note(
        "Train a word on YOUR checkpoint, then draw it with KSampler, in one queue.\n\n"
        "1. Load Checkpoint: pick your SD1.x, SD2.x or SDXL checkpoint (a LoRA loader may sit between it and the "
        "trainer: the word is then trained through the LoRA).\n"
        "2. TI Load Training Images: the name of a folder in ComfyUI's input/ holding 3-10 pictures of your "
        "concept ('ti-demo-images' is a purple star drawn for you, to try the graph).\n"
        "3. TI Train Embedding (graph's model): set `name` (the new word) and `init_text` (a word for what it "
        "is). It trains through the very weights KSampler uses, with no second copy in memory.\n"
        "4. Queue. Training runs first (its CLIP output carries the word), then CLIPTextEncode turns "
        "'embedding:my-concept' into the trained vectors and KSampler draws. SD1.5 at 512 px: minutes per "
        "100 steps on a GPU, far longer on a CPU. For SDXL set 1024 x 1024 on Empty Latent Image.\n\n"
        "The word is saved to models/embeddings/my-concept.safetensors; a second run with the same name is "
        "refused (switch `resume` on, or pick a new name)."),
}

WORKFLOWS["ti_native_generate_with_embedding"] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    "2": {"class_type": "TILoadEmbedding", "inputs": {"embedding_name": "my-concept.safetensors"}},
    "3": {"class_type": "TIApplyEmbedding", "inputs": {"clip": ["1", 1], "embedding": ["2", 0]}},
    **native_generation(4, ["3", 0], "a photo of embedding:my-concept on a table", ["1", 0], ["1", 2],
                        "ti_native/generated"),
    "10": note(
        "Use a trained word in ComfyUI's standard text-to-image graph.\n\n"
        "1. Load Checkpoint: the checkpoint the word was trained for (same family: SD1.x, SD2.x or SDXL).\n"
        "2. TI Load Embedding: the word's file in models/embeddings (any format: safetensors, A1111 .pt, "
        "diffusers .bin, ...).\n"
        "3. TI Apply Embedding to CLIP hands the word to CLIPTextEncode: write 'embedding:<file name without "
        "extension>' in the prompt. A file retrained under the same name is read and encoded again.\n"
        "4. Queue: KSampler draws 512 x 512 (use 1024 x 1024 for SDXL)."),
}

TOY_NOTES = {
    "ti_train_embedding": "Offline demo: the built-in toy model (32 px shapes) learns 'purple-star' from the "
                          "pictures TI Load Training Images draws for you. Queue: about a minute on a CPU; the "
                          "loss chart and previews show on the trainer. For your own checkpoint use "
                          "ti_native_train_then_generate.",
    "ti_generate_with_embedding": "Offline demo: draws 'purple-star' (run ti_train_embedding first) with the "
                                  "built-in toy model: 4 pictures of 32 x 32 px, shown 8x larger (Upscale Image "
                                  "By). With your own checkpoint use ti_native_generate_with_embedding "
                                  "(ComfyUI's KSampler).",
    "ti_train_then_generate": "Offline demo in one queue: the built-in toy model learns 'my-star', then draws it "
                              "on a yellow background (4 pictures of 32 x 32 px, shown 8x larger by Upscale "
                              "Image By), about a minute on a CPU.",
}
for _name, _text in TOY_NOTES.items():
    WORKFLOWS[_name][str(max(int(n) for n in WORKFLOWS[_name]) + 1)] = note(_text)


def api_twin(graph: dict) -> dict:
    """What the front end queues for a UI graph: every node but the front-end-only ones."""
    return {k: v for k, v in graph.items() if v["class_type"] not in FRONT_END_ONLY}


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
    # notes first, at the top of the first column, where the eye starts
    for order, node_id in enumerate(sorted(api, key=lambda n: (depth_of(n), api[n]["class_type"] != "Note",
                                                               int(n)))):
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
            "id": int(node_id), "type": node["class_type"], "pos": [60 + COLUMN * column, 60 + row],
            "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": out_links.get((node_id, i)), "slot_index": i}
                        for i, (name, kind) in enumerate(outputs)],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "textual_inversion/" + name)), "revision": 0,
            "last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


# Colours of the thumbnails: title bars by who made the node, links by type (close to the front end's own).
TITLE_COLOURS = {"TI": (120, 70, 170), "Note": (140, 110, 50), "core": (70, 90, 110)}
LINK_COLOURS = {"MODEL": (180, 160, 255), "CLIP": (255, 210, 60), "VAE": (255, 100, 100),
                "CONDITIONING": (255, 160, 60), "LATENT": (255, 150, 200), "IMAGE": (100, 180, 240)}


def thumbnail(ui: dict, titles: dict, size=(512, 384)):
    """The template browser's card picture for a UI workflow: its nodes where they sit, titled, and its links,
    above the first sentence of its Note."""
    from PIL import Image, ImageDraw, ImageFont

    nodes = {n["id"]: n for n in ui["nodes"]}
    left = min(n["pos"][0] for n in nodes.values())
    top = min(n["pos"][1] for n in nodes.values()) - 30
    right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    bottom = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    margin, caption_height = 12, 64
    scale = min((size[0] - 2 * margin) / (right - left), (size[1] - 2 * margin - caption_height) / (bottom - top))

    def at(x, y):
        return margin + (x - left) * scale, margin + (y - top) * scale

    image = Image.new("RGB", size, (32, 32, 36))
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(9, round(15 * scale / 0.6)))
    except TypeError:  # Pillow < 10.1: one fixed bitmap font
        font = ImageFont.load_default()
    for _, src, src_slot, dst, dst_slot, kind in ui["links"]:
        a, b = nodes[src], nodes[dst]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 20 + 22 * src_slot)
        end = at(b["pos"][0], b["pos"][1] + 20 + 22 * dst_slot)
        middle = (start[0] + end[0]) / 2
        draw.line([start, (middle, start[1]), (middle, end[1]), end], fill=LINK_COLOURS.get(kind, (200, 200, 200)),
                  width=2)
    for node in nodes.values():
        x0, y0 = at(node["pos"][0], node["pos"][1] - 30)
        x1, y1 = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        kind = "TI" if node["type"].startswith("TI") else "Note" if node["type"] == "Note" else "core"
        draw.rounded_rectangle([x0, y0, x1, y1], radius=4, fill=(53, 53, 58), outline=(90, 90, 96))
        draw.rounded_rectangle([x0, y0, x1, y0 + 30 * scale], radius=4, fill=TITLE_COLOURS[kind])
        title = titles.get(node["type"], node["type"])
        if draw.textlength(title, font=font) > x1 - x0 - 8:  # cut to the box, with an ellipsis
            while len(title) > 1 and draw.textlength(title + "\u2026", font=font) > x1 - x0 - 8:
                title = title[:-1]
            title += "\u2026"
        draw.text((x0 + 4, y0 + 3 * scale), title, fill=(235, 235, 235), font=font)
    notes = [n["widgets_values"][0] for n in nodes.values() if n["type"] == "Note"]
    if notes:
        import textwrap

        try:
            big = ImageFont.load_default(size=17)
        except TypeError:
            big = font
        caption = textwrap.wrap(notes[0].split("\n")[0], 52)[:2]
        draw.multiline_text((margin, size[1] - caption_height + 6), "\n".join(caption), fill=(240, 240, 240),
                            font=big, spacing=6)
    return image


def render(mappings: dict) -> dict:
    """file path -> JSON text of every example workflow."""
    files = {}
    for name, api in WORKFLOWS.items():
        files[HERE / "api" / f"{name}.json"] = json.dumps(api_twin(api), indent=1) + "\n"
        files[HERE / f"{name}.json"] = json.dumps(to_ui(api, mappings, name), indent=1) + "\n"
    return files


def thumbnails(mappings: dict, titles: dict) -> dict:
    """file path -> JPEG bytes of every workflow's template card picture (<name>.jpg beside <name>.json)."""
    import io

    out = {}
    for name, api in WORKFLOWS.items():
        buffer = io.BytesIO()
        thumbnail(to_ui(api, mappings, name), titles).save(buffer, "JPEG", quality=85)
        out[HERE / f"{name}.jpg"] = buffer.getvalue()
    return out


CORE_TITLES = {"ImageScaleBy": "Upscale Image By",
               "CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
               "EmptyLatentImage": "Empty Latent Image", "VAEDecode": "VAE Decode", "SaveImage": "Save Image",
               "PreviewImage": "Preview Image", "KSampler": "KSampler", "Note": "Note"}


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
    titles = {**CORE_TITLES, **pack.NODE_DISPLAY_NAME_MAPPINGS}
    for path, data in thumbnails(pack.NODE_CLASS_MAPPINGS, titles).items():
        path.write_bytes(data)
        print(f"wrote {path.relative_to(root)}")


if __name__ == "__main__":
    main()
