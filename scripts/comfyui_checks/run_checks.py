import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drive import (BASE, ROOT, Server, compare_graph, last_layer_graph, native_graph, ok,  # noqa
                   old_way_graph, reference_graph)

which = sys.argv[1:] or ["native", "ref", "old", "checks"]
res = {}
emb = f"{BASE}/models/embeddings"


def vec(name):
    return load_file(f"{emb}/{name}.safetensors")["emb_params"]


def server_run(tag, graphs):
    s = Server(tag)
    try:
        base = s.rss_now_mb()
        times = [ok(s.run(g))["seconds"] for g in graphs]
        res[tag] = {"idle_rss_mb": round(base), "peak_rss_mb": round(s.rss_peak_mb()),
                    "seconds": [round(t, 1) for t in times]}
    finally:
        s.stop()
    print(tag, res[tag], flush=True)


if "native" in which:
    server_run("native", [native_graph("nat")])
if "ref" in which:
    server_run("ref", [reference_graph("ref")])
    a, b = vec("nat"), vec("ref")
    res["bit_identical_nat_vs_ref"] = bool(torch.equal(a, b))
    res["max_abs_diff_nat_vs_ref"] = (a - b).abs().max().item()
    print("bit identical:", res["bit_identical_nat_vs_ref"], res["max_abs_diff_nat_vs_ref"], flush=True)
if "old" in which:
    server_run("old", [old_way_graph("old")])
if "checks" in which:
    text = "a photo of embedding:nat on a table"
    lora = "random-lora.safetensors"
    server_run("checks", [native_graph("lora", lora=lora), compare_graph("nat", text, lora=lora),
                          compare_graph("nat", text, last_layer=-1),
                          native_graph("nat2"), native_graph("nat2", steps=4, resume=True),
                          compare_graph("nat2", "a photo of embedding:nat2 on a table"),
                          last_layer_graph("nat", text)])
    res["lora_changes_vectors"] = not torch.equal(vec("lora"), vec("nat"))
    res["lora_vs_plain_max_diff"] = (vec("lora") - vec("nat")).abs().max().item()
    for label in ("nat_llNone", "nat_ll-1", "nat2_llNone"):
        res["compare_" + label] = json.load(open(f"{ROOT}/compare_{label}.json"))
    labels = ("lora_applied", "lora_file", "plain_applied", "nat2_3", "nat2_4", "layer_applied_after",
              "layer_file", "layer_applied_before")
    c = {k: torch.load(f"{ROOT}/cond_{k}.pt") for k in labels}
    res["lora_clip_applied_vs_file_lookup_max_diff"] = (c["lora_applied"] - c["lora_file"]).abs().max().item()
    res["lora_clip_vs_plain_clip_max_diff"] = (c["lora_applied"] - c["plain_applied"]).abs().max().item()
    res["last_layer_-2_applied_vs_file_max_diff"] = (c["layer_applied_after"] - c["layer_file"]).abs().max().item()
    res["last_layer_-2_apply_before_vs_after_max_diff"] = (
        c["layer_applied_before"] - c["layer_applied_after"]).abs().max().item()
    res["retrained_cond_changed_max_diff"] = (c["nat2_4"] - c["nat2_3"]).abs().max().item()
    print(json.dumps(res, indent=1), flush=True)
json.dump(res, open(f"{ROOT}/results_{'_'.join(which)}.json", "w"), indent=1)
