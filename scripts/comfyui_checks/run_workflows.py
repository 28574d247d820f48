"""Run every API twin in workflows/api/ in a real ComfyUI, in order (the generate graphs use the words the train
graphs just made), shortened to check that each runs: the toy trainers 100 steps, the native ones 3 steps at 64 px
with 2 sampling steps at 64 px on the random SD1.5 file. Prints each graph's status, seconds and outputs."""
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drive import CKPT, Server, ok  # noqa: E402

WF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../workflows/api")
ORDER = ["ti_train_embedding", "ti_train_then_generate", "ti_generate_with_embedding",
         "ti_native_train_then_generate", "ti_native_generate_with_embedding"]
suffix = str(int(time.time()))
words = {"purple-star": f"purple-star-{suffix}", "my-star": f"my-star-{suffix}", "my-concept": f"my-concept-{suffix}"}


def shortened(graph: dict) -> dict:
    graph = copy.deepcopy(graph)
    for node in graph.values():
        i, kind = node["inputs"], node["class_type"]
        for key in ("name", "text", "embedding_name", "filename_prefix"):
            if isinstance(i.get(key), str):
                for old, new in words.items():
                    i[key] = i[key].replace(old, new) if not i[key].startswith(new) else i[key]
        if kind == "CheckpointLoaderSimple":
            i["ckpt_name"] = CKPT
        if kind == "TITrainEmbedding":
            i["steps"] = 100
        if kind == "TITrainEmbeddingNative":
            i.update(steps=3, resolution=64, save_every=0)
        if kind == "EmptyLatentImage":
            i.update(width=64, height=64)
        if kind == "KSampler":
            i["steps"] = 2
    return graph


server = Server("workflows")
try:
    for name in ORDER:
        graph = shortened(json.load(open(f"{WF}/{name}.json")))
        hist = ok(server.run(graph))
        outputs = {k: sorted(v) for k, v in hist["outputs"].items()}
        print(f"{name}: success in {hist['seconds']:.0f} s; outputs {outputs}", flush=True)
finally:
    server.stop()
