"""Measurement probes for the TI pack checks (not part of the project)."""
import json
import os

import torch


class TIProbeCompare:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "ti_conditioning": ("TI_CONDITIONING",),
                             "label": ("STRING", {"default": "x"})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "probe"

    def run(self, conditioning, ti_conditioning, label):
        a = conditioning[0][0].float().cpu()
        b = ti_conditioning.conditioning.embeds.float().cpu()
        n = min(a.shape[1], b.shape[1])
        diff = (a[:, :n] - b[:, :n]).abs().max().item()
        out = {"label": label, "shape_comfy": list(a.shape), "shape_ti": list(b.shape), "max_abs_diff": diff}
        with open(os.path.join(os.environ.get("PROBE_OUT", "."), f"compare_{label}.json"), "w") as f:
            json.dump(out, f)
        return {"ui": {"text": [json.dumps(out)]}}


class TIProbeConditioningSave:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "label": ("STRING", {"default": "x"})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "probe"

    def run(self, conditioning, label):
        torch.save(conditioning[0][0].float().cpu().clone(),
                   os.path.join(os.environ.get("PROBE_OUT", "."), f"cond_{label}.pt"))
        return {"ui": {"text": [label]}}


NODE_CLASS_MAPPINGS = {"TIProbeCompare": TIProbeCompare, "TIProbeConditioningSave": TIProbeConditioningSave}


class TIProbeSink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "probe"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    def run(self, value):
        return {"ui": {"text": [type(value).__name__]}}


NODE_CLASS_MAPPINGS["TIProbeSink"] = TIProbeSink
