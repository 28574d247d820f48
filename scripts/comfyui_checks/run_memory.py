"""Peak RSS of ComfyUI while a graph trains (and samples), after its loaders ran: the loaders' outputs are cached,
the peak is reset (/proc/PID/clear_refs = 5), then the whole graph is queued."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drive import CKPT, ROOT, Server, native_graph, ok, old_way_graph, reference_graph  # noqa

LOAD_CKPT = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
LOAD_TI = {"class_type": "TILoadModel", "inputs": {"model_name": CKPT, "dtype": "fp32"}}


def sink(src):
    return {"class_type": "TIProbeSink", "inputs": {"value": src}}


cases = {
    "native": ({"1": LOAD_CKPT, "90": sink(["1", 0]), "91": sink(["1", 1]), "92": sink(["1", 2])},
               native_graph("memnat")),
    "training_alone": ({"1": LOAD_TI, "90": sink(["1", 0])}, reference_graph("memref")),
    "old_way": ({"1": LOAD_CKPT, "12": LOAD_TI, "90": sink(["1", 0]), "91": sink(["1", 1]), "92": sink(["1", 2]),
                 "93": sink(["12", 0])}, old_way_graph("memold")),
}
res = {}
for tag in sys.argv[1:] or list(cases):
    warm, graph = cases[tag]
    s = Server("mem_" + tag)
    try:
        ok(s.run(warm))
        after_load, load_peak = s.rss_now_mb(), s.rss_peak_mb()
        open(f"/proc/{s.proc.pid}/clear_refs", "w").write("5")
        h = ok(s.run(graph))
        res[tag] = {"rss_after_load_mb": round(after_load), "peak_while_loading_mb": round(load_peak),
                    "peak_while_training_mb": round(s.rss_peak_mb()), "seconds": round(h["seconds"], 1)}
    finally:
        s.stop()
    print(tag, res[tag], flush=True)
json.dump(res, open(f"{ROOT}/memory.json", "w"), indent=1)
